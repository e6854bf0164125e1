"""Engine and sessions. DATABASE_URL selects the store; default a SQLite file under ./data/."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine

from lib.errors import ReviewInputError, StoreURLError
from lib.store.migrate import add_missing_columns, scrub_stored_credentials
from lib.store.peek import DEFAULT_DB_PATH, database_url  # noqa: F401  (re-exported: where the store is)

_DISK_FULL = ("database or disk is full", "disk i/o error")


class StoreFullError(ReviewInputError):
    """The store's disk (or its size limit) is full: the step was rolled back, nothing of it was written."""


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
    path = _sqlite_path(url)
    # Streamlit runs each session in its own thread.
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)
    event.listen(engine, "handle_error", _disk_full(path))
    # Imported for their side effect: registering every table before create_all.
    import lib.drift.entities  # noqa: F401
    import lib.governance.entities  # noqa: F401
    import lib.judge.entities  # noqa: F401
    import lib.release.entities  # noqa: F401
    import lib.release.log_entities  # noqa: F401
    import lib.review.entities  # noqa: F401
    import lib.store.entities  # noqa: F401

    try:
        SQLModel.metadata.create_all(engine)
        add_missing_columns(engine, write_engine(engine))  # a store from an earlier version keeps working
        scrub_stored_credentials(engine, write_engine(engine))
    except OperationalError as exc:  # e.g. a read-only directory: say where, not the SQL
        raise StoreURLError(f"DATABASE_URL: cannot open the store at {path} ({exc.orig})") from None
    return engine


def _sqlite_path(url: str) -> str:
    """The file a sqlite:/// URL names, checked before anything is created: no query options or `file:`
    URIs (they would make a stray directory named after the URL), a directory that is one."""
    if not url.startswith("sqlite:///") and url != "sqlite://":
        raise StoreURLError("DATABASE_URL must look like sqlite:///path/to/review.db")
    path = url[len("sqlite:///"):]
    if "?" in path or path.startswith("file:"):
        raise StoreURLError("DATABASE_URL: query options and file: URIs are not supported; give a plain path "
                            "(sqlite:///path/to/review.db)")
    if not path or path == ":memory:":
        return path or ":memory:"
    target = Path(path)
    if target.is_dir():
        raise StoreURLError(f"DATABASE_URL: {path} is a directory; name the database file inside it")
    parent = next((p for p in (target.parent, *target.parent.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise StoreURLError(f"DATABASE_URL: {parent} is a file, not a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreURLError(f"DATABASE_URL: cannot create the directory {target.parent} ({exc.strerror})") from None
    return path


def _disk_full(path: str):  # type: ignore[no-untyped-def]
    """A handle_error hook: a full disk becomes one line naming the store, never the SQL or its rows."""
    def handle(context):  # type: ignore[no-untyped-def]
        message = str(context.original_exception).lower()
        if any(fragment in message for fragment in _DISK_FULL):
            raise StoreFullError(f"the store's disk is full ({path}): this step was rolled back and nothing of "
                                 "it was written; free some space and run it again") from None
    return handle


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
