"""pages/_shared.py: cached reads are keyed on the store's version, so a write by any process shows on the
next rerun (no 30 s wait) and nothing is recomputed while the store is unchanged."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
CSV = b"id,question,old,new\n1,What is 2+2?,4,4\n2,Capital of France?,Paris,Lyon\n"


def _load(engine, name: str) -> None:
    from lib.data.loaders import LoadMapping, load_recorded

    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new")
    load_recorded(engine, CSV, "answers.csv", name, "wide", mapping)


def test_a_comparison_written_elsewhere_is_listed_on_the_next_rerun(engine) -> None:
    _load(engine, "first")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/comparisons.py").run()
    assert at.dataframe[0].value["name"].tolist() == ["first"]
    _load(engine, "second")  # as the CLI would, outside the app
    at.run()
    assert not at.exception, at.exception
    assert sorted(at.dataframe[0].value["name"]) == ["first", "second"]


def test_the_store_version_changes_on_a_write_and_only_then(engine, db_url: str) -> None:
    from pages._shared import store_version

    _load(engine, "first")
    before = store_version(db_url)
    assert before == store_version(db_url)  # reads leave it alone
    _load(engine, "second")
    assert store_version(db_url) != before


def test_comparisons_tables_read_no_none_and_an_error_shows_in_place_of_its_output(engine) -> None:
    from lib.data.loaders import LoadMapping, load_recorded

    data = b"id,question,old,new,new_error\n1,What is 2+2?,4,,timeout\n2,Capital?,Paris,Paris,\n"
    load_recorded(engine, data, "answers.csv", "errs", "wide",
                  LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/comparisons.py").run()
    assert not at.exception, at.exception
    listed, preview = (df.value for df in at.dataframe)
    for table in (listed, preview):
        cells = table.astype(str)
        assert not cells.isin(["None", "nan", "NaN", "<NA>", "NaT"]).any().any(), table
    assert preview.set_index("case").loc["1", "candidate output"] == "error: timeout"
    assert listed.loc[0, "baseline → candidate"].endswith("→ new")
