"""Engine and sessions. DATABASE_URL selects the store; default a SQLite file under ./data/."""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from lib.errors import StoreURLError

DEFAULT_DB_PATH = Path("data") / "review.db"


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{DEFAULT_DB_PATH}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # SQLAlchemy, not the sqlite3 module, decides when transactions begin (see _sqlite_begin).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # WAL: readers (the app) never block the writer (a run); busy_timeout: two writers wait, not fail.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn) -> None:  # type: ignore[no-untyped-def]
    # Write transactions take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that
    # read first and then writes fails at once with SQLITE_BUSY when another process wrote meanwhile,
    # instead of waiting on busy_timeout. Reads stay deferred so they never block writers.
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL (DATABASE_URL when None, read at each call), tables created on first use."""
    return _engine(url or database_url())


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    if not url.startswith("sqlite:"):
        # Stored checks stay valid through SQLite triggers (lib.store.check_store), bulk id lookups use
        # json_each, and writers rely on WAL + BEGIN IMMEDIATE: another database would run, but wrongly.
        raise StoreURLError(f"DATABASE_URL must be a sqlite:/// URL (got '{url.split(':', 1)[0]}:...'): the "
                            "store relies on SQLite features (WAL, triggers, json_each)")
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Streamlit runs each session in its own thread.
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)
    # Imported for their side effect: registering every table before create_all.
    import lib.drift.entities  # noqa: F401
    import lib.governance.entities  # noqa: F401
    import lib.judge.entities  # noqa: F401
    import lib.release.entities  # noqa: F401
    import lib.release.log_entities  # noqa: F401
    import lib.store.entities  # noqa: F401

    SQLModel.metadata.create_all(engine)
    return engine


def write_engine(engine: Engine) -> Engine:
    """The same engine whose write transactions begin IMMEDIATE (take SQLite's write lock up front)."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A write transaction: commits on success, rolls back on any error, serialised across processes."""
    with Session(write_engine(engine or get_engine()), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
