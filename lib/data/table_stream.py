"""Reading a CSV or JSONL file in chunks of rows, never whole, with `read_rows`' exact messages.

`read_rows` (lib.data.tables) decodes a file whole, then parses it; this yields the same rows as
`Table`s of at most `chunk_rows` rows, with the same line numbers and the same errors: bytes that are
not UTF-8 (named by line and byte), an empty file, a bad header, a malformed row, an unclosed quote
(the last row swallowed the rest of the file: checked before the last chunk is yielded). A JSON array
cannot be streamed: it comes whole, as one chunk.

Only the order of errors can differ from `read_rows`: a file with two faults reports the first one
met, where `read_rows` reported a decoding or CSV fault anywhere before any fault in a row's fields.
"""
from __future__ import annotations

import codecs
import csv
import ctypes
import ctypes.util
import gc
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import IO, Any

from lib.data.tables import (
    InputErrors,
    Table,
    csv_header,
    csv_records,
    file_kind,
    jsonl_rows,
    read_rows,
    unclosed_quote,
)

CHUNK_ROWS = 20_000
BLOCK = 1 << 20  # bytes read at a time


class _Utf8Checked(io.RawIOBase):
    """A binary stream passed through unchanged, refused at its first byte that is not UTF-8 (with the
    line and the byte, as `decode_text` says it), counting quote characters on the way."""

    def __init__(self, raw: IO[bytes], source: str, error: InputErrors):
        self.raw, self.source, self.error = raw, source, error
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.newlines = 0  # in the bytes passed so far
        self.quotes = 0
        self.ahead: list[bytes] = []  # blocks read by `check_not_blank`, not passed on yet

    def readable(self) -> bool:
        return True

    def _next_block(self) -> bytes:
        block = self.raw.read(BLOCK)
        pending = self.decoder.getstate()[0]
        try:
            self.decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            data = pending + block
            line = self.newlines + data[: exc.start].count(b"\n") + 1
            raise self.error(self.source, f"is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8",
                             line=line) from None
        self.newlines += block.count(b"\n")
        self.quotes += block.count(b'"')
        return block

    def check_not_blank(self) -> None:
        """Read ahead to the first character that is not whitespace; a file without one is empty."""
        text = codecs.getincrementaldecoder("utf-8-sig")()
        while True:
            block = self._next_block()
            self.ahead.append(block)
            if text.decode(block, final=not block).strip():
                return
            if not block:
                raise self.error(self.source, "the file is empty")

    def readinto(self, buffer: Any) -> int:
        block = self.ahead.pop(0) if self.ahead else self._next_block()
        if len(block) > len(buffer):  # never: TextIOWrapper asks for BLOCK-sized reads or more
            self.ahead.insert(0, block[len(buffer):])
            block = block[: len(buffer)]
        buffer[: len(block)] = block
        return len(block)


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection within the block: an import makes millions of small objects (rows, cells,
    cases) and keeps many alive, so the collector's generation scans cost a quarter of its CPU (measured on
    the 1M-row CSV: 7.9 s -> 5.9 s) and free nothing (rows hold no cycles). Reference counting still frees
    every chunk."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim): after a big step frees most of
    what it built (a parsed file, a chunk's checks), the process's resident size drops to what is still used
    instead of staying at the step's peak while the next step runs. A no-op where there is no glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def iter_row_tables(raw: IO[bytes], filename: str, error: InputErrors,
                    chunk_rows: int | None = None) -> Iterator[Table]:
    """Chunks of a JSONL, CSV or JSON file's rows (`read_rows` in pieces); at least one chunk."""
    kind = file_kind(filename, error)
    chunk_rows = chunk_rows or CHUNK_ROWS
    if kind == "json":
        yield read_rows(raw.read(), filename, error)
        return
    checked = _Utf8Checked(raw, filename, error)
    checked.check_not_blank()
    buffered = io.BufferedReader(checked, buffer_size=BLOCK)
    if kind == "csv":
        text = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")
        yield from _csv_tables(text, checked, filename, error, chunk_rows)
    else:  # lines end at \n only, as in read_rows: U+2028 and \r are valid inside JSON strings
        text = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="\n")
        lines = (line[:-1] if line.endswith("\n") else line for line in text)
        yield from _jsonl_tables(jsonl_rows(lines, filename, error), filename, error, chunk_rows)


def _jsonl_tables(rows: Iterator[tuple[int, dict[str, Any]]], source: str, error: InputErrors,
                  size: int) -> Iterator[Table]:
    records: list[dict[str, Any]] = []
    locs: list[int] = []
    for line, record in rows:
        if len(records) >= size:
            yield _jsonl_table(source, records, locs, error)
            records, locs = [], []
        records.append(record)
        locs.append(line)
    yield _jsonl_table(source, records, locs, error)


def _jsonl_table(source: str, records: list[dict[str, Any]], locs: list[int], error: InputErrors) -> Table:
    columns = list(dict.fromkeys(key for record in records for key in record))
    return Table(source, columns, records, locs, by_line=True, is_csv=False, error=error)


def _csv_tables(text: IO[str], checked: _Utf8Checked, source: str, error: InputErrors,
                size: int) -> Iterator[Table]:
    reader = csv.reader(text)
    try:
        header = csv_header(reader, source, error)
        records: list[dict[str, Any]] = []
        locs: list[int] = []
        for start, record in csv_records(reader, header, source, error):
            if len(records) >= size:  # yielded once a next row exists: the last chunk is checked below
                yield Table(source, header, records, locs, by_line=True, is_csv=True, error=error)
                records, locs = [], []
            records.append(record)
            locs.append(start)
    except csv.Error as exc:
        raise error(source, f"malformed CSV: {exc}", line=reader.line_num) from None
    unclosed_quote(checked.quotes, records, locs, source, error)
    yield Table(source, header, records, locs, by_line=True, is_csv=True, error=error)
