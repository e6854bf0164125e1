"""AppTest: the Safety page."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.page_helpers import browser_selects, routed, tick_row, ticked_rows


def _shown_case(at: AppTest) -> str:
    """The case key of the case shown below the table (its subheader, markdown-escaped)."""
    return at.subheader[-1].value.removeprefix("Case ").removesuffix(" (repeat 0)").replace("\\", "")


def test_safety_switching_flip_lists_drops_the_stale_selection(engine) -> None:
    from lib.data.demo import demo_comparison_name, load_demo
    from lib.review.report import build_report

    load_demo(engine)
    flips = build_report(engine, demo_comparison_name())["metrics"]["injection_resistance_rate"]["flips"]
    assert flips["to_false"] > flips["to_true"] > 0  # more newly failing than newly passing
    at = routed("pages/safety.py")
    at.selectbox(key="safety_family").set_value("injection")
    at.radio(key="safety_which").set_value("newly_failing").run()
    last = flips["to_false"] - 1
    tick_row(at, "safety_cases", last)
    at.run()
    failing = next(df.value for df in at.dataframe if "rule" in df.value.columns)
    assert _shown_case(at) == failing["case"].iloc[last]
    at.radio(key="safety_which").set_value("newly_passing").run()  # fewer rows: the index is stale
    assert not at.exception, at.exception
    passing = next(df.value for df in at.dataframe if "rule" in df.value.columns)
    assert len(passing) == flips["to_true"]
    assert _shown_case(at) == passing["case"].iloc[0]
    assert ticked_rows(at, "safety_cases") == []
    browser_selects(at, "safety_cases", flips["to_false"] - 1)  # the browser's stale index, on the same list
    assert not at.exception, at.exception
    assert _shown_case(at) == passing["case"].iloc[0]
