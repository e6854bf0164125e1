"""Recordings: export -> import round trip, idempotence, and malformed files rejected whole."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from lib.data.golden import import_dataset
from lib.data.recording import export_recording, import_recording, load_recording
from lib.errors import ComparisonNotFound, RecordedLoadError
from lib.store.columns import to_json
from lib.store.engine import get_engine, session_scope
from lib.store.entities import Case, Comparison, Dataset, ModelConfig, Output, Run

DATASET = (
    b'{"id": "q1", "input": "What is 2 + 2?", "expected": "4", "match": "numeric", "category": "math"}\n'
    b'{"id": "q2", "input": "Capital of France?", "expected": "Paris", "match": "contains", '
    b'"category": "facts"}\n'
    b'{"id": "q3", "input": "Return JSON with a key \\"name\\". Text: Ann.", "category": "json", '
    b'"schema": {"type": "object", "required": ["name"]}}\n'
)
TABLES = (Dataset, Case, ModelConfig, Run, Output, Comparison)
OUTPUT_COLUMNS = ("text", "finish_reason", "latency_s", "prompt_tokens", "completion_tokens", "cost_usd",
                  "error", "error_kind", "attempts", "system_fingerprint", "served_model", "logged_at")
T0 = datetime(2025, 11, 20, 9, 30, tzinfo=UTC)


def _config(session: Session, model: str, digest: str) -> int:
    cfg = ModelConfig(config_hash=digest, model=model, api_base="http://127.0.0.1:8765/v1", temperature=0.0,
                      max_tokens=64, seed=7, system_prompt="Answer briefly.", prompt_template="Q: {{input}}",
                      response_format_json=to_json({"type": "text"}), extra_json=to_json({"repeat_penalty": 1.0}))
    session.add(cfg)
    session.flush()
    return cfg.id


def make_comparison(engine, name: str = "q4-vs-q2") -> None:
    """A small live comparison with two repeats, an error output and per-output fingerprints."""
    ds = import_dataset(engine, DATASET, "golden.jsonl", "tiny")
    with session_scope(engine) as session:
        case_ids = dict(session.exec(select(Case.case_key, Case.id).where(Case.dataset_id == ds.dataset_id)).all())
        runs = {}
        for side, model in (("b", "openai/smollm2-q4"), ("c", "openai/smollm2-q2")):
            run = Run(config_id=_config(session, model, f"hash-{side}"), dataset_id=ds.dataset_id,
                      status="partial" if side == "c" else "complete", repeats=2,
                      system_fingerprint=f"fp-{side}", served_model=model.split("/")[1],
                      started_at=T0, finished_at=T0)
            session.add(run)
            session.flush()
            runs[side] = run.id
        for side, run_id in runs.items():
            for key, case_id in case_ids.items():
                for repeat in (0, 1):
                    failed = side == "c" and key == "q3" and repeat == 1
                    session.add(Output(
                        run_id=run_id, case_id=case_id, repeat=repeat,
                        text=None if failed else f"{side} answer to {key} ✓ \"quoted\"\nline 2",
                        finish_reason=None if failed else "stop", latency_s=0.1234567 + repeat,
                        prompt_tokens=None if failed else 12, completion_tokens=None if failed else 5,
                        cost_usd=None, error="HTTP 500 after 4 attempts" if failed else None,
                        error_kind="server" if failed else None, attempts=4 if failed else 1,
                        system_fingerprint=None if failed else (f"fp-{side}" if repeat == 0 else "fp-other"),
                        served_model=None if failed else model_name(side),
                        raw_json='{"id": "resp"}', logged_at=T0 if repeat == 1 else None))
        session.add(Comparison(name=name, baseline_run_id=runs["b"], candidate_run_id=runs["c"],
                               notes_json=to_json({"why": "test"})))


def model_name(side: str) -> str:
    return "smollm2-q4" if side == "b" else "smollm2-q2"


def counts(engine) -> dict[str, int]:
    with Session(engine) as session:
        return {t.__name__: session.exec(select(func.count()).select_from(t)).one() for t in TABLES}


def outputs_by_key(engine, name: str) -> dict[tuple, dict]:
    with Session(engine) as session:
        comp = session.exec(select(Comparison).where(Comparison.name == name)).one()
        rows = {}
        for side, run_id in (("b", comp.baseline_run_id), ("c", comp.candidate_run_id)):
            for out, key in session.exec(select(Output, Case.case_key).join(Case, Case.id == Output.case_id)
                                         .where(Output.run_id == run_id)):
                values = {c: getattr(out, c) for c in OUTPUT_COLUMNS}
                if values["logged_at"] is not None:
                    values["logged_at"] = values["logged_at"].replace(tzinfo=None)
                rows[(key, side, out.repeat)] = values
        return rows


@pytest.fixture
def other_engine(tmp_path):
    return get_engine(f"sqlite:///{tmp_path / 'other.db'}")


def test_export_then_import_reproduces_every_output(engine, other_engine) -> None:
    make_comparison(engine)
    data = export_recording(engine, "q4-vs-q2")
    assert b"raw_json" not in data and b'"resp"' not in data  # no raw response bodies
    name = import_recording(other_engine, data, dataset_data=DATASET, dataset_filename="golden.jsonl")
    assert name == "q4-vs-q2"
    original, imported = outputs_by_key(engine, name), outputs_by_key(other_engine, name)
    assert len(original) == 12 and imported == original


def test_import_recreates_configs_runs_and_comparison(engine, other_engine) -> None:
    make_comparison(engine)
    import_recording(other_engine, export_recording(engine, "q4-vs-q2"), dataset_data=DATASET,
                     dataset_filename="golden.jsonl")
    with Session(other_engine) as session:
        comp = session.exec(select(Comparison)).one()
        base, cand = session.get(Run, comp.baseline_run_id), session.get(Run, comp.candidate_run_id)
        assert (base.source, base.status, cand.status, base.repeats) == ("live", "complete", "partial", 2)
        assert (base.system_fingerprint, cand.served_model) == ("fp-b", "smollm2-q2")
        assert base.started_at.replace(tzinfo=UTC) == T0
        cfg = session.get(ModelConfig, cand.config_id)
        assert (cfg.model, cfg.seed, cfg.max_tokens, cfg.prompt_template) == ("openai/smollm2-q2", 7, 64,
                                                                             "Q: {{input}}")
        assert json.loads(cfg.extra_json) == {"repeat_penalty": 1.0}
        assert json.loads(comp.notes_json)["why"] == "test"
        assert session.get(Dataset, base.dataset_id).name == "tiny"


def test_re_export_of_an_import_has_the_same_outputs(engine, other_engine) -> None:
    make_comparison(engine)
    first = export_recording(engine, "q4-vs-q2")
    import_recording(other_engine, first, dataset_data=DATASET, dataset_filename="golden.jsonl")
    second = export_recording(other_engine, "q4-vs-q2")
    assert first.splitlines()[1:] == second.splitlines()[1:]
    meta1, meta2 = json.loads(first.splitlines()[0]), json.loads(second.splitlines()[0])
    for meta in (meta1, meta2):
        meta.pop("notes")
    assert meta1 == meta2


def test_import_twice_is_a_no_op(engine, other_engine) -> None:
    make_comparison(engine)
    data = export_recording(engine, "q4-vs-q2")
    first = load_recording(other_engine, data, dataset_data=DATASET, dataset_filename="golden.jsonl")
    before = counts(other_engine)
    second = load_recording(other_engine, data, dataset_data=DATASET, dataset_filename="golden.jsonl")
    assert first.created and not second.created
    assert counts(other_engine) == before


def test_import_under_a_new_name_reuses_dataset_and_configs(engine) -> None:
    make_comparison(engine)
    before = counts(engine)
    import_recording(engine, export_recording(engine, "q4-vs-q2"), dataset_data=DATASET,
                     dataset_filename="golden.jsonl", name="copy")
    after = counts(engine)
    assert (after["Dataset"], after["ModelConfig"]) == (before["Dataset"], before["ModelConfig"])
    assert after["Output"] == 2 * before["Output"] and after["Comparison"] == 2
    assert outputs_by_key(engine, "copy") == outputs_by_key(engine, "q4-vs-q2")


def test_a_different_comparison_with_the_same_name_is_refused(engine, other_engine) -> None:
    make_comparison(engine)
    data = export_recording(engine, "q4-vs-q2")
    meta = json.loads(data.splitlines()[0])
    meta["candidate"]["config"]["model"] = "openai/other"
    meta["candidate"]["config"]["config_hash"] = "hash-other"
    altered = b"\n".join([json.dumps(meta).encode(), *data.splitlines()[1:]])
    with pytest.raises(RecordedLoadError, match="different comparison named 'q4-vs-q2'"):
        import_recording(engine, altered, dataset_data=DATASET, dataset_filename="golden.jsonl")


def test_export_of_an_unknown_comparison_is_a_named_error(engine) -> None:
    with pytest.raises(ComparisonNotFound):
        export_recording(engine, "nope")


def _mutate(data: bytes, line: int, new: str | None) -> bytes:
    lines = data.decode().splitlines()
    if new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    return ("\n".join(lines) + "\n").encode()


def _set(data: bytes, line: int, **changes) -> bytes:
    obj = json.loads(data.decode().splitlines()[line - 1])
    obj.update(changes)
    return _mutate(data, line, json.dumps(obj))


BAD = {
    "invalid JSON": (lambda d: _mutate(d, 3, '{"c": "q1", "s": "b", '), 3, "invalid JSON"),
    "not an object": (lambda d: _mutate(d, 4, "[1, 2]"), 4, "expected a JSON object"),
    "unknown side": (lambda d: _set(d, 2, s="x"), 2, "field 's'"),
    "latency as text": (lambda d: _set(d, 5, l="fast"), 5, "field 'l'"),
    "negative repeat": (lambda d: _set(d, 2, r=-1), 2, "field 'r'"),
    "unknown key": (lambda d: _set(d, 2, raw="{}"), 2, "unknown key"),
    "unknown case": (lambda d: _set(d, 6, c="nope"), 6, "case 'nope' is not in the dataset"),
    "duplicate output": (lambda d: _mutate(d, 3, d.decode().splitlines()[1]), 3, "duplicate output"),
    "repeat beyond the run": (lambda d: _set(d, 2, r=5), 2, "beyond the run"),
    "meta missing": (lambda d: _mutate(d, 1, None), 1, "first line must be the meta"),
    "bad status": (lambda d: _mutate(d, 1, json.dumps({**json.loads(d.splitlines()[0]), "baseline": {
        "config": {"config_hash": "h", "model": "m"}, "run": {"status": "weird"}}})), 1, "unknown status"),
    "wrong version": (lambda d: _set(d, 1, version=99), 1, "unsupported recording version"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_malformed_recording_is_refused_and_nothing_is_written(engine, other_engine, case: str) -> None:
    make_comparison(engine)
    mutate, line, message = BAD[case]
    data = mutate(export_recording(engine, "q4-vs-q2"))
    with pytest.raises(RecordedLoadError, match=message) as info:
        import_recording(other_engine, data, dataset_data=DATASET, dataset_filename="golden.jsonl")
    assert info.value.line == line
    assert set(counts(other_engine).values()) == {0}


def test_a_different_dataset_file_is_refused_and_nothing_is_written(engine, other_engine) -> None:
    make_comparison(engine)
    data = export_recording(engine, "q4-vs-q2")
    changed = DATASET.replace(b"Paris", b"Lyon")
    with pytest.raises(RecordedLoadError, match="not the dataset this recording was made on"):
        import_recording(other_engine, data, dataset_data=changed, dataset_filename="golden.jsonl")
    assert set(counts(other_engine).values()) == {0}


def test_an_invalid_dataset_file_is_a_recorded_load_error(engine, other_engine) -> None:
    make_comparison(engine)
    with pytest.raises(RecordedLoadError, match="dataset file is invalid"):
        import_recording(other_engine, export_recording(engine, "q4-vs-q2"), dataset_data=b"{not json\n",
                         dataset_filename="golden.jsonl")
    assert set(counts(other_engine).values()) == {0}
