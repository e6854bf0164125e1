"""A big load's checks in a helper process (lib.review.check_worker): what it stores is exactly what the load
stores checking in-process, a bad file still stores nothing, and a helper that dies leaves the checks to the
load. Chunks are made small (checked.WRITTEN_CHUNK) so a few thousand rows cross several chunk boundaries per side."""
from __future__ import annotations

import csv
import io
import json
import random
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import text

import lib.data.loaders as loaders
import lib.review.checked as checked
from lib.data.loaders import LoadMapping, load_recorded
from lib.errors import RecordedLoadError
from lib.review.check_worker import CheckWorker
from lib.review.settings import ReviewSettings
from lib.store.engine import get_engine

pytestmark = pytest.mark.slow  # a subprocess per load

SCHEMA = json.dumps({"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}})
MODELS = {"baseline": "gpt-4o", "candidate": "gpt-4.1"}


def _answer(rng: random.Random, i: int, side: str) -> tuple[str, str]:
    """(text, error) of one output: plain, refusing, JSON (valid, invalid, wrapped), empty or an error."""
    kind = rng.randrange(9)
    if kind == 0:
        return "I'm sorry, but I can't help with that.", ""
    if kind == 1:
        return json.dumps({"answer": f"{i * 7}", "side": side}), ""
    if kind == 2:
        return f'Here you go: ```json\n{{"answer": {i}}}\n```', ""
    if kind == 3:
        return "", "" if rng.random() < 0.5 else "rate limited (429)"
    if kind == 4:
        return f"The answer is {i * 7}.", ""
    if kind == 5:
        return f"{i * 7}", ""
    return f"Case {i} ({side}): " + " ".join(rng.choice(["alpha", "beta", "gamma", "naïve", "—", "x"])
                                              for _ in range(rng.randrange(1, 30))), ""


def wide_csv(pairs: int, bad_row: int | None = None) -> bytes:
    rng = random.Random(3)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "input", "expected", "category", "baseline", "baseline_error", "baseline_latency_ms",
                     "candidate", "candidate_error", "candidate_latency_ms"])
    for i in range(pairs):
        row = [f"c{i}", "" if i == bad_row else f"Question {i}: what is {i} x 7?",
               str(i * 7) if i % 3 == 0 else "", ["math", "support", "", "extract"][i % 4]]
        for side in MODELS:
            answer, error = _answer(rng, i, side)
            row += [answer, error, str(rng.randint(50, 900))]
        writer.writerow(row)
    return out.getvalue().encode()


def _load(engine: Any, data: bytes, mapping: LoadMapping, helper: bool, monkeypatch: pytest.MonkeyPatch) -> int:
    """Load `data`; returns how many chunks the load checked in-process."""
    in_process = []
    check_outputs = checked.check_outputs

    def counted(*args: Any, **kwargs: Any) -> Any:
        in_process.append(1)
        return check_outputs(*args, **kwargs)

    monkeypatch.setattr(checked, "check_outputs", counted)
    monkeypatch.setattr(checked, "WRITTEN_CHUNK", 700)
    monkeypatch.setattr(loaders, "HELPER_MIN_BYTES", 0 if helper else 1 << 60)
    load_recorded(engine, data, "wide.csv", "cmp", mapping=mapping)
    monkeypatch.undo()
    return len(in_process)


def _stored_checks(engine: Any) -> list[tuple]:
    """Every stored check segment: scope, epochs, extent and its rows (decoded: the Arrow tables compared)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT run_id, other_run_id, key, epoch, other_epoch, n_rows, max_output_id, data "
                                 "FROM checksegment ORDER BY id")).all()
    return [(*r[:7], pa.ipc.open_stream(r[7]).read_all()) for r in rows]


def _counts(engine: Any) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar()
                     for t in ("dataset", "case", "run", "output", "comparison", "checksegment"))


MAPPINGS = {
    "default settings": LoadMapping(**MODELS),
    "models not named (litellm counts)": LoadMapping(),
    "schema, token limit, refusal pattern, rule": LoadMapping(
        **MODELS, match="contains", review=ReviewSettings(schema=SCHEMA, input_token_limit=12,
                                                          refusal_patterns=(r"rate limited",))),
}


@pytest.mark.parametrize("which", list(MAPPINGS))
def test_the_helper_stores_exactly_the_checks_of_an_in_process_load(tmp_path, monkeypatch, which: str) -> None:
    data = wide_csv(2_000)
    mapping = MAPPINGS[which]
    helped, alone = get_engine(f"sqlite:///{tmp_path / 'helped.db'}"), get_engine(f"sqlite:///{tmp_path / 'alone.db'}")
    assert _load(helped, data, mapping, True, monkeypatch) == 0  # every chunk came from the helper
    assert _load(alone, data, mapping, False, monkeypatch) == 2 * 3  # 2,000 outputs a side, 700 a chunk
    new, old = _stored_checks(helped), _stored_checks(alone)
    assert [r[:7] for r in new] == [r[:7] for r in old] and len(new) == 3 + 3 + 1  # a segment a chunk; the pairs
    for (*_, table), (*_, reference) in zip(new, old):
        assert table.equals(reference, check_metadata=True)
    frame = checked.checked_frame(helped, "cmp")
    assert checked.checked_with_counts(helped, "cmp")[1] == checked.CheckCounts(0, 0)  # nothing left to check
    assert frame["b_refused"].any() and frame["c_errored"].any() and frame["b_correct"].any()
    assert frame["c_len_tokens"].notna().any() and frame["similarity"].notna().any()
    if mapping.review is not None:
        assert frame["has_schema"].all() and frame["c_json_strict"].any() and frame["contract"].notna().any()
        assert frame["b_input_over_limit"].any()


def _started(monkeypatch: pytest.MonkeyPatch) -> list[CheckWorker]:
    workers: list[CheckWorker] = []
    start = CheckWorker.start.__func__  # type: ignore[attr-defined]

    def recorded(cls: type[CheckWorker], models: Any) -> CheckWorker | None:
        worker = start(cls, models)
        workers.append(worker)
        return worker

    monkeypatch.setattr(CheckWorker, "start", classmethod(recorded))
    return workers


def test_a_bad_row_stores_nothing_and_stops_the_helper(engine, monkeypatch) -> None:
    workers = _started(monkeypatch)
    monkeypatch.setattr(loaders, "HELPER_MIN_BYTES", 0)
    before = _counts(engine)
    data = wide_csv(2_000, bad_row=1_800)
    line = data.decode()[:data.decode().index("\nc1800,")].count("\n") + 2  # cells span lines
    with pytest.raises(RecordedLoadError, match="field 'input' is missing") as info:
        load_recorded(engine, data, "wide.csv", "cmp", mapping=LoadMapping(**MODELS))
    assert (info.value.line, info.value.field) == (line, "input")
    assert _counts(engine) == before
    assert len(workers) == 1 and workers[0]._process.poll() is not None  # reaped, not left running


def test_a_failed_write_stores_nothing_and_stops_the_helper(engine, monkeypatch) -> None:
    import lib.data.loaders.store as store

    def broken_rows(*args: Any) -> Any:
        raise RuntimeError("disk full")

    workers = _started(monkeypatch)
    monkeypatch.setattr(loaders, "HELPER_MIN_BYTES", 0)
    monkeypatch.setattr(store, "_output_rows", broken_rows)
    before = _counts(engine)
    with pytest.raises(RuntimeError, match="disk full"):
        load_recorded(engine, wide_csv(500), "wide.csv", "cmp", mapping=LoadMapping(**MODELS))
    assert _counts(engine) == before
    assert workers[0].chunks_used == 0 and workers[0]._process.poll() is not None


def test_a_helper_that_dies_leaves_its_chunks_to_the_load(tmp_path, monkeypatch) -> None:
    """Killed as soon as it is handed the outputs: the load checks every chunk itself, and stores the same."""
    data, mapping = wide_csv(1_500), MAPPINGS["default settings"]
    submit = CheckWorker.submit

    def submit_then_die(self: CheckWorker, *args: Any) -> None:
        submit(self, *args)
        self._process.kill()

    alone = get_engine(f"sqlite:///{tmp_path / 'alone.db'}")
    _load(alone, data, mapping, False, monkeypatch)
    monkeypatch.setattr(CheckWorker, "submit", submit_then_die)
    helped = get_engine(f"sqlite:///{tmp_path / 'helped.db'}")
    n_here = _load(helped, data, mapping, True, monkeypatch)
    assert n_here > 0  # the chunks the helper never sent were checked here
    new, old = _stored_checks(helped), _stored_checks(alone)
    assert [r[:7] for r in new] == [r[:7] for r in old]
    assert all(a[7].equals(b[7]) for a, b in zip(new, old))
