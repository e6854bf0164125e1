"""Golden datasets: read JSONL/CSV/JSON files, validate cases, store them as immutable versions.

The tabular reader (`read_rows`) and the field checks are shared with `lib.loaders`, which build
the dataset of a recorded comparison the same way.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import PurePath
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

import pandas as pd
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from sqlalchemy import func, insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.audit import record_event
from lib.db import session_scope, utcnow
from lib.errors import DatasetImportError, DatasetNotFound, RecordedLoadError
from lib.models import MATCH_RULES, Case, Dataset, Run, to_json

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}
RULES_NEEDING_EXPECTED = ("exact", "normalized", "contains", "not_contains", "numeric")
_MISSING = object()  # a key absent from a row, as opposed to an explicit null

InputErrors = type[DatasetImportError] | type[RecordedLoadError]


# ---------------------------------------------------------------- reading files

@dataclass
class Table:
    """The rows of an uploaded file, with where each row sits so errors can point at it."""

    source: str
    columns: list[str]
    records: list[dict[str, Any]]
    locs: list[int]  # per row: its line in the file (JSONL, CSV) or its index in the JSON array
    by_line: bool
    is_csv: bool
    error: InputErrors

    def fail(self, row: int, message: str, field: str | None = None) -> NoReturn:
        """Raise the input error for one row, located the way the user would look for it."""
        if self.by_line:
            raise self.error(self.source, message, line=self.locs[row], field=field)
        raise self.error(self.source, f"{message} (item [{self.locs[row]}])", field=field)

    def fail_header(self, message: str, field: str | None = None) -> NoReturn:
        raise self.error(self.source, message, line=1 if self.is_csv else None, field=field)

    def missing_column(self, column: str, field: str) -> NoReturn:
        self.fail_header(f"names column '{column}', which is not in the file; available columns: "
                         f"{', '.join(self.columns)}", field=field)

    def frame(self) -> pd.DataFrame:
        """The rows as a frame (object columns); empty CSV cells become None, like absent JSON keys."""
        df = pd.DataFrame.from_records(self.records, columns=self.columns)
        if self.is_csv:
            df = df.replace("", None)
        return df.astype(object).where(df.notna(), None)


def file_kind(filename: str, error: InputErrors = DatasetImportError) -> str:
    """jsonl | csv | json, from the extension."""
    ext = PurePath(filename).suffix.lower()
    if ext not in EXTENSIONS:
        raise error(filename, f"unsupported file type '{ext or filename}' (use .jsonl, .csv or .json)")
    return EXTENSIONS[ext]


def decode_text(data: bytes, source: str, error: InputErrors = DatasetImportError) -> str:
    """UTF-8 text (a BOM is dropped); anything else is refused with the line of the bad byte."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(source, f"is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8",
                    line=line) from None
    if not text.strip():
        raise error(source, "the file is empty")
    return text


def read_rows(data: bytes, filename: str, error: InputErrors = DatasetImportError) -> Table:
    """Parse a JSONL, CSV or JSON (list of objects, or {"cases": [...]}) file into a Table."""
    kind = file_kind(filename, error)
    text = decode_text(data, filename, error)
    if kind == "csv":
        return _read_csv(text, filename, error)
    if kind == "jsonl":
        return _read_jsonl(text, filename, error)
    return _read_json(text, filename, error)


def read_table(data: bytes, filename: str) -> pd.DataFrame:
    """Raw rows of a golden-dataset file, for previews and column-mapping forms."""
    return read_rows(data, filename).frame()


def _union_columns(records: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for rec in records for key in rec))


def jsonl_rows(lines: Iterable[str], source: str, error: InputErrors) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is an error."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(source, f"invalid JSON: {exc.msg} (column {exc.colno})", line=number) from None
        if not isinstance(value, dict):
            raise error(source, f"expected a JSON object, got {type(value).__name__}", line=number)
        yield number, value


def _read_jsonl(text: str, source: str, error: InputErrors) -> Table:
    # split on \n only: splitlines() would also break on U+2028, valid inside JSON strings
    rows = list(jsonl_rows(text.split("\n"), source, error))
    records, locs = [value for _, value in rows], [number for number, _ in rows]
    return Table(source, _union_columns(records), records, locs, by_line=True, is_csv=False, error=error)


def _read_json(text: str, source: str, error: InputErrors) -> Table:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(source, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from None
    items = value.get("cases") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise error(source, 'expected a JSON list of objects or {"cases": [...]}')
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise error(source, f"expected a JSON object, got {type(item).__name__} (item [{index}])")
    return Table(source, _union_columns(items), items, list(range(len(items))), by_line=False,
                 is_csv=False, error=error)


def _read_csv(text: str, source: str, error: InputErrors) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
        dupes = sorted({name for name in header if header.count(name) > 1})
        if dupes:
            raise error(source, f"duplicate column names: {', '.join(dupes)}", line=1)
        records, locs, end = [], [], reader.line_num
        for row in reader:
            # A quoted cell may span lines: a row starts on the line after the previous row ended.
            start, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raise error(source, f"row has {len(row)} cells but the header has {len(header)}", line=start)
            records.append(dict(zip(header, row)))
            locs.append(start)
    except csv.Error as exc:
        raise error(source, f"malformed CSV: {exc}", line=reader.line_num) from None
    return Table(source, header, records, locs, by_line=True, is_csv=True, error=error)


# ---------------------------------------------------------------- field checks

class InvalidField(ValueError):
    """One field of one row is invalid; the caller adds the file and row."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def _blank(value: Any) -> bool:
    return value is None or value is _MISSING or (isinstance(value, str) and not value.strip())


def scalar_text(value: Any, name: str) -> str | None:
    """A string, number or bool as text (JSON spelling for non-strings); blank -> None."""
    if _blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return json.dumps(value)
    raise InvalidField(name, f"must be a string or a number, got {type(value).__name__}")


def text_or_json(value: Any) -> str | None:
    """Strings stay as they are; any other JSON value becomes canonical JSON text."""
    if _blank(value):
        return None
    return value if isinstance(value, str) else to_json(value)


def _json_in_text(value: Any, name: str) -> Any:
    """CSV cells carry objects as JSON text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidField(name, f"is not valid JSON: {exc.msg}") from None


def coerce_input(value: Any, name: str = "input") -> tuple[str, list[dict[str, Any]] | None]:
    """(input_text, messages): a prompt string, or a chat given as a list of {role, content}.

    A string holding a JSON list of objects (a CSV cell) is read as a chat.
    """
    if value is _MISSING or value is None:
        raise InvalidField(name, "is missing")
    if isinstance(value, str):
        if not value.strip():
            raise InvalidField(name, "is empty")
        value = _chat_in_text(value)
        if isinstance(value, str):
            return value, None
    if not isinstance(value, list):
        raise InvalidField(name, "must be a string or a list of {role, content} messages, "
                                 f"got {type(value).__name__}")
    messages = _check_messages(value, name)
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages), messages


def _chat_in_text(text: str) -> str | list:
    if not text.lstrip().startswith("["):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    is_chat = isinstance(value, list) and value and all(isinstance(m, dict) for m in value)
    return value if is_chat else text


def _check_messages(items: list, name: str) -> list[dict[str, Any]]:
    if not items:
        raise InvalidField(name, "is an empty list of messages")
    for index, msg in enumerate(items):
        if not isinstance(msg, dict):
            raise InvalidField(name, f"message {index} is not a {{role, content}} object")
        if not isinstance(msg.get("role"), str) or not msg["role"].strip():
            raise InvalidField(name, f"message {index} has no 'role'")
        if not isinstance(msg.get("content"), str):
            raise InvalidField(name, f"message {index} has no text 'content'")
    return items


def check_rule(match: Any, pattern: Any, expected: str | None, *, needs_expected: bool = True
               ) -> tuple[str | None, str | None]:
    """Validate a match rule and its pattern; returns (rule, pattern) normalised.

    A pattern without a rule means `regex`. `needs_expected=False` skips the expected-value checks
    (a recorded load applies one rule to cases that may lack an expected value).
    """
    rule = scalar_text(match, "match")
    pattern = scalar_text(pattern, "pattern")
    if rule is not None:
        rule = rule.strip().lower().replace("-", "_")
        if rule not in MATCH_RULES:
            raise InvalidField("match", f"has unknown rule '{match}' (use one of: {', '.join(MATCH_RULES)})")
    elif pattern is not None:
        rule = "regex"
    if rule == "regex":
        if pattern is None:
            raise InvalidField("pattern", "is required by match rule 'regex'")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InvalidField("pattern", f"is not a valid regular expression: {exc}") from None
    elif pattern is not None:
        raise InvalidField("pattern", f"is only used by match rule 'regex', not '{rule}'")
    if needs_expected and rule in RULES_NEEDING_EXPECTED:
        if expected is None:
            raise InvalidField("expected", f"is required by match rule '{rule}'")
        if rule == "numeric" and not _is_number(expected):
            raise InvalidField("expected", f"is '{expected}', not a number (match rule 'numeric')")
    return rule, pattern


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _schema(value: Any, name: str = "schema") -> str | None:
    """A JSON Schema (object or JSON text) checked against its metaschema; stored as JSON text."""
    if _blank(value):
        return None
    schema = _json_in_text(value, name)
    if not isinstance(schema, (dict, bool)):
        raise InvalidField(name, "must be a JSON Schema object")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise InvalidField(name, f"is not a valid JSON Schema: {exc.message}") from None
    return to_json(schema)


def _metadata(value: Any, name: str = "metadata") -> dict[str, Any] | None:
    if _blank(value):
        return None
    meta = _json_in_text(value, name)
    if not isinstance(meta, dict):
        raise InvalidField(name, "must be a JSON object")
    return meta


def case_key(value: Any, name: str = "id") -> str:
    """The id a row gives its case."""
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise InvalidField(name, f"must be a string or a number, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    key = scalar_text(value, name)
    if key is None:
        raise InvalidField(name, "is missing or empty")
    return key.strip()


def content_key(value: Any) -> str:
    """A short stable key from content, for files without ids."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


# ---------------------------------------------------------------- cases

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

    def row(self, dataset_id: int, position: int) -> dict[str, Any]:
        """Column values of the Case table."""
        return {"dataset_id": dataset_id, "case_key": self.key, "position": position,
                "input_text": self.input_text, "messages_json": to_json(self.messages),
                "expected": self.expected, "match": self.match, "pattern": self.pattern,
                "json_schema": self.json_schema, "category": self.category,
                "metadata_json": to_json(self.metadata)}


def content_hash(cases: list[CaseRecord]) -> str:
    """sha256 of the canonical case list (order included): equal hashes mean the same dataset."""
    return hashlib.sha256(to_json([c.canonical() for c in cases]).encode()).hexdigest()


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


def _row_case(record: dict[str, Any], cols: dict[str, str | None]) -> CaseRecord:
    def get(name: str) -> Any:
        column = cols[name]
        return None if column is None else record.get(column, _MISSING)

    input_text, messages = coerce_input(get("input"))
    expected = text_or_json(get("expected"))
    rule, pattern = check_rule(get("match"), get("pattern"), expected)
    case = CaseRecord(key="", input_text=input_text, messages=messages, expected=expected, match=rule,
                      pattern=pattern, json_schema=_schema(get("schema")),
                      category=scalar_text(get("category"), "category"),
                      metadata=_metadata(get("metadata")))
    case.key = case_key(get("id")) if cols["id"] else content_key(case.canonical())
    return case


def parse_table(table: Table, mapping: ColumnMapping | None = None) -> tuple[list[CaseRecord], list[str]]:
    """Validated cases and warnings (ignored columns)."""
    cols = _resolve_columns(table, mapping or ColumnMapping())
    if not table.records:
        table.fail_header("has no cases")
    cases, first_row = [], {}
    for row, record in enumerate(table.records):
        try:
            case = _row_case(record, cols)
        except InvalidField as exc:
            table.fail(row, exc.message, field=exc.field)
        if case.key in first_row:
            first = f"{'line' if table.by_line else 'item'} {table.locs[first_row[case.key]]}"
            if cols["id"]:
                table.fail(row, f"repeats id '{case.key}' (first at {first})", field="id")
            table.fail(row, f"duplicate case: same content as {first} (add an id column to keep both)")
        first_row[case.key] = row
        cases.append(case)
    ignored = [c for c in table.columns if c not in cols.values()]
    warnings = [f"ignored columns not in the mapping: {', '.join(ignored)}"] if ignored else []
    return cases, warnings


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


def save_cases(session: Session, name: str, source: str, cases: list[CaseRecord]) -> tuple[Dataset, bool]:
    """The dataset version holding exactly these cases: the latest one if equal, else a new version.

    Existing versions are never modified, so runs keep the cases they used.
    """
    digest = content_hash(cases)
    latest = _latest(session, name)
    if latest is not None and latest.content_hash == digest:
        return latest, False
    ds = Dataset(name=name, version=latest.version + 1 if latest else 1, content_hash=digest,
                 source=source, n_cases=len(cases), created_at=utcnow())
    session.add(ds)
    session.flush()
    session.connection().execute(insert(Case.__table__), [c.row(ds.id, i) for i, c in enumerate(cases)])
    record_event(session, "dataset_imported", {"dataset_id": ds.id, "name": name, "version": ds.version,
                                               "content_hash": digest, "n_cases": ds.n_cases, "source": source})
    return ds, True


def import_dataset(engine: Engine, data: bytes, filename: str, name: str,
                   mapping: ColumnMapping | None = None) -> ImportResult:
    """Parse, validate and store a golden dataset in one transaction (a failed import writes nothing)."""
    name = name.strip()
    if not name:
        raise DatasetImportError(filename, "the dataset name is empty")
    cases, warnings = parse_table(read_rows(data, filename), mapping)
    with session_scope(engine) as session:
        ds, created = save_cases(session, name, filename, cases)
        return ImportResult(ds.id, ds.name, ds.version, ds.n_cases, created, warnings)


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
    raise DatasetNotFound(f"no dataset named '{name}' (see `python -m lib dataset list`)")


def list_datasets(engine: Engine) -> list[dict[str, Any]]:
    """Every dataset version, newest version first within each name."""
    runs = func.count(Run.id).label("used_by_runs")
    query = (select(Dataset, runs).join(Run, Run.dataset_id == Dataset.id, isouter=True)
             .group_by(Dataset.id).order_by(Dataset.name, Dataset.version.desc()))
    with Session(engine) as session:
        return [{"dataset_id": ds.id, "name": ds.name, "version": ds.version, "n_cases": ds.n_cases,
                 "created_at": ds.created_at, "source": ds.source, "used_by_runs": used}
                for ds, used in session.exec(query).all()]
