"""AppTest: the Drift page: errors shown where they happen."""
from __future__ import annotations

from tests.page_helpers import load_wide_rows, plain, routed, twelve_cases_two_flips


def test_drift_an_invalid_descriptor_regex_is_shown_as_an_error(engine) -> None:
    twelve_cases_two_flips(engine)
    at = routed("pages/drift.py")
    at.text_area(key="drift_regex").set_value("bad=([")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [plain(e.value) for e in at.error] == [
        "Drift analysis did not run. invalid regex descriptor 'bad' '([': missing ]: ["]  # RE2's own words
    assert not any(s.error for s in at.status)  # not inside a (collapsed) status box


def test_drift_a_failure_during_the_run_is_shown_outside_the_status(engine) -> None:
    load_wide_rows(engine, [(f"k{i}", f"Question {i}?", "a", "b", "", "plain") for i in range(3)])  # too few pairs
    at = routed("pages/drift.py")
    at.button[0].click().run()
    assert not at.exception, at.exception
    [status] = at.status
    assert status.label == "Drift analysis did not run" and status.state == "error" and not status.error
    assert any("did not run" in e.value and "at least 10" in e.value for e in at.error)
