"""AppTest: the model picker (Run, Judge, Monitor), "Test connection" on the Run page, the deprecation radar
(Comparisons), and the Overview's deprecation banner and cost card."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_catalog import load_long
from test_cost_projection import TOKENS_CSV

from lib.data.golden import import_dataset

ROOT = Path(__file__).resolve().parent.parent


def _page(path: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=90).run()
    return at.switch_page(path).run()


def _golden(engine) -> None:
    import_dataset(engine, b'{"id": "a", "input": "2+2?"}\n{"id": "b", "input": "hi"}\n', "golden.jsonl", "golden")


def _names(at: AppTest, key: str) -> list[str]:
    """The model names a picker lists (its options are labels: name · provider · prices · ...)."""
    return [o.split(" · ")[0] for o in at.selectbox(key=key).options]


def _texts(at: AppTest) -> str:
    return "\n".join(e.value for e in [*at.caption, *at.warning, *at.error, *at.success, *at.markdown])


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "REVIEW_MODEL_OVERRIDES"):
        monkeypatch.delenv(name, raising=False)


def test_picking_from_the_list_fills_the_model_and_shows_prices_deprecation_and_the_missing_key(engine) -> None:
    _golden(engine)
    at = _page("pages/run.py")
    assert "gpt-4o-2024-08-06" in _names(at, "run_baseline_pick")  # newest models before any search
    at.text_input(key="run_baseline_search").set_value("gpt-4o-2024").run()
    assert all("gpt-4o-2024" in o for o in _names(at, "run_baseline_pick"))
    at.selectbox(key="run_baseline_pick").set_value("gpt-4o-2024-08-06").run()
    assert at.text_input(key="run_baseline_model").value == "gpt-4o-2024-08-06"
    text = _texts(at).replace("\\", "")
    assert "$2.50/1M" in text and "$10.00/1M" in text and "128,000 tokens" in text and "2027-01-14" in text
    assert "is deprecated on 2027-01-14" in text  # within 90 days of today
    assert "Key missing: set OPENAI_API_KEY" in text and "sk-" not in text


def test_the_candidate_list_suggests_newer_versions_once_the_baseline_is_named(engine) -> None:
    _golden(engine)
    at = _page("pages/run.py")
    at.text_input(key="run_baseline_model").set_value("gpt-4o-2024-08-06").run()
    options = _names(at, "run_candidate_pick")
    assert "gpt-4o-2024-11-20" in options and "gpt-4o-2024-05-13" not in options


def test_free_text_still_works_and_a_custom_model_is_unknown_not_free(engine) -> None:
    _golden(engine)
    at = _page("pages/run.py")
    at.text_input(key="run_baseline_model").set_value("openai/my-house-model").run()
    assert any("Not in the model map" in c.value for c in at.caption)


def test_a_missing_key_stops_the_run_before_any_request(engine, llm_server) -> None:
    _golden(engine)
    at = _page("pages/run.py")
    at.text_input(key="run_baseline_model").set_value("gpt-4o-mini")
    at.text_input(key="run_candidate_model").set_value("openai/local-small")
    at.text_input(key="run_candidate_api_base").set_value(llm_server.url).run()
    at.text_input(key="run_name").set_value("x").run()
    assert at.button(key="run_start").disabled
    assert any("baseline: key missing: set OPENAI\\_API\\_KEY" in e.value for e in at.error)


def _fill_local(at: AppTest, url: str) -> AppTest:
    for side, model in (("baseline", "openai/old-model"), ("candidate", "openai/new-model")):
        at.text_input(key=f"run_{side}_model").set_value(model)
        at.text_input(key=f"run_{side}_api_base").set_value(url)
    at.run()
    at.text_input(key="run_name").set_value("checked").run()
    return at


def test_test_connection_reports_each_side_and_a_failed_side_blocks_the_start(engine, llm_server) -> None:
    _golden(engine)
    llm_server.set_fingerprint("old-model", "fp_old")
    at = _fill_local(_page("pages/run.py"), llm_server.url)
    at.button(key="run_test_connection").click().run()
    assert not at.exception, at.exception
    successes = [s.value for s in at.success]
    assert len(successes) == 2 and "fp_old" in successes[0] and "old-model" in successes[0]
    assert llm_server.calls() == 2 and not at.button(key="run_start").disabled  # one tiny request per side

    llm_server.add_fault("401", model="new-model")
    at.button(key="run_test_connection").click().run()
    [error] = [e.value.replace("\\", "") for e in at.error]
    assert error.startswith("candidate:") and "missing or invalid (HTTP 401)" in error
    assert at.button(key="run_start").disabled  # the run is not started from the page

    llm_server.clear_faults()
    at.text_input(key="run_candidate_model").set_value("openai/newer-model").run()  # another config: untested
    assert not at.error and not at.button(key="run_start").disabled


def test_listing_the_models_an_api_base_serves(engine, llm_server) -> None:
    _golden(engine)
    llm_server.listed_models = ["served-a", "served-b"]
    at = _page("pages/run.py")
    at.text_input(key="run_baseline_api_base").set_value(llm_server.url).run()
    at.button(key="run_baseline_discover").click().run()
    assert _names(at, "run_baseline_pick")[:2] == ["openai/served-a", "openai/served-b"]
    at.selectbox(key="run_baseline_pick").set_value("openai/served-b").run()
    assert at.text_input(key="run_baseline_model").value == "openai/served-b"


def test_the_judge_and_monitor_pages_choose_models_with_the_picker(engine, tmp_path: Path) -> None:
    load_long(engine, tmp_path)
    at = _page("pages/judge.py")
    assert not at.exception, at.exception
    at.text_input(key="judge_search").set_value("gpt-4.1-mini").run()
    assert all("gpt-4.1-mini" in o for o in _names(at, "judge_pick"))
    at = _page("pages/monitor.py")
    at.text_input(key="monitor_new_model").set_value("gpt-4o-2024-08-06").run()
    assert any("./review monitor run --dataset" in c.value and "--model gpt-4o-2024-08-06" in c.value
               for c in at.code)


def test_comparisons_shows_the_radar_and_the_overview_banner_and_cost_card(engine, tmp_path: Path) -> None:
    load_long(engine, tmp_path, text=TOKENS_CSV)
    at = _page("pages/comparisons.py")
    [radar] = [d.value for d in at.dataframe if "days left" in d.value.columns]
    assert set(radar["model"]) == {"gpt-4o-2024-08-06", "gpt-4.1-2025-04-14"}
    assert radar["days left"].notna().all()
    at = _page("pages/overview.py")
    assert not at.exception, at.exception
    assert any("Deprecation within 90 days" in w.value and "gpt\\-4o\\-2024\\-08\\-06" in w.value for w in at.warning)
    assert any("in this comparison" in w.value for w in at.warning)
    [card] = [m for m in at.metric if m.label.startswith("Cost per 1,000 requests")]
    assert card.label == "Cost per 1,000 requests (n=3)" and card.value == "$0.858 → $0.873"
    at.number_input(key="catalog_requests_per_day").set_value(1000).run()
    # by hand: 0.858333 and 0.873333 per 1k x 1 x 30 days = $25.75 and $26.2
    assert any("$25.8 → $26.2" in c.value.replace("\\", "") for c in at.caption)


def test_the_overview_banner_names_only_this_comparisons_models(engine, tmp_path: Path) -> None:
    load_long(engine, tmp_path, text=TOKENS_CSV)  # gpt-4o-2024-08-06 retires within 90 days
    local = TOKENS_CSV.replace("gpt-4o-2024-08-06", "local-a").replace("gpt-4.1-2025-04-14", "local-b")
    load_long(engine, tmp_path, name="local", text=local, baseline="local-a", candidate="local-b")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=90)
    at.session_state["pending_active_comparison"] = "local"
    at = at.run().switch_page("pages/overview.py").run()
    assert not at.exception, at.exception
    assert not any("Deprecation" in w.value for w in at.warning)
    assert any("other model" in c.value and "retire" in c.value for c in at.caption)


def test_the_cost_card_says_unknown_when_a_price_is_missing(engine, tmp_path: Path) -> None:
    text = TOKENS_CSV.replace("gpt-4.1-2025-04-14", "openai/house-model")
    load_long(engine, tmp_path, text=text, candidate="openai/house-model")
    at = _page("pages/overview.py")
    assert any("unknown (no price for candidate" in i.value.replace("\\", "") for i in at.info)
    assert not [m for m in at.metric if m.label.startswith("Cost per 1,000")]
