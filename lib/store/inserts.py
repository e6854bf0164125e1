"""Bulk inserts on a worker thread: SQLite's B-tree work overlaps the parsing of the next batch.

The driver's executemany releases the GIL while SQLite steps through a batch, so a load that parses
rows in Python and inserts them on the same connection from a worker uses both cores. The
transaction stays the caller's: the worker only runs batches on the caller's connection, in order,
and the caller touches that connection again only after `close` (which waits for the worker).
"""
from __future__ import annotations

import queue
import threading
from types import TracebackType
from typing import Any

from sqlalchemy.engine import Connection


class BackgroundInserts:
    """`put` batches of rows for one INSERT; an error of a batch is raised in the caller's thread at the
    next `put` or at `close`. Used as a context manager, an error in the caller stops the worker (the
    batches still waiting are dropped) before the caller's transaction rolls back."""

    def __init__(self, conn: Connection, sql: str, depth: int = 2):
        self.conn, self.sql = conn, sql
        self.batches: queue.Queue[list[Any] | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.dropping = False
        self.worker = threading.Thread(target=self._run, name="bulk-inserts", daemon=True)
        self.worker.start()

    def _run(self) -> None:
        while (rows := self.batches.get()) is not None:
            if self.error is None and not self.dropping:
                try:
                    self.conn.exec_driver_sql(self.sql, rows)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                    self.error = exc

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, rows: list[Any]) -> None:
        self._raise()
        if rows:
            self.batches.put(rows)

    def close(self) -> None:
        """Wait until every batch is in; raise the first batch's error."""
        if self.worker.is_alive():
            self.batches.put(None)
            self.worker.join()
        self._raise()

    def __enter__(self) -> BackgroundInserts:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:
            self.dropping = True
            if self.worker.is_alive():
                self.batches.put(None)
                self.worker.join()
