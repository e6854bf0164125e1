"""Stored check results: columnar (Arrow IPC) segments in the `checksegment` table.

Every per-output check is a pure function of (output, case, reviewer settings, check code), so a report
needs to check only the outputs it has not seen: reading 100k stored results back is milliseconds,
re-reading texts and re-running checks is seconds. This module only stores and finds results; what
they contain is `lib.review.checked`'s business.

A scope is (run, key) for per-output results or (baseline run, candidate run, key) for pair values.
Stored results are complete for a run when they cover as many outputs as it has, up to its highest
output id. Why that suffices: output ids only grow (SQLite gives a new row max(id) + 1), and any update
or delete of an output or case bumps the run's epoch (`lib.store.entities.CheckEpoch`, by trigger), which makes
older segments stale. So when a run only gained outputs, the new ones are those with a higher id.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from lib.store.columns import utcnow
from lib.store.engine import session_scope

MAX_SEGMENTS = 8  # appends beyond this rewrite the scope as one segment (reads stay one blob or a few)
_COMPRESSION = pa.ipc.IpcWriteOptions(compression="zstd")


@dataclass(frozen=True)
class Scope:
    run_id: int
    other_run_id: int | None  # None: per-output results of run_id; else pair values of the two runs
    key: str  # what the results depend on besides the data: settings and check code versions


@dataclass(frozen=True)
class Stored:
    """What a scope holds at one read: the fresh rows and where they stop."""

    table: pa.Table | None  # rows of every fresh segment in write order; None when there is none
    epochs: tuple[int, int]  # (run, other run) epochs at the read; results written later must match
    max_output_id: int  # -1 when nothing is stored
    n_segments: int

    @property
    def n_rows(self) -> int:
        return 0 if self.table is None else self.table.num_rows


def epoch(conn: Connection, run_id: int | None) -> int:
    if run_id is None:
        return 0
    row = conn.execute(text("SELECT epoch FROM checkepoch WHERE run_id = :r"), {"r": run_id}).first()
    return row[0] if row else 0


def output_span(conn: Connection, run_id: int, after: int = -1) -> tuple[int, int]:
    """(number of outputs, highest output id) of the run, counting only ids above `after`."""
    count, top = conn.execute(text("SELECT count(*), max(id) FROM output WHERE run_id = :r AND id > :a"),
                              {"r": run_id, "a": after}).one()
    return int(count), -1 if top is None else int(top)


def _scope_sql(scope: Scope) -> tuple[str, dict]:
    other = "other_run_id IS NULL" if scope.other_run_id is None else "other_run_id = :o"
    return (f"run_id = :r AND {other} AND key = :k",
            {"r": scope.run_id, "o": scope.other_run_id, "k": scope.key})


def _epochs(conn: Connection, scope: Scope) -> tuple[int, int]:
    return epoch(conn, scope.run_id), epoch(conn, scope.other_run_id)


def read(conn: Connection, scope: Scope) -> Stored:
    """The fresh segments of a scope (call inside the read transaction that also reads the outputs)."""
    where, params = _scope_sql(scope)
    epochs = _epochs(conn, scope)
    rows = conn.execute(text(f"SELECT data, max_output_id FROM checksegment WHERE {where} "
                             "AND epoch = :e AND other_epoch = :oe ORDER BY id"),
                        {**params, "e": epochs[0], "oe": epochs[1]}).all()
    tables = [pa.ipc.open_stream(data).read_all() for data, _ in rows]
    table = pa.concat_tables(tables, promote_options="default") if tables else None
    top = max((m for _, m in rows), default=-1)
    return Stored(table, epochs, top, len(rows))


def _blob(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_COMPRESSION) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def write(engine: Engine, scope: Scope, based_on: Stored, *, new: pa.Table, full: pa.Table,
          max_output_id: int, keep_keys: frozenset[str] = frozenset(), rewrite: bool = False) -> Stored | None:
    """Store `new` rows (computed on top of `based_on`) as a segment; `full` = stored + new rows.

    Writes only when nothing changed since `based_on` was read (same epochs, same stored rows): a
    concurrent writer that got there first wins, and data that changed under us is never stored.
    Rewrites the scope as one segment (`full`) when asked, or when `based_on` is empty or has
    MAX_SEGMENTS segments; drops
    stale segments and, for per-output scopes, those of keys other than this one and `keep_keys`.
    Returns what the scope holds now (its rows left out), to write the next chunk on; None when
    nothing was written.
    """
    where, params = _scope_sql(scope)
    with session_scope(engine) as session:
        conn = session.connection()
        if _epochs(conn, scope) != based_on.epochs:
            return None
        current = conn.execute(text(f"SELECT count(*), coalesce(max(max_output_id), -1) FROM checksegment "
                                    f"WHERE {where} AND epoch = :e AND other_epoch = :oe"),
                               {**params, "e": based_on.epochs[0], "oe": based_on.epochs[1]}).one()
        if tuple(current) != (based_on.n_segments, based_on.max_output_id):
            return None
        rewrite = rewrite or based_on.n_segments == 0 or based_on.n_segments >= MAX_SEGMENTS
        if rewrite:
            conn.execute(text(f"DELETE FROM checksegment WHERE {where}"), params)
        else:
            conn.execute(text(f"DELETE FROM checksegment WHERE {where} AND NOT (epoch = :e AND other_epoch = :oe)"),
                         {**params, "e": based_on.epochs[0], "oe": based_on.epochs[1]})
        if scope.other_run_id is None:
            _drop_other_keys(conn, scope, keep_keys)
        rows = full if rewrite else new
        conn.execute(text("INSERT INTO checksegment (run_id, other_run_id, key, epoch, other_epoch, n_rows, "
                          "max_output_id, data, created_at) VALUES (:r, :o, :k, :e, :oe, :n, :m, :d, :t)"),
                     {**params, "e": based_on.epochs[0], "oe": based_on.epochs[1], "n": rows.num_rows,
                      "m": max_output_id, "d": _blob(rows), "t": utcnow()})
    return Stored(None, based_on.epochs, max_output_id, 1 if rewrite else based_on.n_segments + 1)


def _drop_other_keys(conn: Connection, scope: Scope, keep_keys: frozenset[str]) -> None:
    keep = sorted(keep_keys | {scope.key})
    names = ", ".join(f":k{i}" for i in range(len(keep)))
    conn.execute(text(f"DELETE FROM checksegment WHERE run_id = :r AND other_run_id IS NULL AND key NOT IN ({names})"),
                 {"r": scope.run_id, **{f"k{i}": k for i, k in enumerate(keep)}})


def stored_keys(engine: Engine) -> list[tuple[int, int | None, str, int]]:
    """(run, other run, key, rows) of every segment: for tests and diagnostics."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT run_id, other_run_id, key, n_rows FROM checksegment ORDER BY id")).all()]
