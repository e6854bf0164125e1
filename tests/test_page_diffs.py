"""AppTest: the Diffs page: filters, paging, stale selections, reviewer labels."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from lib.data.loaders import LoadMapping, load_recorded
from lib.review.report import build_report
from tests.page_helpers import (
    browser_selects,
    load_wide_rows,
    routed,
    router,
    tick_row,
    ticked_rows,
    twelve_cases_two_flips,
)

CSV = (b"id,question,old,new,category\n"
       b"1,Capital of France?,Paris,I'm sorry but I can't help with that.,facts\n"
       b"2,Say hi,hello,hi there,chat\n")


def _diffs(engine) -> AppTest:
    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new",
                          category_col="category")
    load_recorded(engine, CSV, "answers.csv", "labels-demo", "wide", mapping)
    at = router().run()
    at.switch_page("pages/diffs.py").run()
    assert not at.exception, at.exception
    return at


def test_diffs_a_filter_that_shrinks_the_list_drops_the_stale_selection(engine) -> None:
    twelve_cases_two_flips(engine)
    at = routed("pages/diffs.py")
    tick_row(at, "diffs_table", 9)
    at.run()
    assert [s.value for s in at.subheader] == ["Case k09 (repeat 0)"]  # the selection is honoured
    at.selectbox(key="diffs_filter").set_value("refusal_flips").run()  # 2 rows: row 9 does not exist
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["Case k03 (repeat 0)"]  # the first row, not a crash
    assert ticked_rows(at, "diffs_table") == []  # and no stale tick is sent back to the browser


def test_diffs_a_search_with_one_match_after_a_selection(engine) -> None:
    twelve_cases_two_flips(engine)
    at = routed("pages/diffs.py")
    tick_row(at, "diffs_table", 9)
    at.run()
    at.text_input(key="diffs_search").set_value("Question 4?").run()
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["Case k04 (repeat 0)"]


def test_diffs_a_stale_index_sent_by_the_browser_is_ignored(engine) -> None:
    # Same filter, search and page, fewer rows (a recomputed review): the browser still sends its old index.
    twelve_cases_two_flips(engine)
    at = routed("pages/diffs.py")
    at.selectbox(key="diffs_filter").set_value("refusal_flips").run()
    browser_selects(at, "diffs_table", 1)
    assert [s.value for s in at.subheader] == ["Case k07 (repeat 0)"]  # an index in range is honoured
    browser_selects(at, "diffs_table", 9)
    assert not at.exception, at.exception
    assert [s.value for s in at.subheader] == ["Case k03 (repeat 0)"]  # out of range: the first row


def test_diffs_turning_the_page_does_not_carry_the_row_selection(engine) -> None:
    rows = [(f"k{i:02d}", f"Question {i}?", f"Answer {i}.", f"Reply {i}.", "", "plain") for i in range(60)]
    load_wide_rows(engine, rows)
    at = routed("pages/diffs.py")
    tick_row(at, "diffs_table", 4)
    at.run()
    assert [s.value for s in at.subheader] == ["Case k04 (repeat 0)"]
    at.number_input(key="diffs_page").set_value(2).run()
    assert not at.exception, at.exception
    assert ticked_rows(at, "diffs_table") == []  # row 4 of page 2 is not ticked
    assert [s.value for s in at.subheader] == ["Case k50 (repeat 0)"]  # the first row of page 2
    tick_row(at, "diffs_table", 2)  # a selection on this page is kept
    at.run()
    assert [s.value for s in at.subheader] == ["Case k52 (repeat 0)"]


def test_a_label_needs_a_name_then_overrides_the_rule(engine) -> None:
    at = _diffs(engine)
    assert any("No output of this comparison is labelled yet" in c.value for c in at.caption)
    first = build_report(engine, "labels-demo")["metrics"]["refusal_rate"]["candidate"]
    assert first == 0.5  # the rule flags the candidate's apology
    candidate_id = next(b.key for b in at.button if b.key and b.key.startswith("label_c_") and
                        b.key.endswith("_Not a refusal"))
    at.button(key=candidate_id).click().run()
    assert any("Enter your name" in e.value for e in at.error)
    assert build_report(engine, "labels-demo")["labelled_outputs"] == 0
    at.text_input(key="labels_reviewer").set_value("ana").run()
    at.button(key=candidate_id).click().run()
    assert not at.exception, at.exception
    report = build_report(engine, "labels-demo")
    assert report["labelled_outputs"] == 1 and report["metrics"]["refusal_rate"]["candidate"] == 0.0
    assert [m.label for m in at.metric] == ["Rule precision vs labels", "Rule recall vs labels", "Labelled outputs"]
    assert at.metric[2].value == "1"
