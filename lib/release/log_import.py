"""`log import`: a production log (one model, or several, over time) stored for the timeline.

The file (CSV or JSONL, gzipped too, streamed in chunks; a JSON array or Parquet file read in batches) is
written chunk by chunk inside ONE transaction: a bad line anywhere stores nothing. Every row needs a
timestamp (ISO 8601, epoch seconds or milliseconds, or `timestamp_format`) and an output; input, request
id, latency, tokens, cost, error and metadata are optional. The per-output checks the timeline shows
(refusal, empty, JSON validity of outputs meant as JSON, length) are computed once, here.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.data.answers import answer_texts
from lib.data.loaders import LoadMapping, long
from lib.data.loaders.stream import CHUNK_ROWS, HashingReader, chunk_frame, iter_tables, stream_kind
from lib.data.tables import Table, open_input, read_rows
from lib.errors import NotFoundError, RecordedLoadError
from lib.release.log_entities import ProductionLog
from lib.store.audit import record_event
from lib.store.columns import to_json
from lib.store.engine import session_scope

METADATA_COLS = ("metadata", "meta")


class LogImportError(RecordedLoadError):
    """A production log cannot be imported (names the file, line and field)."""


@dataclass
class _Columns:
    ts: str
    output: str
    model: str | None
    input: str | None
    request_id: str | None
    metadata: str | None
    optional: dict[str, str | None]

    def needed(self) -> list[str | None]:
        return [self.ts, self.output, self.model, self.input, self.request_id, self.metadata,
                *self.optional.values()]


@dataclass
class LogImportResult:
    name: str
    rows: int
    models: dict[str, int]
    first: str | None
    last: str | None
    warnings: list[str] = field(default_factory=list)


def _resolve(table: Table, m: LoadMapping) -> _Columns:
    pick, require = long.pick, long.require
    ts = require(table, pick(table, m.timestamp_col, long.TIMESTAMP_COLS, "timestamp"), long.TIMESTAMP_COLS,
                 "timestamp", "--timestamp-col")
    optional = long.optional_columns(table, m)
    for unused in ("expected", "category", "logged_at"):
        optional.pop(unused)
    return _Columns(ts=ts, output=require(table, pick(table, m.output_col, long.OUTPUT_COLS, "output"),
                                          long.OUTPUT_COLS, "output", "--output-col"),
                    model=pick(table, m.model_col, long.MODEL_COLS, "model"),
                    input=pick(table, m.input_col, long.INPUT_COLS, "input"),
                    request_id=pick(table, m.id_col, long.ID_COLS, "id"),
                    metadata=pick(table, None, METADATA_COLS, "metadata"), optional=optional)


def _tables(raw: IO[bytes], filename: str, chunk_rows: int) -> Iterator[Table]:
    lower = filename.lower()
    if lower.endswith(".parquet"):
        yield from _parquet_tables(raw, filename, chunk_rows)
    elif lower.endswith(".json"):
        yield read_rows(raw.read(), filename, LogImportError)  # a JSON array cannot be streamed
    elif stream_kind(filename, LogImportError)[0] == "csv":
        yield from _csv_tables(raw, filename, chunk_rows)
    else:
        yield from iter_tables(raw, filename, LogImportError, chunk_rows)


@dataclass
class _CsvTable(Table):
    """A chunk parsed by pandas' C reader (4x the csv module's speed at 1M rows): its cells as a frame."""

    data: pd.DataFrame | None = None

    def selected(self, columns: list[str | None]) -> pd.DataFrame:
        present = [c for c in dict.fromkeys(columns) if c is not None]
        df = self.data[present].replace("", None)  # type: ignore[index]
        return df.astype(object).where(df.notna(), None)


def _csv_tables(raw: IO[bytes], filename: str, chunk_rows: int) -> Iterator[Table]:
    """CSV chunks with each row's line (exact unless a quoted cell spans lines: then rows are numbered)."""
    gz = filename.lower().endswith(".gz")
    try:
        reader = pd.read_csv(raw, dtype=str, keep_default_na=False, na_values=[], skip_blank_lines=False,
                             chunksize=chunk_rows, encoding="utf-8-sig", compression="gzip" if gz else None)
        line, row = 2, 0
        for chunk in reader:
            lines = np.arange(line, line + len(chunk))
            line += len(chunk)
            blank = chunk.isna().all(axis=1).to_numpy() | (chunk.fillna("") == "").all(axis=1).to_numpy()
            chunk = chunk[~blank].reset_index(drop=True)
            multiline = any(chunk[c].str.contains("\n", regex=False).any() for c in chunk.columns)
            locs = (lines[~blank] if not multiline else np.arange(row, row + len(chunk))).tolist()
            row += len(chunk)
            yield _CsvTable(filename, [str(c).strip() for c in chunk.columns], [], locs, by_line=not multiline,
                            is_csv=True, error=LogImportError, data=chunk.rename(columns=lambda c: str(c).strip()))
    except pd.errors.EmptyDataError:
        raise LogImportError(filename, "is empty: no header row") from None
    except pd.errors.ParserError as exc:
        raise LogImportError(filename, f"malformed CSV: {exc}") from None
    except UnicodeDecodeError as exc:
        raise LogImportError(filename, f"is not UTF-8 text ({exc.reason})") from None
    except (OSError, EOFError) as exc:
        raise LogImportError(filename, f"cannot be read: {exc}") from None


def _parquet_tables(raw: IO[bytes], filename: str, chunk_rows: int) -> Iterator[Table]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:  # Parquet needs random access: the (compressed) file is held, its rows are read in batches
        pfile = pq.ParquetFile(io.BytesIO(raw.read()))
    except (pa.ArrowInvalid, OSError) as exc:
        raise LogImportError(filename, f"is not a Parquet file ({exc})") from None
    columns, row = pfile.schema_arrow.names, 0
    for batch in pfile.iter_batches(batch_size=chunk_rows):
        records = batch.to_pylist()
        yield Table(filename, columns, records, list(range(row, row + len(records))), by_line=False,
                    is_csv=False, error=LogImportError)
        row += len(records)


def _checks(text: pd.Series, error: pd.Series | None) -> dict[str, pd.Series]:
    from lib.review.checks.lengths import char_lengths, empty_flags
    from lib.review.checks.refusal import RefusalDetector
    from lib.review.checks.structured import json_validity

    answered = text if error is None else text.where(error.isna())
    # JSON validity is judged on outputs meant as JSON (they open with {, [ or a code fence): a chat log
    # has no JSON rate rather than a flat 0%.
    opening = answered.astype("string").str.lstrip().str[:3]
    meant = (opening.str[:1].isin(["{", "["]) | (opening == "```")).fillna(False).astype(bool)
    valid = pd.Series(pd.NA, index=text.index, dtype="boolean")
    if meant.any():  # only these are parsed: most of a chat log is not JSON
        valid[meant] = json_validity(answered[meant], pd.Series("{}", index=answered[meant].index))["strict"]
    return {"refused": RefusalDetector().flags(answered), "empty": empty_flags(answered), "json_valid": valid,
            "length_chars": char_lengths(answered)}


def _plain(series: pd.Series) -> list:
    return series.astype(object).where(series.notna(), None).tolist()


@dataclass
class _State:
    rows: int = 0
    models: dict[str, int] = field(default_factory=dict)
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None


def _sqlite_times(stamps: pd.Series) -> list:
    """UTC times as SQLAlchemy stores a DateTime in SQLite ('YYYY-MM-DD HH:MM:SS.ffffff'), vectorised."""
    text = np.datetime_as_string(stamps.dt.tz_convert(None).to_numpy(dtype="datetime64[us]"), unit="us")
    return np.char.replace(text, "T", " ").tolist()


def _insert(conn: Any, columns: dict[str, list]) -> None:
    """One executemany on the DB-API cursor: SQLAlchemy's per-row parameter processing cost more than the
    insert itself (the values are plain Python values already, in the column types SQLite stores)."""
    names = list(columns)
    sql = f"INSERT INTO logrecord ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    conn.connection.driver_connection.executemany(sql, zip(*columns.values()))


def _rows(table: Table, cols: _Columns, m: LoadMapping, log_id: int, state: _State) -> dict[str, list]:
    if isinstance(table, _CsvTable):
        df = table.selected(cols.needed())
    else:
        df = chunk_frame(table, cols.needed(), keep_blank=(cols.output,))
    if df.empty:
        return {}
    stamps = long.timestamps(table, df, cols.ts, m.timestamp_format)
    values = long.read_columns(table, df, cols.optional, m)
    error = values.get("error")
    text = long.answered_text(answer_texts(df[cols.output], cols.output)[0], error)
    models = df[cols.model].map(lambda v: None if v is None else str(v)) if cols.model else pd.Series(
        "(unnamed)", index=df.index)
    if models.isna().any():
        table.fail(int(df.index[models.isna().to_numpy().argmax()]), "is empty", field=cols.model)
    columns: dict[str, list] = {"ts": _sqlite_times(stamps), "model": models.tolist(), "output_text": _plain(text)}
    if cols.input:
        columns["input_text"] = _plain(df[cols.input].map(lambda v: v if v is None or isinstance(v, str)
                                                          else to_json(v)))
    if cols.request_id:
        ids = df[cols.request_id].map(lambda v: None if v is None else str(v).strip() or None)
        columns["request_id"] = _plain(ids)
    if cols.metadata:
        columns["metadata_json"] = _plain(df[cols.metadata].map(lambda v: v if v is None or isinstance(v, str)
                                                                else to_json(v)))
    if error is not None:
        columns["error"] = _plain(error.map(lambda v: None if v is None else str(v)))
    for name in ("latency_s", "cost_usd", "prompt_tokens", "completion_tokens"):
        if name in values:
            columns[name] = _plain(values[name])
    columns.update({name: _plain(v) for name, v in _checks(text, error).items()})
    _track(state, stamps, models)
    columns = {"log_id": [log_id] * len(df), **columns}
    return columns


def _track(state: _State, stamps: pd.Series, models: pd.Series) -> None:
    state.rows += len(stamps)
    for model, n in models.value_counts().items():
        state.models[str(model)] = state.models.get(str(model), 0) + int(n)
    low, high = stamps.min(), stamps.max()
    state.first = low if state.first is None else min(state.first, low)
    state.last = high if state.last is None else max(state.last, high)


def import_log(engine: Engine, raw: IO[bytes], filename: str, name: str, mapping: LoadMapping | None = None,
               chunk_rows: int = CHUNK_ROWS, progress: Callable[[int], None] | None = None) -> LogImportResult:
    """Store a production log named `name`; one transaction (a bad row stores nothing)."""
    m = mapping or LoadMapping()
    name = name.strip()
    if not name:
        raise LogImportError(filename, "the log name is empty")
    with Session(engine) as session:
        if session.exec(select(ProductionLog.id).where(ProductionLog.name == name)).first() is not None:
            raise LogImportError(filename, f"a log named '{name}' already exists; pick another name")
    reader = HashingReader(raw)
    tables = _tables(io.BufferedReader(reader), filename, chunk_rows)
    first = next(tables)
    cols = _resolve(first, m)
    state = _State()
    warnings = [] if cols.input else [long.NO_INPUT_WARNING]
    if cols.model is None:
        warnings.append("no model column: every row is recorded as model '(unnamed)'")
    with session_scope(engine) as session:
        log = ProductionLog(name=name, source=filename, has_input=cols.input is not None)
        session.add(log)
        session.flush()
        assert log.id is not None  # flushed
        conn = session.connection()
        for table in _chain(first, tables):
            columns = _rows(table, cols, m, log.id, state)
            if columns:
                _insert(conn, columns)
            if progress is not None:
                progress(state.rows)
        if state.rows == 0:
            raise LogImportError(filename, "has no rows")
        notes = {"columns": {k: v for k, v in vars(cols).items() if k != "optional"} | cols.optional,
                 "warnings": warnings, "models": state.models}
        log.sha256, log.n_rows, log.notes_json = reader.sha256.hexdigest(), state.rows, to_json(notes)
        session.add(log)
        record_event(session, "log_imported", {"log": name, "source": filename, "rows": state.rows,
                                               "sha256": reader.sha256.hexdigest()})
    return LogImportResult(name, state.rows, state.models, _iso(state.first), _iso(state.last), warnings)


def import_log_file(engine: Engine, path: Path, name: str, mapping: LoadMapping | None = None,
                    progress: Callable[[int], None] | None = None) -> LogImportResult:
    with open_input(path, LogImportError) as raw:
        return import_log(engine, raw, path.name, name, mapping, progress=progress)


def get_log(session: Session, name: str) -> ProductionLog:
    log = session.exec(select(ProductionLog).where(ProductionLog.name == name)).first()
    if log is None:
        known = session.exec(select(ProductionLog.name)).all()
        raise NotFoundError(f"no log named '{name}' (imported logs: {', '.join(known) or 'none'}; "
                            "import one with `./review log import FILE --name NAME`)")
    return log


def _iso(value: pd.Timestamp | None) -> str | None:
    return None if value is None else value.isoformat()


def _chain(first: Table, rest: Iterator[Table]) -> Iterator[Table]:
    yield first
    yield from rest


def list_logs(engine: Engine) -> list[dict[str, Any]]:
    """Imported logs, newest first: name, source, rows, models, first and last timestamps."""
    from lib.store.columns import from_json

    with Session(engine) as session:
        logs = session.exec(select(ProductionLog).order_by(ProductionLog.id.desc())).all()  # type: ignore[union-attr]
        return [{"name": log.name, "source": log.source, "rows": log.n_rows, "has_input": log.has_input,
                 "models": (from_json(log.notes_json) or {}).get("models", {}), "created_at": log.created_at}
                for log in logs]
