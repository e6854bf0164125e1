"""Golden datasets: validated cases stored as immutable, content-hashed versions.

The tabular reader (`lib.data.tables`) and the field checks (`lib.data.fields`) are shared with
`lib.data.loaders`, which build the dataset of a recorded comparison the same way."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any

from sqlalchemy import func, insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.store.audit import record_event
from lib.store.columns import utcnow
from lib.store.engine import session_scope
from lib.errors import DatasetImportError, DatasetNotFound
from lib.store.columns import to_json
from lib.store.entities import Case, Dataset, Run
from lib.data.fields import InvalidField, _MISSING, _metadata, _schema, case_key, check_rule, coerce_input, content_key, scalar_text, text_or_json
from lib.data.tables import Table, read_rows


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
