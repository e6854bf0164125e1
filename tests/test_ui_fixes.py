"""AppTest: the defects a browser walk found, each rendered against a real SQLite store through the router.

Stale table selections (Diffs, Safety), the drift error hidden in a collapsed status, URLs in markdown,
the by-category table, metric cards and the Monitor's alert count, the Decision page's safeguards, the
two new review settings, and the Policy page's judge-score hint and units.
"""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from lib.governance.decisions import set_owner
from lib.governance.entities import Decision
from lib.governance.policy import create_policy
from lib.governance.signing import create_key
from lib.store.columns import utcnow
from lib.store.engine import session_scope
from lib.store.entities import Case, Dataset, ModelConfig
from tests.gov_helpers import make_comparison, pairs
from tests.llm_server import LLMServer

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
REFUSAL = "I'm sorry but I can't help with that."


def _page(path: str) -> AppTest:
    """The app through the router (as users reach it), switched to one page."""
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def _load_csv(engine, rows: list[tuple[str, str, str, str, str, str]], name: str = "ui") -> None:
    """A recorded wide comparison: (id, question, old, new, gold, category) rows."""
    from lib.data.loaders import LoadMapping, load_recorded

    lines = ["id,question,old,new,gold,category"] + [",".join(f'"{v}"' for v in row) for row in rows]
    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new",
                          expected_col="gold", category_col="category")
    load_recorded(engine, ("\n".join(lines) + "\n").encode(), "answers.csv", name, "wide", mapping)


def _plain(markdown: str) -> str:
    """Shown text without the markdown escapes."""
    return markdown.replace("\\", "")


def _select(at: AppTest, key: str, row: int) -> None:
    """A row ticked in a table, as the browser reports it (AppTest cannot click a dataframe row)."""
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}


def _selection(at: AppTest, key: str) -> list[int]:
    return list(at.session_state[key]["selection"]["rows"])


# ---- 1. Diffs: a selection from another filter, search or page -------------------------------------------

def _twelve_cases_two_flips(engine) -> None:
    rows = [(f"k{i:02d}", f"Question {i}?", f"Answer {i}.", f"Answer {i}.", f"Answer {i}.", "plain")
            for i in range(12)]
    rows[3] = ("k03", "Question 3?", "Answer 3.", REFUSAL, "Answer 3.", "plain")
    rows[7] = ("k07", "Question 7?", "Answer 7.", REFUSAL, "Answer 7.", "plain")
    _load_csv(engine, rows)


def test_diffs_a_filter_that_shrinks_the_list_drops_the_stale_selection(engine) -> None:
    _twelve_cases_two_flips(engine)
    at = _page("pages/diffs.py")
    _select(at, "diffs_table", 9)
    at.run()
    assert [s.value for s in at.subheader] == ["Case k09 (repeat 0)"]  # the selection is honoured
    at.selectbox(key="diffs_filter").set_value("refusal_flips").run()  # 2 rows: row 9 does not exist
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["Case k03 (repeat 0)"]  # the first row, not a crash
    assert _selection(at, "diffs_table") == []  # and no stale tick is sent back to the browser


def test_diffs_a_search_with_one_match_after_a_selection(engine) -> None:
    _twelve_cases_two_flips(engine)
    at = _page("pages/diffs.py")
    _select(at, "diffs_table", 9)
    at.run()
    at.text_input(key="diffs_search").set_value("Question 4?").run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["Case k04 (repeat 0)"]


def _browser_selects(at: AppTest, table_key: str, row: int) -> AppTest:
    """Rerun with a row index as the browser sends it for a table (unchecked, unlike a session-state write,
    which Streamlit validates against the table's rows). AppTest has no API for this: its private run."""
    [table] = [df for df in at.dataframe if df.key == table_key]
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id = table.proto.id
    state.string_value = json.dumps({"selection": {"rows": [row], "columns": [], "cells": []}})
    return at._run(states)


def test_diffs_a_stale_index_sent_by_the_browser_is_ignored(engine) -> None:
    # Same filter, search and page, fewer rows (a recomputed review): the browser still sends its old index.
    _twelve_cases_two_flips(engine)
    at = _page("pages/diffs.py")
    at.selectbox(key="diffs_filter").set_value("refusal_flips").run()
    _browser_selects(at, "diffs_table", 1)
    assert [s.value for s in at.subheader] == ["Case k07 (repeat 0)"]  # an index in range is honoured
    _browser_selects(at, "diffs_table", 9)
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["Case k03 (repeat 0)"]  # out of range: the first row


def test_diffs_turning_the_page_does_not_carry_the_row_selection(engine) -> None:
    rows = [(f"k{i:02d}", f"Question {i}?", f"Answer {i}.", f"Reply {i}.", "", "plain") for i in range(60)]
    _load_csv(engine, rows)
    at = _page("pages/diffs.py")
    _select(at, "diffs_table", 4)
    at.run()
    assert [s.value for s in at.subheader] == ["Case k04 (repeat 0)"]
    at.number_input(key="diffs_page").set_value(2).run()
    assert not at.exception, at.exception
    assert _selection(at, "diffs_table") == []  # row 4 of page 2 is not ticked
    assert [s.value for s in at.subheader] == ["Case k50 (repeat 0)"]  # the first row of page 2
    _select(at, "diffs_table", 2)  # a selection on this page is kept
    at.run()
    assert [s.value for s in at.subheader] == ["Case k52 (repeat 0)"]


# ---- 2. Safety: a selection from the other flip list -----------------------------------------------------

def _shown_case(at: AppTest) -> str:
    """The case key of the case shown below the table (its subheader, markdown-escaped)."""
    return at.subheader[-1].value.removeprefix("Case ").removesuffix(" (repeat 0)").replace("\\", "")


def test_safety_switching_flip_lists_drops_the_stale_selection(engine) -> None:
    from lib.data.demo import demo_comparison_name, load_demo
    from lib.review.report import build_report

    load_demo(engine)
    flips = build_report(engine, demo_comparison_name())["metrics"]["injection_resistance_rate"]["flips"]
    assert flips["to_false"] > flips["to_true"] > 0  # more newly failing than newly passing
    at = _page("pages/safety.py")
    at.selectbox(key="safety_family").set_value("injection")
    at.radio(key="safety_which").set_value("newly_failing").run()
    last = flips["to_false"] - 1
    _select(at, "safety_cases", last)
    at.run()
    failing = next(df.value for df in at.dataframe if "rule" in df.value.columns)
    assert _shown_case(at) == failing["case"].iloc[last]
    at.radio(key="safety_which").set_value("newly_passing").run()  # fewer rows: the index is stale
    assert not at.exception, at.exception
    passing = next(df.value for df in at.dataframe if "rule" in df.value.columns)
    assert len(passing) == flips["to_true"]
    assert _shown_case(at) == passing["case"].iloc[0]
    assert _selection(at, "safety_cases") == []
    _browser_selects(at, "safety_cases", flips["to_false"] - 1)  # the browser's stale index, on the same list
    assert not at.exception, at.exception
    assert _shown_case(at) == passing["case"].iloc[0]


# ---- 3. Drift: the reason it did not run is shown, outside the collapsed status ----------------------------

def test_drift_an_invalid_descriptor_regex_is_shown_as_an_error(engine) -> None:
    _twelve_cases_two_flips(engine)
    at = _page("pages/drift.py")
    at.text_area(key="drift_regex").set_value("bad=([")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [_plain(e.value) for e in at.error] == [
        "Drift analysis did not run. invalid regex descriptor 'bad' '([': unterminated character set at position 1"]
    assert not any(s.error for s in at.status)  # not inside a (collapsed) status box


def test_drift_a_failure_during_the_run_is_shown_outside_the_status(engine) -> None:
    _load_csv(engine, [(f"k{i}", f"Question {i}?", "a", "b", "", "plain") for i in range(3)])  # too few pairs
    at = _page("pages/drift.py")
    at.button[0].click().run()
    assert not at.exception, at.exception
    [status] = at.status
    assert status.label == "Drift analysis did not run" and status.state == "error" and not status.error
    assert any("did not run" in e.value and "at least 10" in e.value for e in at.error)


# ---- 4. URLs and identifiers: code spans, not escaped text ------------------------------------------------

def test_code_spans_and_url_safe_text_helpers() -> None:
    from pages._shared import code, md_lines, md_text

    assert code("http://127.0.0.1:8765/v1") == "`http://127.0.0.1:8765/v1`"  # verbatim: no backslash
    assert code("a`b") == "``a`b``" and code("``x") == "``` ``x ```"  # a fence longer than any run inside
    assert code("two\nlines") == "`two lines`"
    # GFM links a raw http:// from the source text: with md() alone its backslashes show in the link
    assert md_text("see http://127.0.0.1:8765/v1") == "see http\\://127\\.0\\.0\\.1\\:8765/v1"
    assert md_lines("one\n  two\n\n=== *x*") == "one  \ntwo  \n  \n\\=\\=\\= \\*x\\*"


def test_comparisons_page_shows_the_api_base_verbatim(engine) -> None:
    make_comparison(engine, "cmp", pairs(3))
    with session_scope(engine) as s:
        for cfg in s.exec(select(ModelConfig)).all():
            cfg.api_base = "http://127.0.0.1:8765/v1"
            s.add(cfg)
    at = _page("pages/comparisons.py")
    bases = [m.value for m in at.markdown if "API base" in m.value]
    assert bases == ["**API base:** `http://127.0.0.1:8765/v1`"] * 2
    assert "**Model:** `acme/baseline-model`" in [m.value for m in at.markdown]
    assert not any("\\." in m.value for m in at.markdown if "`" in m.value)  # no escape inside a code span


# ---- 5. Overview: the by-category table ---------------------------------------------------------------------

def _categories(engine) -> None:
    """math: 10 cases with an expected answer, 5 right -> wrong; chat: 10 cases without one."""
    rows = [(f"m{i}", f"What is {i}+{i}?", str(2 * i), str(2 * i) if i < 5 else "no idea", str(2 * i), "math")
            for i in range(10)]
    rows += [(f"c{i}", f"Say hi {i}", f"hello {i}", f"hi there {i}", "", "chat") for i in range(10)]
    _load_csv(engine, rows)


def _category_table(at: AppTest) -> pd.DataFrame:
    return next(df.value for df in at.dataframe if "category" in df.value.columns).set_index("category")


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


# ---- 6. Metric cards and the Monitor's alert count ------------------------------------------------------------

def _metric_rows(at: AppTest) -> list[int]:
    """Metric cards per row, for every row of columns (st.columns) holding one."""
    rows, todo = [], [at.main]
    while todo:
        block = todo.pop(0)
        kids = list(getattr(block, "children", {}).values())
        if kids and all(k.type == "column" for k in kids):
            cards = sum(len(k.get("metric")) for k in kids)
            if cards:
                rows.append(cards)
            continue
        todo += [k for k in kids if hasattr(k, "children")]
    return rows


def test_overview_cards_are_at_most_three_a_row(engine) -> None:
    _categories(engine)
    at = AppTest.from_file(APP, default_timeout=90).run()
    rows = _metric_rows(at)
    assert rows and max(rows) <= 3 and sum(rows) == len(at.metric)
    for card in at.metric:
        if card.label.startswith("Similarity"):
            continue
        assert len(card.value) <= 16 and "→" in card.value and len(card.label) <= 36


def _golden(engine, n: int) -> None:
    with session_scope(engine) as session:
        ds = Dataset(name="golden", version=1, content_hash=f"golden-{n}", n_cases=n)
        session.add(ds)
        session.flush()
        session.add_all(Case(dataset_id=ds.id, case_key=f"c{i}", position=i, input_text=f"question {i}")
                        for i in range(n))


def _point(engine, server: LLMServer):
    from lib.release.monitor import monitor_run
    from lib.run.runner import ModelSpec, RunOptions

    spec = ModelSpec("openai/pinned", api_base=server.url, temperature=0.0)
    options = RunOptions(concurrency=8, timeout=10, max_retries=1, backoff_base=0.02, backoff_cap=0.1)
    return monitor_run(engine, dataset="golden", spec=spec, options=options)


def test_monitor_alerts_card_agrees_with_the_points_table(engine, llm_server: LLMServer) -> None:
    _golden(engine, 40)
    llm_server.set_fingerprint("pinned", "fp_a")
    _point(engine, llm_server)
    _point(engine, llm_server)  # unchanged: ok
    llm_server.set_fingerprint("pinned", "fp_b")
    llm_server.set_served_model("pinned", "pinned-2025-09")
    llm_server.script(REFUSAL, contains="question 1", model="pinned")
    last = _point(engine, llm_server)
    # one point, many alert rows: a band alert, and each change found against the baseline and the previous point
    assert last.alerts and len(last.findings) == 4
    at = _page("pages/monitor.py")
    card = next(m for m in at.metric if m.label == "Alerts")
    assert card.value == "1 (1 metric out of band, 1 fingerprint change)"
    points = next(df.value for df in at.dataframe if "served model" in df.value.columns)
    alerting = points[points["alerts"] != ""]
    assert len(alerting) == int(card.value.split()[0])  # the card counts the points the table marks
    [row] = alerting["alerts"].tolist()
    assert row == "metric out of band (Refusal rate) · fingerprint change (fingerprint, served model)"
    latest = next(m for m in at.metric if m.label == "Latest point")
    assert latest.value == "alert"  # the kinds go below the value, which is never cut off
    assert _metric_rows(at)[0] == 3


# ---- 7. Decision: no preselected decision, an override needs a confirmation, line breaks kept -----------------

@pytest.fixture
def no_go(engine, tmp_path, monkeypatch):
    """A comparison whose accuracy drops (NO-GO under a pre-registered policy), owned by alice."""
    monkeypatch.setenv("REVIEW_KEY_DIR", str(tmp_path / "keys"))
    create_policy(engine, "strict", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    make_comparison(engine, "cmp", pairs(60, n_worse=40), outputs_at=utcnow() + timedelta(minutes=1))
    create_key(engine, "alice", "correct horse", tmp_path / "keys")
    set_owner(engine, "default", "alice")
    return engine


def _fill(at: AppTest, rationale: str, conditions: str) -> None:
    at.text_area(key="decision_rationale").set_value(rationale)
    at.text_area(key="decision_conditions").set_value(conditions)
    at.text_input(key="decision_passphrase").input("correct horse")


def _decisions(engine) -> list[Decision]:
    with Session(engine) as s:
        return list(s.exec(select(Decision)).all())


def test_decision_has_no_default_and_an_override_needs_a_confirmation(no_go) -> None:
    at = _page("pages/decision.py")
    assert at.subheader[0].value == "Verdict: NO-GO"
    assert at.radio(key="decision_choice").value is None  # not "go"
    _fill(at, "ship it", "")
    at.button(key="decision_sign").click().run()
    assert "Choose go or no-go" in at.error[0].value and not _decisions(no_go)

    at.radio(key="decision_choice").set_value("go").run()
    assert any("against the verdict (NO-GO)" in w.value for w in at.warning)
    _fill(at, "ship it", "")
    at.button(key="decision_sign").click().run()
    assert not at.exception, at.exception
    assert any("Nothing was signed" in e.value and "against the NO-GO verdict" in e.value for e in at.error)
    assert not _decisions(no_go)

    at.checkbox(key="decision_confirm_against").check()
    _fill(at, "ship it", "")
    at.button(key="decision_sign").click().run()
    assert not at.exception, at.exception
    assert at.success and "Signed decision 1: go by alice" in at.success[0].value
    [row] = _decisions(no_go)
    assert (row.decision, row.verdict) == ("go", "no-go")


def test_decision_following_the_verdict_needs_no_confirmation(no_go) -> None:
    at = _page("pages/decision.py")
    at.radio(key="decision_choice").set_value("no-go").run()
    assert not at.warning or not any("against the verdict" in w.value for w in at.warning)
    _fill(at, "accuracy dropped", "")
    at.button(key="decision_sign").click().run()
    assert at.success and [d.decision for d in _decisions(no_go)] == ["no-go"]


def test_decision_comments_keep_line_breaks_and_history_shows_the_signed_words(no_go) -> None:
    at = _page("pages/decision.py")
    at.text_input(key="decision_comment_author").set_value("bob")
    at.text_area(key="decision_comment_text").set_value("first line\nsecond *line*\n    <b>indented</b>")
    at.button(key="decision_comment_add").click().run()
    assert not at.exception, at.exception
    [comment] = [m.value for m in at.markdown if "first line" in m.value]
    assert comment.endswith("first line  \nsecond \\*line\\*  \n\\<b\\>indented\\</b\\>")

    at.radio(key="decision_choice").set_value("no-go").run()
    _fill(at, "Accuracy fell 40 pp.\nSee http://wiki.local/x_y", "rerun after\nthe fix")
    at.button(key="decision_sign").click().run()
    assert at.success, [e.value for e in at.error]
    history = next(df.value for df in at.dataframe if "integrity" in df.value.columns)
    assert history["rationale"].tolist() == ["Accuracy fell 40 pp.\nSee http://wiki.local/x_y"]
    assert history["conditions"].tolist() == ["rerun after\nthe fix"]
    [details] = [e for e in at.expander if e.label.startswith("Decision 1: no-go")]
    shown = [m.value for m in details.markdown]
    assert shown == ["**Rationale**  \nAccuracy fell 40 pp\\.  \nSee http\\://wiki\\.local/x\\_y",
                     "**Conditions**  \nrerun after  \nthe fix"]


# ---- 8. Review settings: input token limit and a schema for every case -------------------------------------------

SCHEMA = {"type": "object", "required": ["answer"]}


def test_settings_save_a_token_limit_and_a_schema_and_recompute(engine) -> None:
    from lib.review.settings import stored_settings

    _categories(engine)
    at = AppTest.from_file(APP, default_timeout=120).run()
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
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.number_input(key="overview_input_token_limit").set_value(100)
    at.text_area(key="overview_schema").set_value(text)
    at.button(key="overview_save_settings").click().run()
    assert not at.exception, at.exception
    assert at.error and "Not saved" in at.error[0].value and message in _plain(at.error[0].value)
    saved = stored_settings(engine, "ui")
    assert saved.schema is None and saved.input_token_limit is None  # nothing, not even the valid limit


def test_settings_a_schema_file_upload(engine) -> None:
    from lib.review.settings import stored_settings

    _categories(engine)
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.file_uploader(key="overview_schema_upload").set_value(("bad.json", b"{nope", "application/json")).run()
    at.button(key="overview_save_settings").click().run()
    assert at.error and "bad.json" in _plain(at.error[0].value) and stored_settings(engine, "ui").schema is None
    at.file_uploader(key="overview_schema_upload").set_value(
        ("schema.json", json.dumps(SCHEMA).encode(), "application/json")).run()
    at.button(key="overview_save_settings").click().run(timeout=120)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert json.loads(stored_settings(engine, "ui").schema) == SCHEMA


# ---- 9. Policy: a hint while the judge dimension is empty, real errors red, units in the help ---------------

def test_policy_judge_score_shows_a_hint_not_an_error_until_the_dimension_is_typed(engine) -> None:
    at = _page("pages/policy.py")
    at.text_input(key="policy_name").set_value("judged")
    at.selectbox(key="policy_row_0_metric").set_value("judge_score").run()
    assert not at.error, [e.value for e in at.error]
    assert any("Type the judge dimension" in i.value for i in at.info)
    assert at.button(key="policy_create").disabled
    at.text_input(key="policy_row_0_category").set_value("accuracy").run()
    assert not at.error and not any("judge dimension" in i.value for i in at.info)
    assert not at.button(key="policy_create").disabled


def test_policy_other_rows_errors_stay_red_while_a_dimension_is_awaited(engine) -> None:
    at = _page("pages/policy.py")
    at.selectbox(key="policy_row_0_metric").set_value("accuracy")
    at.number_input(key="policy_row_0_value").set_value(1.5).run()  # a rate above 1
    assert at.error and "fraction" in at.error[0].value
    at.button(key="policy_add_row").click().run()
    at.selectbox(key="policy_row_1_metric").set_value("judge_score").run()
    assert at.error and "fraction" in at.error[0].value  # the real error is still shown


@pytest.mark.parametrize("metric, words", [("accuracy", "2 percentage points"), ("judge_score", "1-5"),
                                           ("latency_s_mean", "Seconds"), ("cost_usd_total", "US dollars")])
def test_policy_value_help_says_the_units(engine, metric: str, words: str) -> None:
    at = _page("pages/policy.py")
    at.selectbox(key="policy_row_0_metric").set_value(metric).run()
    assert words in at.number_input(key="policy_row_0_value").help
