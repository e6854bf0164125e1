"""Columns added to an existing store file: `create_all` creates missing tables, never missing columns.

A store written by an earlier version keeps working: every column the entities declare but the file's
table lacks is added (SQLite `ALTER TABLE ... ADD COLUMN`, NULL in existing rows). Only nullable columns
without a server default can be added this way, which is how entities declare late columns
(`LATE_COLUMNS` in lib.store.audit keeps their NULLs out of the rows' audit digests).
"""
from __future__ import annotations

from sqlalchemy import Column, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel

from lib.run.redact import strip_url_credentials
from lib.store.audit import record_event


def _missing(conn: Connection) -> list[Column]:
    missing = []
    for table in SQLModel.metadata.sorted_tables:
        have = {row[1] for row in conn.execute(text(f'PRAGMA table_info("{table.name}")'))}
        missing += [column for column in table.columns if have and column.name not in have]
    return missing


def add_missing_columns(engine: Engine, writer: Engine) -> list[str]:
    """Add each declared column an existing table lacks ('table.column' for each one added). Checked with a
    plain read first; `writer` (BEGIN IMMEDIATE) re-checks under the write lock, so two processes opening an
    old store at once add each column once."""
    with engine.connect() as conn:
        if not _missing(conn):
            return []
    added = []
    with writer.begin() as conn:
        for column in _missing(conn):
            name = f"{column.table.name}.{column.name}"
            if not column.nullable or column.server_default is not None:
                raise RuntimeError(f"{name}: only nullable columns without a default can be added to a store")
            kind = column.type.compile(dialect=engine.dialect)
            conn.execute(text(f'ALTER TABLE "{column.table.name}" ADD COLUMN "{column.name}" {kind}'))
            added.append(name)
    return added


# Endpoint URLs stored before credentials were stripped (lib.run.redact). A model configuration that a
# signed decision covers keeps its stored value: the decision's data digest covers every field, so
# rewriting it would make an honest decision fail verification; every read path that shows or exports a
# URL strips it instead (the change record, recordings, pages).
_URL_COLUMNS = (("modelconfig", "api_base"), ("judgerun", "api_base"))
_SIGNED_CONFIGS = ("SELECT r.config_id FROM run r JOIN decision d "
                   "ON r.id IN (d.baseline_run_id, d.candidate_run_id)")


def _credential_urls(conn: Connection) -> list[tuple[str, int, str, str | None]]:
    """(table, id, stored, stripped) of every stored URL that still carries credentials."""
    found = []
    for table, column in _URL_COLUMNS:
        if not _has_table(conn, table):
            continue
        rows = conn.execute(text(f'SELECT id, "{column}" FROM "{table}" WHERE "{column}" LIKE \'%@%\' '
                                 f'OR "{column}" LIKE \'%?%\''))
        found += [(table, row[0], row[1], stripped) for row in rows
                  if (stripped := strip_url_credentials(row[1])) != row[1]]
    if not found:
        return []
    signed = {row[0] for row in conn.execute(text(_SIGNED_CONFIGS))} if _has_table(conn, "decision") else set()
    return [f for f in found if not (f[0] == "modelconfig" and f[1] in signed)]


def _has_table(conn: Connection, table: str) -> bool:
    query = text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t")
    return conn.execute(query, {"t": table}).first() is not None


def scrub_stored_credentials(engine: Engine, writer: Engine) -> int:
    """Once, when a store is opened: strip credentials from URLs stored before stripping existed (see
    above), with an audit event naming the rows. A plain read first: nothing is locked when all is clean."""
    with engine.connect() as conn:
        if not _credential_urls(conn):
            return 0
    with Session(writer) as session:
        found = _credential_urls(session.connection())
        for table, row_id, _stored, stripped in found:
            session.connection().execute(text(f'UPDATE "{table}" SET "api_base" = :v WHERE id = :id'),
                                         {"v": stripped, "id": row_id})
        if found:
            record_event(session, "credentials_scrubbed",
                         {"rows": [{"table": t, "id": i} for t, i, _s, _x in found]}, actor="store")
        session.commit()
        return len(found)
