"""Golden datasets: validated cases stored as immutable, content-hashed versions.

The tabular reader (`lib.data.tables`) and the field checks (`lib.data.fields`) are shared with
`lib.data.loaders`, which build the dataset of a recorded comparison the same way."""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from itertools import chain
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy import func, insert, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

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
from lib.data.table_stream import gc_paused, iter_row_tables
from lib.data.tables import Table, open_input, read_rows
from lib.errors import DatasetImportError, DatasetNotFound
from lib.store.audit import record_event
from lib.store.columns import to_json, utcnow
from lib.store.engine import session_scope
from lib.store.entities import Dataset, Run
from lib.store.inserts import BackgroundInserts
from lib.store.rows import get_row, id_of

# ---------------------------------------------------------------- cases

CASE_FIELDS = ("dataset_id", "case_key", "position", "input_text", "messages_json", "expected", "match", "pattern",
               "json_schema", "category", "metadata_json")  # the Case table's columns a dataset file fills


@dataclass
class CaseRecord:
    """One validated case, before it is stored."""

    key: str
    input_text: str
    messages: list[dict[str, Any]] | None = None
    expected: str | None = None
    match: str | None = None
    pattern: str | None = None
    json_schema: str | None = None  # JSON text
    category: str | None = None
    metadata: dict[str, Any] | None = None

    def canonical(self) -> dict[str, Any]:
        return {"key": self.key, "input": self.input_text, "messages": self.messages,
                "expected": self.expected, "match": self.match, "pattern": self.pattern,
                "schema": self.json_schema, "category": self.category, "metadata": self.metadata}

    def values(self, dataset_id: int, position: int) -> tuple[Any, ...]:
        """Column values of the Case table, in CASE_FIELDS order."""
        return (dataset_id, self.key, position, self.input_text, to_json(self.messages), self.expected, self.match,
                self.pattern, self.json_schema, self.category, to_json(self.metadata))

    def row(self, dataset_id: int, position: int) -> dict[str, Any]:
        """Column values of the Case table, by name."""
        return dict(zip(CASE_FIELDS, self.values(dataset_id, position)))


_encode = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes for a string


def _text(value: str | None) -> str:
    return "null" if value is None else _encode(value)


def canonical_json(case: CaseRecord) -> str:
    """`to_json(case.canonical())`, written directly (keys in sorted order): the hashes' per-case cost."""
    return (f'{{"category": {_text(case.category)}, "expected": {_text(case.expected)}, '
            f'"input": {_encode(case.input_text)}, "key": {_encode(case.key)}, "match": {_text(case.match)}, '
            f'"messages": {to_json(case.messages) or "null"}, "metadata": {to_json(case.metadata) or "null"}, '
            f'"pattern": {_text(case.pattern)}, "schema": {_text(case.json_schema)}}}')


def content_hash(cases: list[CaseRecord]) -> str:
    """sha256 of the canonical case list (order included): equal hashes mean the same dataset."""
    return hashlib.sha256(("[" + ", ".join(map(canonical_json, cases)) + "]").encode()).hexdigest()


@dataclass
class ColumnMapping:
    """Source column names in the uploaded file (None: the file has no such column)."""

    id: str | None = "id"
    input: str = "input"
    expected: str | None = "expected"
    match: str | None = "match"
    pattern: str | None = "pattern"
    schema: str | None = "schema"
    category: str | None = "category"
    metadata: str | None = "metadata"


def _resolve_columns(table: Table, mapping: ColumnMapping) -> dict[str, str | None]:
    """field -> column present in the file. A column the user named that is absent is an error;
    a default name that is absent just means the file does not have that field."""
    defaults, resolved = ColumnMapping(), {}
    for f in fields(ColumnMapping):
        column = getattr(mapping, f.name)
        if column is not None and column not in table.columns:
            if f.name == "input" or column != getattr(defaults, f.name):
                table.missing_column(column, f.name)
            column = None
        resolved[f.name] = column
    return resolved


def _blank(value: Any) -> bool:
    return value is None or value is _MISSING or (type(value) is str and not value.strip())


def _input(value: Any) -> tuple[str, list[dict[str, Any]] | None]:
    # a plain prompt without a leading "[" (the common row) is what coerce_input returns it as
    if type(value) is str and value.strip() and not value.lstrip().startswith("["):
        return value, None
    return coerce_input(value)


_FIELDS = ("input", "expected", "match", "pattern", "schema", "category", "metadata", "id")


def _blank_cell(value: Any) -> bool:  # `_blank` of a value from record.get (None for an absent key)
    return value is None or (type(value) is str and not value.strip())


def _text_column(records: list[dict[str, Any]], column: str | None) -> list[str | None] | None:
    """A text field's values as `_row_case` stores them (blank -> None), or None if a cell is not text."""
    if column is None:
        return [None] * len(records)
    values = [r.get(column) for r in records]
    if not all(v is None or type(v) is str for v in values):
        return None
    return [v if v is not None and v.strip() else None for v in values]


def _row_case(record: dict[str, Any], columns: tuple[str | None, ...]) -> CaseRecord:
    """One row's case (`columns`: the file column of each of _FIELDS, or None), fields checked in a fixed
    order (the first invalid one is reported); fast paths for plain text cells, with the results of the
    general checks in lib.data.fields."""
    value, expected, match, pattern, schema, category, metadata, key = [
        None if column is None else record.get(column, _MISSING) for column in columns]
    input_text, messages = _input(value)
    expected = (expected if expected.strip() else None) if type(expected) is str else text_or_json(expected)
    rule, pattern = (None, None) if _blank(match) and _blank(pattern) else check_rule(match, pattern, expected)
    category = (category if category.strip() else None) if type(category) is str else scalar_text(category,
                                                                                                  "category")
    case = CaseRecord(key="", input_text=input_text, messages=messages, expected=expected, match=rule,
                      pattern=pattern, json_schema=None if _blank(schema) else _schema(schema), category=category,
                      metadata=None if _blank(metadata) else _metadata(metadata))
    if columns[-1] is None:
        case.key = content_key(case.canonical())
    elif type(key) is str and key.strip():  # what case_key makes of a text id
        case.key = key.strip()
    else:
        case.key = case_key(key)
    return case


class _Reread(Exception):
    """Later rows of a JSONL file change which columns the mapping picks: the file is read whole instead."""


class _CaseParser:
    """Validates a file's rows chunk by chunk (`lib.data.table_stream`): columns resolved on the first
    chunk, keys unique across all of them."""

    def __init__(self, table: Table, mapping: ColumnMapping | None):
        self.mapping = mapping or ColumnMapping()
        self.cols = _resolve_columns(table, self.mapping)
        self.columns = dict.fromkeys(table.columns)  # every column met, in order of first appearance
        self.first: dict[str, int] = {}  # case key -> the line (or item) of its row

    def cases(self, table: Table) -> list[CaseRecord]:
        if any(c not in self.columns for c in table.columns):  # JSONL: a key first met in this chunk
            self.columns.update(dict.fromkeys(table.columns))
            union = Table(table.source, list(self.columns), [], [], table.by_line, table.is_csv, table.error)
            if _resolve_columns(union, self.mapping) != self.cols:
                raise _Reread
        fast = self._plain_cases(table)
        if fast is not None:
            return fast
        cases, cols, first, locs = [], self.cols, self.first, table.locs
        columns = tuple(cols[name] for name in _FIELDS)
        for row, record in enumerate(table.records):
            try:
                case = _row_case(record, columns)
            except InvalidField as exc:
                table.fail(row, exc.message, field=exc.field)
            if case.key in first:
                where = f"{'line' if table.by_line else 'item'} {first[case.key]}"
                if cols["id"]:
                    table.fail(row, f"repeats id '{case.key}' (first at {where})", field="id")
                table.fail(row, f"duplicate case: same content as {where} (add an id column to keep both)")
            first[case.key] = locs[row]
            cases.append(case)
        return cases

    def _plain_cases(self, table: Table) -> list[CaseRecord] | None:
        """The cases of a chunk whose every row is plain (text id and input not starting with '[', text or
        blank expected and category, no rule, pattern, schema or metadata, no repeated id), checked column by
        column: what `_row_case` makes of such rows. None: some row is not plain (or is invalid), and the
        caller checks the chunk row by row, with its messages."""
        cols, records = self.cols, table.records
        id_col, input_col = cols["id"], cols["input"]
        if id_col is None or input_col is None:
            return None
        for name in ("match", "pattern", "schema", "metadata"):
            column = cols[name]
            if column is not None and not all(_blank_cell(r.get(column)) for r in records):
                return None
        inputs = cast(list[str], [r.get(input_col) for r in records])  # checked next: text, not blank, no "["
        if not all(type(v) is str and v.strip() and not v.lstrip().startswith("[") for v in inputs):
            return None
        keys = [v.strip() if type(v) is str else "" for v in (r.get(id_col) for r in records)]
        if not all(keys) or len(set(keys)) != len(keys) or not self.first.keys().isdisjoint(keys):
            return None
        expected, category = (_text_column(records, cols[name]) for name in ("expected", "category"))
        if expected is None or category is None:
            return None
        self.first.update(zip(keys, table.locs))
        return [CaseRecord(key, text, None, exp, None, None, None, cat, None)
                for key, text, exp, cat in zip(keys, inputs, expected, category)]

    def warnings(self) -> list[str]:
        ignored = [c for c in self.columns if c not in self.cols.values()]
        return [f"ignored columns not in the mapping: {', '.join(ignored)}"] if ignored else []


def parse_table(table: Table, mapping: ColumnMapping | None = None) -> tuple[list[CaseRecord], list[str]]:
    """Validated cases and warnings (ignored columns)."""
    parser = _CaseParser(table, mapping)
    if not table.records:
        table.fail_header("has no cases")
    return parser.cases(table), parser.warnings()


def parse_cases(data: bytes, filename: str, mapping: ColumnMapping | None = None) -> list[CaseRecord]:
    return parse_table(read_rows(data, filename), mapping)[0]


# ---------------------------------------------------------------- store

@dataclass
class ImportResult:
    dataset_id: int
    name: str
    version: int
    n_cases: int
    created: bool  # False: the content equals the latest version, which is returned
    warnings: list[str] = field(default_factory=list)


def _latest(session: Session, name: str) -> Dataset | None:
    query = select(Dataset).where(Dataset.name == name).order_by(Dataset.version.desc())
    return session.exec(query).first()


_DATASETS = Dataset.__table__  # type: ignore[attr-defined]  # SQLModel declares it at runtime
# The driver's executemany, no per-row work of SQLAlchemy's (the values are plain str/int/None already).
_INSERT_CASES = f'INSERT INTO "case" ({", ".join(CASE_FIELDS)}) VALUES ({", ".join(["?"] * len(CASE_FIELDS))})'


class CaseWriter:
    """A new dataset version written batch by batch inside the caller's transaction, hashed as it goes.

    `finish` keeps it, or takes it back (a SAVEPOINT) when its content equals the latest version's:
    existing versions are never modified, so runs keep the cases they used. A failure anywhere rolls the
    caller's transaction back: an import is stored whole or not at all, and a killed process leaves the
    store as it was (SQLite's journal)."""

    def __init__(self, session: Session, name: str, source: str):
        self.session, self.name, self.source = session, name, source
        self.conn = session.connection()
        self.latest = _latest(session, name)
        self.conn.exec_driver_sql("SAVEPOINT new_dataset")
        version = self.latest.version + 1 if self.latest else 1
        inserted = self.conn.execute(insert(_DATASETS).values(
            name=name, version=version, content_hash="", source=source, n_cases=0, created_at=utcnow()))
        self.dataset_id = int(inserted.lastrowid)
        self.hasher = hashlib.sha256(b"[")
        self.n_cases = 0
        self.inserts = BackgroundInserts(self.conn, _INSERT_CASES)

    def __enter__(self) -> CaseWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.inserts.__exit__(*exc)

    def add(self, cases: list[CaseRecord]) -> None:
        if not cases:
            return
        start, ds = self.n_cases, self.dataset_id
        self.inserts.put([c.values(ds, start + i) for i, c in enumerate(cases)])
        self.hasher.update(((", " if start else "") + ", ".join(map(canonical_json, cases))).encode())
        self.n_cases += len(cases)

    def finish(self) -> tuple[Dataset, bool]:
        """(the version holding these cases, whether it is new)."""
        self.inserts.close()
        self.hasher.update(b"]")
        digest = self.hasher.hexdigest()
        if self.latest is not None and self.latest.content_hash == digest:
            self.conn.exec_driver_sql("ROLLBACK TO new_dataset")
            self.conn.exec_driver_sql("RELEASE new_dataset")
            return self.latest, False
        self.conn.exec_driver_sql("RELEASE new_dataset")
        self.conn.execute(update(_DATASETS).where(_DATASETS.c.id == self.dataset_id)
                          .values(content_hash=digest, n_cases=self.n_cases))
        ds = get_row(self.session, Dataset, self.dataset_id)
        record_event(self.session, "dataset_imported", {"dataset_id": ds.id, "name": self.name, "version": ds.version,
                                                        "content_hash": digest, "n_cases": ds.n_cases,
                                                        "source": self.source})
        return ds, True


def save_cases(session: Session, name: str, source: str, cases: list[CaseRecord]) -> tuple[Dataset, bool]:
    """The dataset version holding exactly these cases: the latest one if equal, else a new version."""
    with CaseWriter(session, name, source) as writer:
        writer.add(cases)
        return writer.finish()


def import_dataset(engine: Engine, data: bytes, filename: str, name: str,
                   mapping: ColumnMapping | None = None) -> ImportResult:
    """Parse, validate and store a golden dataset in one transaction (a failed import writes nothing)."""
    return import_dataset_stream(engine, io.BytesIO(data), filename, name, mapping)


def import_dataset_file(engine: Engine, path: Path, name: str, mapping: ColumnMapping | None = None) -> ImportResult:
    """`import_dataset` from a path, read in chunks: never held whole in memory (but a JSON array)."""
    with open_input(path, DatasetImportError) as raw:
        return import_dataset_stream(engine, raw, path.name, name, mapping)


def import_dataset_stream(engine: Engine, raw: IO[bytes], filename: str, name: str,
                          mapping: ColumnMapping | None = None) -> ImportResult:
    """`import_dataset` from a seekable binary stream: each chunk of rows validated, then written."""
    name = name.strip()
    if not name:
        raise DatasetImportError(filename, "the dataset name is empty")
    try:
        with gc_paused():
            return _import_chunks(engine, iter_row_tables(raw, filename, DatasetImportError), name, filename,
                                  mapping)
    except _Reread:
        raw.seek(0)
        cases, warnings = parse_table(read_rows(raw.read(), filename), mapping)
        with session_scope(engine) as session:
            ds, created = save_cases(session, name, filename, cases)
            return ImportResult(id_of(ds), ds.name, ds.version, ds.n_cases, created, warnings)


def _import_chunks(engine: Engine, tables: Iterator[Table], name: str, filename: str,
                   mapping: ColumnMapping | None) -> ImportResult:
    first = next(tables)
    ahead = next(tables, None) if not first.is_csv else None  # JSONL: does a later chunk exist?
    try:
        parser = _CaseParser(first, mapping)
    except DatasetImportError:
        if ahead is None:  # a CSV header, or the whole JSONL file: the named column is absent
            raise
        raise _Reread from None  # a later JSONL row may have it
    if not first.records:
        first.fail_header("has no cases")
    rest = chain([ahead], tables) if ahead is not None else tables
    with session_scope(engine) as session:
        with CaseWriter(session, name, filename) as writer:
            for table in chain([first], rest):
                writer.add(parser.cases(table))
            ds, created = writer.finish()
        return ImportResult(id_of(ds), ds.name, ds.version, ds.n_cases, created, parser.warnings())


def get_dataset(session: Session, name: str, version: int | None = None) -> Dataset:
    """A dataset version (the latest when `version` is None)."""
    if version is None:
        ds = _latest(session, name)
    else:
        ds = session.exec(select(Dataset).where(Dataset.name == name, Dataset.version == version)).first()
    if ds is not None:
        return ds
    latest = _latest(session, name) if version is not None else None
    if latest is not None:
        raise DatasetNotFound(f"dataset '{name}' has no version {version} (latest is {latest.version})")
    raise DatasetNotFound(f"no dataset named '{name}' (see `./review dataset list`)")


def list_datasets(engine: Engine) -> list[dict[str, Any]]:
    """Every dataset version, newest version first within each name."""
    runs = func.count(Run.id).label("used_by_runs")
    query = (select(Dataset, runs).join(Run, Run.dataset_id == Dataset.id, isouter=True)
             .group_by(Dataset.id).order_by(Dataset.name, Dataset.version.desc()))
    with Session(engine) as session:
        return [{"dataset_id": ds.id, "name": ds.name, "version": ds.version, "n_cases": ds.n_cases,
                 "created_at": ds.created_at, "source": ds.source, "used_by_runs": used}
                for ds, used in session.exec(query).all()]
