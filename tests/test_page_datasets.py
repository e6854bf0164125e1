"""AppTest: the Datasets page: uploads with a column mapping, errors that write nothing."""
from __future__ import annotations

import json

from sqlmodel import Session, func, select

from lib.store.entities import Case, Dataset
from tests.page_helpers import router


def test_datasets_page_imports_an_uploaded_file_with_mapping(engine) -> None:
    data = "\n".join(json.dumps({"qid": f"q{i}", "prompt": f"What is {i}+{i}?", "answer": str(2 * i)})
                     for i in range(5)).encode()
    at = router().run()
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
    at = router().run()
    at.switch_page("pages/datasets.py").run()
    at.file_uploader(key="datasets_upload").set_value(("bad.jsonl", bad, "application/jsonl")).run()
    at.text_input(key="datasets_name").set_value("bad").run()
    at.button(key="datasets_import").click().run()
    assert not at.exception
    assert at.error and "line 2" in at.error[0].value and "match" in at.error[0].value
    with Session(engine) as s:
        assert s.exec(select(func.count(Dataset.id))).one() == 0
