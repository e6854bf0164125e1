"""AppTest: the Load page."""
from __future__ import annotations

from sqlmodel import Session, select

from lib.store.entities import Comparison
from tests.page_helpers import WIDE_CSV, router


def test_load_page_loads_a_wide_file(engine) -> None:
    at = router().run()
    at.switch_page("pages/load.py").run()
    at.radio(key="load_format").set_value("wide").run()
    at.file_uploader(key="load_upload").set_value(("answers.csv", WIDE_CSV, "text/csv")).run()
    at.selectbox(key="load_input_col").set_value("question")
    at.selectbox(key="load_baseline_col").set_value("old")
    at.selectbox(key="load_candidate_col").set_value("new")
    at.selectbox(key="load_expected_col").set_value("gold")
    at.text_input(key="load_name").set_value("from-page").run()
    at.button(key="load_submit").click().run()
    assert not at.exception, at.exception
    assert at.success, [e.value for e in at.error]
    with Session(engine) as s:
        assert s.exec(select(Comparison).where(Comparison.name == "from-page")).one()
    # the page reran so that the router's sidebar shows it (AppTest runs only the page after switch_page)
    assert at.session_state["pending_active_comparison"] == "from-page"
    assert at.button(key="load_go_overview").proto.label == "Open its Overview"
    # the button is drawn again in the rerun its click starts (else the click is lost), and opens the Overview
    at.button(key="load_go_overview").click().run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Overview"]


def test_load_page_makes_the_owner_choose_promptfoo_sides(engine) -> None:
    """promptfoo lists providers in config order, not old -> new: the page guesses nothing."""
    from pathlib import Path

    data = (Path(__file__).parent / "fixtures" / "promptfoo_v3.json").read_bytes()
    at = router().run()
    at.switch_page("pages/load.py").run()
    at.radio(key="load_format").set_value("promptfoo").run()
    at.file_uploader(key="load_upload").set_value(("results.json", data, "application/json")).run()
    assert at.button(key="load_submit").disabled
    first, second = at.selectbox(key="load_baseline").options
    assert (first, second) == ("openai:gpt-4o-mini", "openai:gpt-4.1-mini")  # file order
    at.selectbox(key="load_baseline").set_value(second)
    at.selectbox(key="load_candidate").set_value(first)
    at.text_input(key="load_name").set_value("pf").run()
    at.button(key="load_submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with Session(engine) as s:
        cmp = s.exec(select(Comparison).where(Comparison.name == "pf")).one()
    assert not [w for w in at.info if "first appearance" in w.value]
    assert '"baseline": "openai:gpt-4.1-mini"' in cmp.notes_json  # the owner's choice, not the file order
