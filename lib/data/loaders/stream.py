"""Streamed log files: CSV or JSONL, optionally gzipped, read in chunks of rows.

Large traffic logs (shadow mode, canary) are never held whole in memory: `iter_tables` yields one
`lib.data.tables.Table` per chunk, with each row's line number, so the column helpers of the long
loader (`keys`, `numbers`, `timestamps`, ...) validate a chunk and name the line of a bad cell.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from pathlib import PurePath
from typing import IO, Any

import pandas as pd

from lib.data.tables import Table, jsonl_rows
from lib.errors import FileInputError

CHUNK_ROWS = 20_000
STREAM_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class HashingReader(io.RawIOBase):
    """Passes a binary stream through, hashing every byte read: a load or check cites the file's sha256."""

    def __init__(self, raw: IO[bytes]):
        self.raw, self.sha256 = raw, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[:len(data)] = data
        self.sha256.update(data)
        return len(data)


def stream_kind(filename: str, error: type[FileInputError]) -> tuple[str, bool]:
    """(csv | jsonl, gzipped?) from the file name: `log.csv`, `log.jsonl.gz`, ..."""
    path = PurePath(filename.lower())
    gz = path.suffix == ".gz"
    ext = PurePath(path.stem).suffix if gz else path.suffix
    if ext not in STREAM_KINDS:
        raise error(filename, f"unsupported log file type '{ext or filename}' (use .csv or .jsonl, "
                              "optionally .gz; a JSON array cannot be streamed)")
    return STREAM_KINDS[ext], gz


def iter_tables(raw: IO[bytes], filename: str, error: type[FileInputError],
                chunk_rows: int = CHUNK_ROWS) -> Iterator[Table]:
    """Chunks of rows of a CSV/JSONL log (gz too); a malformed line raises `error` naming it.

    At least one chunk is yielded (maybe empty), so callers always see the columns of a CSV header.
    """
    kind, gz = stream_kind(filename, error)
    binary = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    try:
        if kind == "csv":
            reader = csv.reader(text)
            header = _csv_header(reader, filename, error)
            rows = _csv_rows(reader, header, filename, error)
        else:
            header, rows = None, jsonl_rows(text, filename, error)
        yield from _chunks(rows, filename, header, error, chunk_rows)
    except UnicodeDecodeError as exc:
        raise error(filename, f"is not UTF-8 text ({exc.reason})") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise error(filename, f"is not a complete gzip file ({exc})") from None


def _chunks(rows: Iterator[tuple[int, dict[str, Any]]], source: str, header: list[str] | None,
            error: type[FileInputError], size: int) -> Iterator[Table]:
    records: list[dict[str, Any]] = []
    locs: list[int] = []
    yielded = False
    for line, record in rows:
        records.append(record)
        locs.append(line)
        if len(records) >= size:
            yield _table(source, header, records, locs, error)
            records, locs, yielded = [], [], True
    if records or not yielded:
        yield _table(source, header, records, locs, error)


def _table(source: str, header: list[str] | None, records: list[dict[str, Any]], locs: list[int],
           error: type[FileInputError]) -> Table:
    columns = header if header is not None else list(dict.fromkeys(k for r in records for k in r))
    return Table(source, columns, records, locs, by_line=True, is_csv=header is not None, error=error)


def _csv_header(reader: Any, source: str, error: type[FileInputError]) -> list[str]:
    try:
        first = next(reader, None)
    except csv.Error as exc:
        raise error(source, f"malformed CSV: {exc}", line=1) from None
    if first is None:
        raise error(source, "is empty: no header row")
    header = [name.strip() for name in first]
    dupes = sorted({name for name in header if header.count(name) > 1})
    if dupes:
        raise error(source, f"duplicate column names: {', '.join(dupes)}", line=1)
    return header


def _csv_rows(reader: Any, header: list[str], source: str, error: type[FileInputError]
              ) -> Iterator[tuple[int, dict[str, Any]]]:
    end = reader.line_num
    try:
        for row in reader:
            start, end = end + 1, reader.line_num  # a quoted cell may span lines
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                raise error(source, f"row has {len(row)} cells but the header has {len(header)}", line=start)
            yield start, dict(zip(header, row))
    except csv.Error as exc:
        raise error(source, f"malformed CSV: {exc}", line=reader.line_num) from None


def chunk_frame(table: Table, columns: list[str | None], keep_blank: tuple[str, ...] = ()) -> pd.DataFrame:
    """The named columns of a chunk, indexed by row. Absent keys are None, and so are empty strings
    (CSV cannot tell them apart; in JSONL an empty latency or error means none), except in the
    `keep_blank` columns of a JSONL log (an empty answer is an answer)."""
    present = [c for c in dict.fromkeys(columns) if c is not None]
    df = pd.DataFrame.from_records(table.records, columns=present) if table.records else pd.DataFrame(
        columns=present)
    blank = present if table.is_csv else [c for c in present if c not in keep_blank]
    if blank:
        df[blank] = df[blank].replace("", None)
    return df.astype(object).where(df.notna(), None)
