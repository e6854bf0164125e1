"""Ingest at disk speed (#17): dataset imports read in chunks and written in batches store exactly what
the whole-file path stored, with the same errors, and never read a file whole; recorded loads write the
same output rows as SQLAlchemy's Core insert did."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES
from sqlalchemy import insert, text
from sqlmodel import Session

from lib.data import table_stream
from lib.data.fields import (
    _MISSING,
    InvalidField,
    _metadata,
    _schema,
    case_key,
    check_rule,
    coerce_input,
    content_key,
    scalar_text,
    text_or_json,
)
from lib.data.golden import CaseRecord, ColumnMapping, _resolve_columns, import_dataset, import_dataset_file
from lib.data.tables import read_rows
from lib.errors import DatasetImportError
from lib.store.columns import to_json

# ---------------------------------------------------------------- the whole-file path, as it was

def _old_row_case(record: dict[str, Any], cols: dict[str, str | None]) -> CaseRecord:
    def get(name: str) -> Any:
        column = cols[name]
        return None if column is None else record.get(column, _MISSING)

    input_text, messages = coerce_input(get("input"))
    expected = text_or_json(get("expected"))
    rule, pattern = check_rule(get("match"), get("pattern"), expected)
    case = CaseRecord(key="", input_text=input_text, messages=messages, expected=expected, match=rule,
                      pattern=pattern, json_schema=_schema(get("schema")),
                      category=scalar_text(get("category"), "category"), metadata=_metadata(get("metadata")))
    case.key = case_key(get("id")) if cols["id"] else content_key(case.canonical())
    return case


def _old_import(data: bytes, filename: str, mapping: ColumnMapping | None = None) -> tuple[str, list[dict]]:
    """(content hash, Case rows) as the whole-file import computed them."""
    table = read_rows(data, filename)
    cols = _resolve_columns(table, mapping or ColumnMapping())
    if not table.records:
        table.fail_header("has no cases")
    cases, first_row = [], {}
    for row, record in enumerate(table.records):
        try:
            case = _old_row_case(record, cols)
        except InvalidField as exc:
            table.fail(row, exc.message, field=exc.field)
        if case.key in first_row:
            first = f"{'line' if table.by_line else 'item'} {table.locs[first_row[case.key]]}"
            if cols["id"]:
                table.fail(row, f"repeats id '{case.key}' (first at {first})", field="id")
            table.fail(row, f"duplicate case: same content as {first} (add an id column to keep both)")
        first_row[case.key] = row
        cases.append(case)
    digest = hashlib.sha256(to_json([c.canonical() for c in cases]).encode()).hexdigest()
    return digest, [c.row(0, i) for i, c in enumerate(cases)]


def _stored(engine, dataset_id: int) -> tuple[str, int, list[dict]]:
    with engine.connect() as conn:
        digest, n = conn.execute(text("SELECT content_hash, n_cases FROM dataset WHERE id = :d"),
                                 {"d": dataset_id}).one()
        rows = conn.execute(text('SELECT * FROM "case" WHERE dataset_id = :d ORDER BY id'), {"d": dataset_id})
        cases = [{k: v for k, v in r._mapping.items() if k != "id"} | {"dataset_id": 0} for r in rows]
    return digest, n, cases


def _mixed_jsonl(n: int) -> bytes:
    """Every field kind: chats, JSON expected values, rules, schemas, metadata, unicode, blank cells."""
    lines = []
    for i in range(n):
        row: dict[str, Any] = {"id": i if i % 2 else f"k{i}", "input": f"Frage {i} \u00fcber \u2028 \"x\""}
        if i % 4 == 0:
            row["input"] = [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "ok"}]
        if i % 3 == 0:
            row.update(expected=str(i), match="numeric")
        elif i % 3 == 1:
            row.update(expected={"a": [i, 1.5, None]}, schema={"type": "object"})
        if i % 5 == 0:
            row.update(metadata={"z": 1, "a": {"b": "\u00e9"}}, category="  ")
        elif i % 5 == 1:
            row.update(category=i, match="regex", pattern=r"(\d+)", expected="7")
        lines.append(json.dumps(row, ensure_ascii=i % 2 == 0))
    return ("\n".join(lines) + "\n").encode()


SAMPLES = [
    ("golden_support.jsonl", (FIXTURES / "golden_support.jsonl").read_bytes(), None),
    ("golden_support.csv", (FIXTURES / "golden_support.csv").read_bytes(), None),
    ("golden_support.json", (FIXTURES / "golden_support.json").read_bytes(), None),
    ("quiz.csv", (FIXTURES / "golden_custom_columns.csv").read_bytes(),
     ColumnMapping(id=None, input="question", expected="answer", category="topic")),
    ("mixed.jsonl", _mixed_jsonl(50), None),
    ("keyless.csv", b'input,expected\n"two\nlines",2\n"say ""hi""",x\n  ,  \nplain,\n', ColumnMapping(id=None)),
]


@pytest.mark.parametrize(("filename", "data", "mapping"), SAMPLES, ids=[s[0] for s in SAMPLES])
@pytest.mark.parametrize("chunk_rows", [2, 20_000])
def test_chunked_import_stores_what_the_whole_file_import_stored(engine, monkeypatch, filename: str, data: bytes,
                                                                 mapping: ColumnMapping | None,
                                                                 chunk_rows: int) -> None:
    monkeypatch.setattr(table_stream, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(table_stream, "BLOCK", 64)  # blocks end inside rows, quotes and UTF-8 sequences
    digest, rows = _old_import(data, filename, mapping)
    result = import_dataset(engine, data, filename, "d", mapping)
    assert _stored(engine, result.dataset_id) == (digest, len(rows), rows)
    again = import_dataset(engine, data, "renamed" + Path(filename).suffix, "d", mapping)
    assert (again.created, again.dataset_id) == (False, result.dataset_id)
    with Session(engine) as s:
        assert s.connection().execute(text('SELECT count(*) FROM "case"')).scalar() == len(rows)


BAD_LATER = [  # (filename, data, fragment): the fault sits in a later chunk or block
    ("late-field.csv", b"id,input\n" + b"".join(b"%d,q%d\n" % (i, i) for i in range(9)) + b"9,\n",
     "late-field.csv, line 11: field 'input' is empty"),
    ("late-dup.jsonl",
     b"".join(b'{"id": "k%d", "input": "q"}\n' % i for i in range(7)) + b'{"id": "k1", "input": "q"}\n',
     "late-dup.jsonl, line 8: field 'id' repeats id 'k1' (first at line 2)"),
    ("late-quote.csv", b"id,input\n" + b"".join(b"%d,q\n" % i for i in range(8)) + b'8,"open\n9,x\n10,y\n',
     "late-quote.csv, line 10: unbalanced quote"),
    ("late-byte.csv", b"id,input\n" + b"".join(b"%d,caf\xc3\xa9\n" % i for i in range(30)) + b"30,caf\xe9\n",
     "late-byte.csv, line 32: is not UTF-8 text (byte 0xe9)"),
    ("late-json.jsonl", b"".join(b'{"id": %d, "input": "q"}\n' % i for i in range(6)) + b'{"id": 6, "input": \n',
     "late-json.jsonl, line 7: invalid JSON"),
    ("late-cells.csv", b"id,input\n" + b"".join(b"%d,q\n" % i for i in range(5)) + b"5,a,b\n",
     "late-cells.csv, line 7: row has 3 cells but the header has 2"),
]


@pytest.mark.parametrize(("filename", "data", "fragment"), BAD_LATER, ids=[b[0] for b in BAD_LATER])
def test_a_fault_in_a_later_chunk_is_named_as_before_and_writes_nothing(engine, monkeypatch, filename: str,
                                                                      data: bytes, fragment: str) -> None:
    monkeypatch.setattr(table_stream, "CHUNK_ROWS", 3)
    monkeypatch.setattr(table_stream, "BLOCK", 16)
    with pytest.raises(DatasetImportError) as whole:
        _old_import(data, filename)
    with pytest.raises(DatasetImportError) as streamed:
        import_dataset(engine, data, filename, "d")
    assert fragment in str(streamed.value) and str(streamed.value) == str(whole.value)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM dataset")).scalar() == 0
        assert conn.execute(text('SELECT count(*) FROM "case"')).scalar() == 0


def test_a_mapped_column_first_met_in_a_later_jsonl_chunk_reads_the_file_whole(engine, monkeypatch) -> None:
    """Which columns the mapping picks depends on every row; a later key that changes it is honoured."""
    monkeypatch.setattr(table_stream, "CHUNK_ROWS", 2)
    data = b'{"id": "a", "input": "q"}\n{"id": "b", "input": "q2"}\n{"id": "c", "input": "q3", "category": "x"}\n'
    digest, rows = _old_import(data, "c.jsonl")
    assert _stored(engine, import_dataset(engine, data, "c.jsonl", "d").dataset_id) == (digest, 3, rows)
    named = b'{"id": "a", "input": "q"}\n{"id": "b", "input": "q2"}\n{"id": "c", "prompt": "q3"}\n'
    with pytest.raises(DatasetImportError, match="line 1: field 'input' is missing"):
        import_dataset(engine, named, "n.jsonl", "n", ColumnMapping(input="prompt"))


class _Reads(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.largest = 0

    def read(self, size: int | None = -1) -> bytes:
        self.largest = max(self.largest, len(chunk := super().read(size)))
        return chunk


@pytest.mark.parametrize("filename", ["big.csv", "big.jsonl"])
def test_import_never_reads_the_file_whole(engine, monkeypatch, filename: str) -> None:
    from lib.data.golden import import_dataset_stream

    monkeypatch.setattr(table_stream, "BLOCK", 4096)
    monkeypatch.setattr(table_stream, "CHUNK_ROWS", 500)
    if filename.endswith(".csv"):
        data = b"id,input\n" + b"".join(b"%d,question %d %s\n" % (i, i, b"x" * 80) for i in range(5000))
    else:
        data = b"".join(b'{"id": %d, "input": "question %s"}\n' % (i, b"x" * 80) for i in range(5000))
    raw = _Reads(data)
    assert import_dataset_stream(engine, raw, filename, "big").n_cases == 5000
    assert len(data) > 400_000 and raw.largest <= 4096


def test_the_collector_paused_for_an_import_runs_again_after_it(engine, monkeypatch) -> None:
    """gc_paused: no cyclic collection while rows are parsed and written, on again after (a failed import too);
    a collector the caller had turned off stays off."""
    import gc

    seen = []
    parse = table_stream.iter_row_tables

    def watched(*args: Any, **kwargs: Any) -> Any:
        for chunk in parse(*args, **kwargs):
            seen.append(gc.isenabled())
            yield chunk

    monkeypatch.setattr("lib.data.golden.iter_row_tables", watched)
    assert import_dataset(engine, b"id,input\na,q\n", "ok.csv", "d").n_cases == 1
    with pytest.raises(DatasetImportError, match="repeats id 'a'"):
        import_dataset(engine, b"id,input\na,q\na,r\n", "bad.csv", "e")
    assert seen == [False, False] and gc.isenabled()
    gc.disable()
    try:
        import_dataset(engine, b"id,input\nb,q\n", "off.csv", "f")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_import_dataset_file_names_a_missing_path(engine, tmp_path: Path) -> None:
    with pytest.raises(DatasetImportError, match="no such file"):
        import_dataset_file(engine, tmp_path / "nope.csv", "d")
    with pytest.raises(DatasetImportError, match="is a directory"):
        import_dataset_file(engine, tmp_path, "d")


# ---------------------------------------------------------------- recorded loads: the output rows

def _core_insert_rows(outputs, case_ids: dict[int, int], run_ids: dict[str, int]) -> list[dict]:
    """The output rows as the Core insert wrote them (dicts; SQLAlchemy converts the datetimes)."""
    import numpy as np
    import pandas as pd

    from lib.data.loaders.store import _values
    from lib.store.columns import utcnow

    error = outputs["error"]
    logged_at = pd.to_datetime(outputs["logged_at"], utc=True)
    columns = {
        "run_id": _values(outputs["side"].map(run_ids)), "case_id": _values(outputs["position"].map(case_ids)),
        "repeat": _values(outputs["repeat"]), "text": _values(outputs["text"]), "error": _values(error),
        "error_kind": _values(error.where(error.isna(), "other")),
        "latency_s": _values(pd.to_numeric(outputs["latency_s"])),
        "cost_usd": _values(pd.to_numeric(outputs["cost_usd"])),
        "prompt_tokens": _values(pd.to_numeric(outputs["prompt_tokens"]).astype("Int64")),
        "completion_tokens": _values(pd.to_numeric(outputs["completion_tokens"]).astype("Int64")),
        "logged_at": np.where(logged_at.notna(), logged_at.array.to_pydatetime(), None).tolist(),
    }
    columns = {name: values for name, values in columns.items() if any(v is not None for v in values)}
    return [{"attempts": 1, "created_at": utcnow(), **dict(zip(columns, row))} for row in zip(*columns.values())]


@pytest.mark.parametrize("fixture", ["wide.csv", "long.csv"])
def test_recorded_outputs_are_stored_as_the_core_insert_stored_them(engine, monkeypatch, fixture: str) -> None:
    import lib.data.loaders.store as store
    from lib.data.loaders import LoadMapping, load_recorded
    from lib.store.engine import get_engine
    from lib.store.entities import Output

    data = (FIXTURES / fixture).read_bytes()
    mapping = LoadMapping()
    if fixture == "long.csv":  # timestamps too
        mapping = LoadMapping(baseline="gpt-4o-2024-08-06", candidate="gpt-4.1-2025-04-14")
    load_recorded(engine, data, fixture, "new", mapping=mapping)
    other = get_engine(str(engine.url).replace(".db", "-old.db"))
    captured: list = []

    def old_store(outputs: Any, columns: dict, case_ids: dict, run_ids: dict, dialect: Any) -> tuple[str, list]:
        captured.append(_core_insert_rows(outputs, case_ids, run_ids))
        return "SELECT 1", []  # inserted below, after the load, as the Core insert did

    monkeypatch.setattr(store, "_output_rows", old_store)
    load_recorded(other, data, fixture, "new", mapping=mapping)
    with other.begin() as conn:
        conn.execute(insert(Output.__table__), captured[0])

    def rows(eng: Any) -> list[tuple]:
        with eng.connect() as conn:
            got = conn.execute(text("SELECT * FROM output ORDER BY id")).all()
        return [tuple(v for k, v in r._mapping.items() if k not in ("id", "created_at")) for r in got]

    assert rows(engine) == rows(other) and len(rows(engine)) > 0
    with engine.connect() as conn, other.connect() as conn_old:  # the same text format of timestamps
        new_at = conn.execute(text("SELECT created_at, logged_at FROM output LIMIT 1")).one()
        old_at = conn_old.execute(text("SELECT created_at, logged_at FROM output LIMIT 1")).one()
    assert [len(str(v)) if v else None for v in new_at] == [len(str(v)) if v else None for v in old_at]


@pytest.mark.slow
def test_a_killed_import_leaves_the_store_as_it_was(db_url: str, engine, tmp_path: Path) -> None:
    """kill -9 in the middle of writing a big import: what was committed before is intact, nothing of the
    killed import is there, and the store passes SQLite's integrity check."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    first = import_dataset(engine, (FIXTURES / "golden_support.csv").read_bytes(), "golden_support.csv", "kept")
    big = tmp_path / "big.csv"
    with big.open("w") as f:
        f.write("id,input,category\n")
        f.writelines(f"case-{i},question {i} {'x' * 60},c{i % 7}\n" for i in range(600_000))
    env = {**os.environ, "DATABASE_URL": db_url}
    proc = subprocess.Popen([sys.executable, "-m", "lib", "dataset", "import", str(big), "--name", "big"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wal = Path(db_url.removeprefix("sqlite:///") + "-wal")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and (not wal.exists() or wal.stat().st_size < 8e6):
        time.sleep(0.05)
    assert proc.poll() is None, "the import ended before it could be killed mid-write"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    engine.dispose()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert conn.execute(text("SELECT id, name FROM dataset")).all() == [(first.dataset_id, "kept")]
        assert conn.execute(text('SELECT count(*) FROM "case"')).scalar() == first.n_cases


@pytest.mark.parametrize("fixture", ["wide.csv", "long.csv"])
def test_a_load_checks_its_outputs_as_they_read_back_from_the_store(engine, monkeypatch, fixture: str) -> None:
    """A load checks its outputs from the values it wrote (no read back): they must be exactly what reading
    them back gives, and the stored checks what checking the read-back outputs stores."""
    import pandas as pd

    import lib.review.checked as checked
    from lib.data.loaders import LoadMapping, load_recorded
    from lib.review.settings import ReviewSettings

    seen: dict = {}
    ensure = checked.ensure_checked

    def watched(engine: Any, name: str, settings: Any = None, written: Any = None, checker: Any = None) -> Any:
        seen.update(written or {})
        return ensure(engine, name, settings, written, checker or checked.check_here)

    monkeypatch.setattr(checked, "ensure_checked", watched)
    mapping = LoadMapping(review=ReviewSettings(input_token_limit=50))  # inputs too
    if fixture == "long.csv":
        mapping.baseline, mapping.candidate = "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14"
    load_recorded(engine, (FIXTURES / fixture).read_bytes(), fixture, "w", mapping=mapping)
    assert len(seen) == 2
    with engine.connect() as conn:
        for run, values in seen.items():
            pd.testing.assert_frame_equal(checked.written_outputs(values),
                                          checked._read_outputs(conn, run, -1, with_inputs=True))
    stored = checked.checked_frame(engine, "w")
    with engine.begin() as conn:  # forget the stored checks: computed again from the store's rows
        conn.execute(text("DELETE FROM checksegment"))
    assert checked.checked_with_counts(engine, "w")[1].outputs_checked > 0  # checked and stored again
    pd.testing.assert_frame_equal(stored, checked.checked_frame(engine, "w"))  # both read from the store
