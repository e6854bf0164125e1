"""AppTest: the Comparisons page: listing, switching, tables without None, identifiers verbatim."""
from __future__ import annotations

from sqlmodel import select

from lib.store.engine import session_scope
from lib.store.entities import ModelConfig
from tests.gov_helpers import make_comparison, pairs
from tests.page_helpers import SIDEBAR_KEY, load_two_pairs, load_wide, routed, router


def test_comparisons_page_shows_the_api_base_verbatim(engine) -> None:
    make_comparison(engine, "cmp", pairs(3))
    with session_scope(engine) as s:
        for cfg in s.exec(select(ModelConfig)).all():
            cfg.api_base = "http://127.0.0.1:8765/v1"
            s.add(cfg)
    at = routed("pages/comparisons.py")
    bases = [m.value for m in at.markdown if "API base" in m.value]
    assert bases == ["**API base:** `http://127.0.0.1:8765/v1`"] * 2
    assert "**Model:** `acme/baseline-model`" in [m.value for m in at.markdown]
    assert not any("\\." in m.value for m in at.markdown if "`" in m.value)  # no escape inside a code span


def test_comparisons_page_lists_and_switches_active(engine) -> None:
    load_wide(engine, "first")
    load_wide(engine, "second")
    at = router().run()
    at.switch_page("pages/comparisons.py").run()
    assert not at.exception
    at.selectbox(key="comparisons_open").set_value("first").run()
    at.button(key="comparisons_make_active").click().run()
    # AppTest runs only the page script after switch_page; the router applies the choice next run.
    assert at.session_state["pending_active_comparison"] == "first"
    frame = router()
    frame.session_state["pending_active_comparison"] = "first"
    frame.run()
    assert frame.sidebar.selectbox(key=SIDEBAR_KEY).value == "first"
    # hostile output is data in a dataframe, never markup
    assert not any("onerror" in m.value for m in at.markdown)


def test_a_comparison_written_elsewhere_is_listed_on_the_next_rerun(engine) -> None:
    load_two_pairs(engine, "first")
    at = router().run()
    at.switch_page("pages/comparisons.py").run()
    assert at.dataframe[0].value["name"].tolist() == ["first"]
    load_two_pairs(engine, "second")  # as the CLI would, outside the app
    at.run()
    assert not at.exception, at.exception
    assert sorted(at.dataframe[0].value["name"]) == ["first", "second"]


def test_comparisons_tables_read_no_none_and_an_error_shows_in_place_of_its_output(engine) -> None:
    from lib.data.loaders import LoadMapping, load_recorded

    data = b"id,question,old,new,new_error\n1,What is 2+2?,4,,timeout\n2,Capital?,Paris,Paris,\n"
    load_recorded(engine, data, "answers.csv", "errs", "wide",
                  LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new"))
    at = router().run()
    at.switch_page("pages/comparisons.py").run()
    assert not at.exception, at.exception
    tables = [df.value for df in at.dataframe]  # the list, the preview, and the deprecation radar when shown
    listed, preview = tables[:2]
    for table in tables:
        cells = table.astype(str)
        assert not cells.isin(["None", "nan", "NaN", "<NA>", "NaT"]).any().any(), table
    assert preview.set_index("case").loc["1", "candidate output"] == "error: timeout"
    assert listed.loc[0, "baseline → candidate"].endswith("→ new")
