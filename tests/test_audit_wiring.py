"""The data path leaves its trail: imports, runs and loads append to the hash chain, and verify passes."""
from __future__ import annotations

import json

from sqlmodel import Session, select

from lib.data.golden import import_dataset
from lib.data.loaders import LoadMapping, load_recorded
from lib.governance.verify import verify_store
from lib.run.runner import ModelSpec, RunOptions, run_comparison
from lib.store.entities import AuditEvent
from tests.llm_server import LLMServer


def _kinds(engine) -> list[str]:
    with Session(engine) as s:
        return [e.kind for e in s.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()]


def test_import_run_and_load_are_audit_events(engine, llm_server: LLMServer) -> None:
    data = "\n".join(json.dumps({"id": f"q{i}", "input": f"{i}+1?", "expected": str(i + 1)}) for i in range(3))
    import_dataset(engine, data.encode(), "g.jsonl", "g")
    import_dataset(engine, data.encode(), "g.jsonl", "g")  # unchanged: no new version, no event
    specs = [ModelSpec(model=m, api_base=llm_server.url) for m in ("openai/a", "openai/b")]
    run_comparison(engine, dataset="g", baseline=specs[0], candidate=specs[1], name="live", options=RunOptions())
    load_recorded(engine, b"id,input,x,y\n1,hi,hello,hey\n", "w.csv", "rec", "wide",
                  LoadMapping(id_col="id", input_col="input", baseline_col="x", candidate_col="y"))
    assert _kinds(engine) == ["dataset_imported", "run_started", "run_started", "run_finished", "run_finished",
                              "dataset_imported", "comparison_loaded"]
    result = verify_store(engine)
    assert not result.problems, result.problems
