"""AppTest: every page renders, on an empty store and with data; the data-path forms work."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, func, select
from streamlit.testing.v1 import AppTest

from lib.store.entities import Case, Comparison, Dataset

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "streamlit_app.py")
PAGES = ["pages/overview.py", "pages/diffs.py", "pages/distributions.py", "pages/drift.py", "pages/comparisons.py",
         "pages/safety.py", "pages/judge.py", "pages/canary.py", "pages/monitor.py",
         "pages/policy.py", "pages/decision.py",
         "pages/datasets.py", "pages/run.py", "pages/load.py"]
SIDEBAR_KEY = "sidebar_active_comparison"

WIDE_CSV = (b"id,question,old,new,gold,category\n"
            b"1,What is 2+2?,4,4,4,math\n"
            b"2,Capital of France?,Paris,I'm sorry but I can't help with that.,Paris,facts\n"
            b"3,Say hi,<img src=x onerror=alert(1)>,hello,,chat\n")


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60)


def _load_wide(engine, name: str = "wide-demo") -> None:
    from lib.data.loaders import LoadMapping, load_recorded

    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new",
                          expected_col="gold", category_col="category")
    load_recorded(engine, WIDE_CSV, "answers.csv", name, "wide", mapping)


def test_a_store_that_cannot_be_opened_is_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://review:secret@db/review")
    at = _app().run()
    assert not at.exception, at.exception
    [error] = at.error
    assert "The store cannot be opened" in error.value and "sqlite" in error.value and "secret" not in error.value


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_store(db_url: str, page: str) -> None:
    at = _app().run()
    at.switch_page(page).run()
    assert not at.exception, at.exception


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_comparison(engine, page: str) -> None:
    _load_wide(engine)
    at = _app().run()
    at.switch_page(page).run()
    assert not at.exception, at.exception


def test_sidebar_shows_the_active_comparison(engine) -> None:
    # (AppTest runs only the page script after switch_page, so the router is checked on the first page.)
    _load_wide(engine)
    at = _app().run()
    assert at.sidebar.selectbox(key=SIDEBAR_KEY).value == "wide-demo"
    assert "old" in at.sidebar.caption[0].value and "new" in at.sidebar.caption[0].value


def test_comparisons_page_lists_and_switches_active(engine) -> None:
    _load_wide(engine, "first")
    _load_wide(engine, "second")
    at = _app().run()
    at.switch_page("pages/comparisons.py").run()
    assert not at.exception
    at.selectbox(key="comparisons_open").set_value("first").run()
    at.button(key="comparisons_make_active").click().run()
    # AppTest runs only the page script after switch_page; the router applies the choice next run.
    assert at.session_state["pending_active_comparison"] == "first"
    router = _app()
    router.session_state["pending_active_comparison"] = "first"
    router.run()
    assert router.sidebar.selectbox(key=SIDEBAR_KEY).value == "first"
    # hostile output is data in a dataframe, never markup
    assert not any("onerror" in m.value for m in at.markdown)


def test_datasets_page_imports_an_uploaded_file_with_mapping(engine) -> None:
    data = "\n".join(json.dumps({"qid": f"q{i}", "prompt": f"What is {i}+{i}?", "answer": str(2 * i)})
                     for i in range(5)).encode()
    at = _app().run()
    at.switch_page("pages/datasets.py").run()
    at.file_uploader(key="datasets_upload").set_value(("arith.jsonl", data, "application/jsonl")).run()
    at.selectbox(key="datasets_map_id").set_value("qid")
    at.selectbox(key="datasets_map_input").set_value("prompt")
    at.selectbox(key="datasets_map_expected").set_value("answer")
    at.text_input(key="datasets_name").set_value("arith").run()
    at.button(key="datasets_import").click().run()
    assert not at.exception, at.exception
    assert at.success, [e.value for e in at.error]
    with Session(engine) as s:
        ds = s.exec(select(Dataset).where(Dataset.name == "arith")).one()
        keys = s.exec(select(Case.case_key).where(Case.dataset_id == ds.id)).all()
    assert sorted(keys) == [f"q{i}" for i in range(5)]


def test_datasets_page_shows_import_errors_and_writes_nothing(engine) -> None:
    bad = b'{"id": "a", "input": "ok"}\n{"id": "b", "input": "x", "match": "fuzzy"}\n'
    at = _app().run()
    at.switch_page("pages/datasets.py").run()
    at.file_uploader(key="datasets_upload").set_value(("bad.jsonl", bad, "application/jsonl")).run()
    at.text_input(key="datasets_name").set_value("bad").run()
    at.button(key="datasets_import").click().run()
    assert not at.exception
    assert at.error and "line 2" in at.error[0].value and "match" in at.error[0].value
    with Session(engine) as s:
        assert s.exec(select(func.count(Dataset.id))).one() == 0


def test_load_page_loads_a_wide_file(engine) -> None:
    at = _app().run()
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


def _import_golden(engine, n: int = 4) -> None:
    from lib.data.golden import import_dataset

    data = "\n".join(json.dumps({"id": f"q{i}", "input": f"What is {i}+1?", "expected": str(i + 1)})
                     for i in range(n)).encode()
    import_dataset(engine, data, "golden.jsonl", "golden")


def _fill_run_form(at: AppTest, url: str, name: str) -> None:
    for side, model in (("baseline", "openai/old-model"), ("candidate", "openai/new-model")):
        at.text_input(key=f"run_{side}_model").set_value(model)
        at.text_input(key=f"run_{side}_api_base").set_value(url)
    at.run()  # the prompt stack and options appear once both models are named
    at.text_area(key="run_system_prompt").set_value("Answer briefly.")
    at.text_input(key="run_name").set_value(name).run()


def test_run_page_runs_a_comparison_against_a_real_server(engine, llm_server) -> None:
    _import_golden(engine)
    at = _app().run()
    at.switch_page("pages/run.py").run()
    _fill_run_form(at, llm_server.url, "live")
    assert any("unknown" in m.value for m in at.markdown), "a custom model's price is unknown, never $0"
    at.button(key="run_start").click().run(timeout=120)
    assert not at.exception, at.exception
    from lib.review.comparisons import list_comparisons

    (row,) = list_comparisons(engine)
    assert (row["name"], row["status"], row["n_errors"]) == ("live", "complete", 0)
    assert llm_server.calls() == 8  # 4 cases x 2 models


def test_run_page_resumes_an_interrupted_run_with_its_stored_configuration(engine, llm_server) -> None:
    _import_golden(engine)
    llm_server.add_fault("500", fraction=1.0, model="new-model")  # every candidate call fails
    at = _app().run()
    at.switch_page("pages/run.py").run()
    _fill_run_form(at, llm_server.url, "flaky")
    at.number_input(key="run_max_retries").set_value(0)
    at.button(key="run_start").click().run(timeout=120)
    assert at.warning, "errors after retries are reported"
    llm_server.clear_faults()
    calls_before = llm_server.calls()
    at = _app().run()
    at.switch_page("pages/run.py").run()
    assert at.selectbox(key="run_resume_name").value == "flaky"
    at.button(key="run_resume").click().run(timeout=120)
    assert not at.exception, at.exception
    assert llm_server.calls() - calls_before == 4  # only the failed candidate calls were sent again
    from lib.review.comparisons import list_comparisons

    assert list_comparisons(engine)[0]["status"] == "complete"
