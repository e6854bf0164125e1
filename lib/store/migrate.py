"""Columns added to an existing store file: `create_all` creates missing tables, never missing columns.

A store written by an earlier version keeps working: every column the entities declare but the file's
table lacks is added (SQLite `ALTER TABLE ... ADD COLUMN`, NULL in existing rows). Only nullable columns
without a server default can be added this way, which is how entities declare late columns
(`LATE_COLUMNS` in lib.store.audit keeps their NULLs out of the rows' audit digests).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel

from lib.run.redact import scrub, strip_url_credentials
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


# Secrets stored before they were stripped (lib.run.redact): endpoint URLs with credentials in them, and
# provider errors that echoed a key (a run's, or a loaded file's error cell). Rows a signed decision covers
# keep their stored value: the decision's data digest covers every field of its runs' outputs and model
# configurations, so rewriting them would make an honest decision fail verification; every read path that
# shows or exports a URL strips it instead (the change record, recordings, pages).
@dataclass(frozen=True)
class _Target:
    table: str
    column: str
    clean: Callable[[str], str | None]
    like: tuple[str, ...]  # a cheap SQL filter: only values containing one of these can change
    signed: str | None = None  # SQL selecting the ids a signed decision covers (kept)
    once: bool = False  # a full-table scan: done once per store file (PRAGMA user_version), not at every open


_SIGNED_RUNS = "SELECT baseline_run_id FROM decision UNION SELECT candidate_run_id FROM decision"
_URL_LIKE = ("@", "?")
_KEY_LIKE = ("sk-", "bearer", "key", "token", "auth", "secret", "password", "sig", "@")
_TARGETS = (
    _Target("modelconfig", "api_base", strip_url_credentials, _URL_LIKE,
            f"SELECT config_id FROM run WHERE id IN ({_SIGNED_RUNS})"),
    _Target("judgerun", "api_base", strip_url_credentials, _URL_LIKE),
    _Target("output", "error", scrub, _KEY_LIKE, f"SELECT id FROM output WHERE run_id IN ({_SIGNED_RUNS})", True),
    _Target("logrecord", "error", scrub, _KEY_LIKE, None, True),
)
SCRUBBED_VERSION = 1  # PRAGMA user_version once the full-table scans were done


def _found(conn: Connection, target: _Target) -> list[tuple[int, str | None]]:
    """(id, cleaned value) of the target's stored values that still carry a secret."""
    if not _has_table(conn, target.table):
        return []
    where = " OR ".join(f'"{target.column}" LIKE :p{i}' for i in range(len(target.like)))
    params = {f"p{i}": f"%{fragment}%" for i, fragment in enumerate(target.like)}
    rows = conn.execute(text(f'SELECT id, "{target.column}" FROM "{target.table}" WHERE {where}'), params)
    found = [(row[0], cleaned) for row in rows if (cleaned := target.clean(row[1])) != row[1]]
    if found and target.signed and _has_table(conn, "decision"):
        kept = {row[0] for row in conn.execute(text(target.signed))}
        found = [f for f in found if f[0] not in kept]
    return found


def _all_found(conn: Connection) -> dict[_Target, list[tuple[int, str | None]]]:
    scanned = conn.execute(text("PRAGMA user_version")).scalar() or 0
    targets = [t for t in _TARGETS if not (t.once and scanned >= SCRUBBED_VERSION)]
    return {t: found for t in targets if (found := _found(conn, t))}


def _has_table(conn: Connection, table: str) -> bool:
    query = text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t")
    return conn.execute(query, {"t": table}).first() is not None


def scrub_stored_credentials(engine: Engine, writer: Engine) -> int:
    """When a store is opened: strip what was stored in clear before stripping existed (see above), with one
    audit event naming the rows. A plain read first: nothing is locked when all is clean."""
    with engine.connect() as conn:
        found = _all_found(conn)
        done = (conn.execute(text("PRAGMA user_version")).scalar() or 0) >= SCRUBBED_VERSION
    if not found and done:
        return 0
    with Session(writer) as session:
        conn = session.connection()
        found = _all_found(conn)
        for target, rows in found.items():
            conn.execute(text(f'UPDATE "{target.table}" SET "{target.column}" = :v WHERE id = :id'),
                         [{"v": value, "id": row_id} for row_id, value in rows])
        if found:
            record_event(session, "credentials_scrubbed", {"rows": [
                {"table": t.table, "column": t.column, "ids": [row_id for row_id, _v in rows]}
                for t, rows in found.items()]}, actor="store")
        conn.execute(text(f"PRAGMA user_version = {SCRUBBED_VERSION}"))
        session.commit()
        return sum(len(rows) for rows in found.values())
