"""AppTest: the Overview: the answer first, cards, the by-category table, review settings."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from lib.governance.decisions import DecisionRequest, decide
from lib.governance.owners import claim_system
from lib.governance.policy import create_policy
from lib.governance.signing import create_key
from tests.gov_helpers import make_comparison, pairs, tamper
from tests.page_helpers import APP, PASS, alone, load_wide_rows, metric_rows, plain


def _categories(engine) -> None:
    """math: 10 cases with an expected answer, 5 right -> wrong; chat: 10 cases without one."""
    rows = [(f"m{i}", f"What is {i}+{i}?", str(2 * i), str(2 * i) if i < 5 else "no idea", str(2 * i), "math")
            for i in range(10)]
    rows += [(f"c{i}", f"Say hi {i}", f"hello {i}", f"hi there {i}", "", "chat") for i in range(10)]
    load_wide_rows(engine, rows)


def _category_table(at: AppTest) -> pd.DataFrame:
    return next(df.value for df in at.dataframe if "category" in df.value.columns).set_index("category")


SCHEMA = {"type": "object", "required": ["answer"]}


def test_overview_by_category_shows_both_sides_the_delta_in_pp_with_its_ci_and_n(engine) -> None:
    _categories(engine)
    at = AppTest.from_file(APP, default_timeout=90).run()
    assert not at.exception, at.exception
    table = _category_table(at)
    assert table.loc["math", "Accuracy"] == "100.0% → 50.0% (n=10)"
    delta = table.loc["math", "Accuracy: Δ [95% CI]"]
    assert delta.startswith("-50.0 pp [") and delta.count(",") == 1
    low, high = (float(v.strip(" ✱")) for v in delta.split("[")[1].split("]")[0].split(","))
    assert low < -50.0 < high < 0
    assert table.loc["chat", "Accuracy"] == "" and table.loc["chat", "Accuracy: Δ [95% CI]"] == ""  # n/a: blank
    assert table.loc["chat", "Refusal rate"] == "0.0% → 0.0% (n=10)"
    assert "Length (chars)" in table.columns and table.loc["chat", "Length (chars)"].endswith("(n=10)")
    cells = table.astype(str).to_numpy().ravel()
    assert not any(c in ("None", "nan", "<NA>") for c in cells)
    assert not any("_" in c or c.endswith(" n") for c in table.columns)  # labels, not raw metric keys
    for col in table.columns:  # n beside every rate
        if not col.endswith("[95% CI]"):
            assert all(v == "" or "(n=" in v for v in table[col]), col


def test_overview_cards_are_at_most_three_a_row(engine) -> None:
    _categories(engine)
    at = AppTest.from_file(APP, default_timeout=90).run()
    rows = metric_rows(at)
    assert rows and max(rows) <= 3 and sum(rows) == len(at.metric)
    for card in at.metric:
        if card.label.startswith("Similarity"):
            continue
        assert len(card.value) <= 16 and "→" in card.value and len(card.label) <= 36


def _with_settings_open(at: AppTest) -> AppTest:
    """The Overview with its Review settings expander opened (its widgets exist only then)."""
    at.run()
    assert not any(t.key == "overview_refusal_patterns" for t in at.text_area)  # closed: not built
    at.session_state["overview_settings_open"] = True
    return at.run()


def test_settings_save_a_token_limit_and_a_schema_and_recompute(engine) -> None:
    from lib.review.settings import stored_settings

    _categories(engine)
    at = _with_settings_open(AppTest.from_file(APP, default_timeout=120))
    assert not any(m.label.startswith("JSON valid (strict)") for m in at.metric)  # no case has a schema
    at.number_input(key="overview_input_token_limit").set_value(4096)
    at.text_area(key="overview_schema").set_value(json.dumps(SCHEMA))
    at.button(key="overview_save_settings").click().run(timeout=120)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    saved = stored_settings(engine, "ui")
    assert saved.input_token_limit == 4096 and json.loads(saved.schema) == SCHEMA
    # the caches were cleared: every case is now checked against the schema (no output is a JSON object)
    card = next(m for m in at.metric if m.label.startswith("JSON valid (strict)"))
    assert card.value == "0.0% → 0.0%"
    assert at.number_input(key="overview_input_token_limit").value == 4096

    at.number_input(key="overview_input_token_limit").set_value(None)
    at.text_area(key="overview_schema").set_value("")
    at.button(key="overview_save_settings").click().run(timeout=120)
    saved = stored_settings(engine, "ui")
    assert saved.input_token_limit is None and saved.schema is None  # emptied: removed


@pytest.mark.parametrize("text, message", [
    ('{"type": "object",', "the schema: not JSON"),
    ('["a list"]', "the schema: a JSON Schema is a JSON object"),
    ('{"type": "objekt"}', "the schema: not a valid JSON Schema"),
])
def test_settings_an_invalid_schema_is_an_error_and_nothing_is_saved(engine, text: str, message: str) -> None:
    from lib.review.settings import stored_settings

    _categories(engine)
    at = _with_settings_open(AppTest.from_file(APP, default_timeout=90))
    at.number_input(key="overview_input_token_limit").set_value(100)
    at.text_area(key="overview_schema").set_value(text)
    at.button(key="overview_save_settings").click().run()
    assert not at.exception, at.exception
    assert at.error and "Not saved" in at.error[0].value and message in plain(at.error[0].value)
    saved = stored_settings(engine, "ui")
    assert saved.schema is None and saved.input_token_limit is None  # nothing, not even the valid limit


def test_settings_a_schema_file_upload(engine) -> None:
    from lib.review.settings import stored_settings

    _categories(engine)
    at = _with_settings_open(AppTest.from_file(APP, default_timeout=120))
    at.file_uploader(key="overview_schema_upload").set_value(("bad.json", b"{nope", "application/json")).run()
    at.button(key="overview_save_settings").click().run()
    assert at.error and "bad.json" in plain(at.error[0].value) and stored_settings(engine, "ui").schema is None
    at.file_uploader(key="overview_schema_upload").set_value(
        ("schema.json", json.dumps(SCHEMA).encode(), "application/json")).run()
    at.button(key="overview_save_settings").click().run(timeout=120)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert json.loads(stored_settings(engine, "ui").schema) == SCHEMA


def test_overview_states_the_answer_first(worse) -> None:
    at = alone("pages/overview.py").run()
    assert not at.exception, at.exception
    texts = [m.value for m in at.markdown]
    headline = next(t for t in texts if t.startswith("#### "))
    assert headline.startswith("#### Accuracy fell 25\\.0 pp \\(95% CI ")
    assert "20 regressions, all arithmetic" in headline
    assert any(t.startswith("No significant change in Refusal rate") for t in texts)
    assert any(t.startswith("**Verdict: NO-GO** under policy search v1 · fails: accuracy") for t in texts)
    assert not at.error  # a NO-GO is an answer, not an error: the box is coloured, the banner stays for errors
    assert any("after the candidate's outputs were stored" in c.value for c in at.caption)  # the plain sentence
    assert any("No decision signed yet" in c.value for c in at.caption)
    assert at.button(key="overview_go_sign").proto.label == "Sign a decision"
    assert at.get("plotly_chart"), "the forest plot"


def test_overview_cards_are_coloured_by_evidence(worse) -> None:
    at = alone("pages/overview.py").run()
    assert not at.exception, at.exception
    assert len(at.metric) == len([m for m in at.metric if m.label])  # every card rendered
    words = [c.value for c in at.caption]
    assert words.count("significantly worse") == 1  # accuracy
    assert "no evidence either way" in words
    style = next(h.proto.body for h in at.get("html") if "st-key-card-" in h.proto.body)
    assert 'st-key-card-worse-' in style and "#c62828" in style and 'st-key-card-no-evidence-' in style
    zero = [m for m in at.metric if m.proto.delta.startswith(("+0.0 ", "-0.0 ", "+0 "))]
    from streamlit.proto.Metric_pb2 import Metric as MetricProto

    none = MetricProto.MetricDirection.NONE
    assert zero and all(m.proto.direction == none for m in zero)  # no arrow: no change is not a rise
    assert any(m.proto.direction != none for m in at.metric)


def test_overview_without_policy_offers_to_lock_one(engine) -> None:
    make_comparison(engine, "cmp", pairs(30))
    at = alone("pages/overview.py").run()
    assert not at.exception, at.exception
    assert any(i.value.startswith("No policy locked") for i in at.info)
    assert at.button(key="overview_go_policy").proto.label == "Lock a policy"
    create_policy(engine, "other", b"[criteria.accuracy]\nmax_decrease = 0.02\n")  # not named after the system
    st.cache_data.clear()
    at = alone("pages/overview.py").run()
    assert any(i.value.startswith("No policy is in force for this comparison's system") for i in at.info)
    assert at.button(key="overview_go_choose").proto.label == "Choose a policy"


def test_overview_empty_store_offers_buttons(db_url) -> None:
    at = alone("pages/overview.py").run()
    assert not at.exception, at.exception
    assert {at.button(key=k).proto.label for k in ("overview_go_load", "overview_go_run")} == {
        "Load a recorded comparison", "Run a comparison"}
    assert not any("./review" in i.value or "python" in i.value for i in at.info)


def test_overview_empty_store_loads_the_demo_in_one_click(db_url) -> None:
    """A store started without scripts/dev.py (plain `streamlit run`) reaches the demo from the browser."""
    at = alone("pages/overview.py").run()
    at.button(key="overview_load_demo").click().run(timeout=180)
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert not any(i.value.startswith("No comparison yet") for i in at.info)
    assert any("demo" in c.value and "paired cases" in c.value for c in at.caption)


def test_signed_decision_shows_on_overview_and_a_broken_one_is_a_red_banner(worse, db_url, tmp_path) -> None:
    create_key(worse, "alice", PASS, tmp_path / "keys")
    claim_system(worse, "search", "alice")
    decide(worse, DecisionRequest("cmp", "no-go", "alice", "accuracy fell", policy="search"), PASS, tmp_path / "keys")
    at = alone("pages/overview.py").run()
    assert any(m.value.startswith("**Decision #1: NO-GO** by alice") and "intact" in m.value for m in at.markdown)
    assert not at.error
    tamper(db_url, "UPDATE decision SET rationale = 'looked fine'")
    st.cache_data.clear()  # the pages re-verify every READ_TTL_S; a test does not wait for that
    for page in ("pages/overview.py", "pages/decision.py"):
        at = alone(page).run()
        assert not at.exception, at.exception
        banner = at.error[0].value
        assert banner.startswith("**Decision #1 fails verification: do not rely on it.**"), page
        assert "signature does not verify" in banner


def test_overview_flips_are_one_table_and_the_second_forest_plot_waits_to_be_opened(worse) -> None:
    at = alone("pages/overview.py").run()
    assert not at.exception, at.exception
    [flips] = at.table  # one light table, not a grid per metric
    accuracy = flips.value.loc[next(i for i in flips.value.index if i.startswith("Accuracy (n=80)"))]
    assert list(flips.value.columns) == ["yes → yes", "yes → no", "no → yes", "no → no"]
    assert (accuracy["yes → no"], accuracy["no → yes"], accuracy.sum()) == (20, 0, 80)  # the 20 regressions
    assert [p.proto.id for p in at.get("plotly_chart")] and len(at.get("plotly_chart")) == 1  # rates only
    at.session_state["overview_forest_other_open"] = True
    at.run()
    assert len(at.get("plotly_chart")) == 2, "opened: lengths, tokens and latency drawn too"
