"""Reading tabular files (JSONL, CSV, JSON) into rows, with errors that name the file, line and field.

Shared by golden datasets (`lib.data.golden`) and recorded loads (`lib.data.loaders`)."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO, Any, NoReturn

import pandas as pd

from lib.errors import DatasetImportError, FileInputError, RecordedLoadError

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "json"}

InputErrors = type[DatasetImportError] | type[RecordedLoadError]
MAX_JSON_DEPTH = 100  # nesting levels; real cases and metadata use a handful, recursion breaks near 1000


class JsonLimitError(json.JSONDecodeError):
    """Valid JSON this tool refuses (too deep, a huge integer, a lone surrogate): a JSONDecodeError, so
    every reader's "invalid JSON: ..." message and exit 2 apply unchanged."""

    def __init__(self, msg: str, doc: str) -> None:
        super().__init__(msg, doc, 0)


def load_json(text: str) -> Any:
    """`json.loads` that fails cleanly (JSONDecodeError) instead of with RecursionError, a digit-limit
    ValueError, or a string holding a lone surrogate that SQLite would later refuse mid-write."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise JsonLimitError(f"nested more than {MAX_JSON_DEPTH} levels deep", text[:80]) from None
    except ValueError as exc:  # int() over 4300 digits
        raise JsonLimitError(f"a number is too long ({str(exc).split(':')[-1].strip().split(';')[0]})",
                             text[:80]) from None
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise JsonLimitError(f"nested more than {MAX_JSON_DEPTH} levels deep", text[:80])
    if ("\\ud" in text or "\\uD" in text) and _has_lone_surrogate(value):
        raise JsonLimitError("a string holds a lone surrogate (\\ud800-\\udfff without its pair): not valid "
                             "Unicode text", text[:80])
    return value


def _children(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    return value if isinstance(value, list) else ()


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return deepest
            stack.extend((child, depth + 1) for child in _children(node))
    return deepest


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        else:
            stack.extend(_children(node))
    return False


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


def open_input(path: Path, error: type[FileInputError]) -> IO[bytes]:
    """A user's file opened for reading; a missing path or a folder is the caller's named error, raised here
    only (an error of that kind later, inside the work on the file, is not said to be the path's)."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise error(str(path), "no such file") from None
    except IsADirectoryError:
        raise error(str(path), "is a directory, not a file") from None


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
            value = load_json(line)
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
        value = load_json(text)
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


def csv_header(reader: Any, source: str, error: InputErrors) -> list[str]:
    """The header row of a `csv.reader`, names stripped; duplicate names are an error on line 1."""
    header = [name.strip() for name in next(reader)]
    dupes = sorted({name for name in header if header.count(name) > 1})
    if dupes:
        raise error(source, f"duplicate column names: {', '.join(dupes)}", line=1)
    return header


def csv_records(reader: Any, header: list[str], source: str, error: InputErrors) -> Iterator[tuple[int, dict]]:
    """(first line, record) per non-blank row after the header; a row with more cells than the header is an
    error naming its line. The caller turns `csv.Error` into a malformed-CSV error."""
    end = reader.line_num
    for row in reader:
        # A quoted cell may span lines: a row starts on the line after the previous row ended.
        start, end = end + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise error(source, f"row has {len(row)} cells but the header has {len(header)}", line=start)
        yield start, dict(zip(header, row))


def _read_csv(text: str, source: str, error: InputErrors) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = csv_header(reader, source, error)
        rows = list(csv_records(reader, header, source, error))
    except csv.Error as exc:
        raise error(source, f"malformed CSV: {exc}", line=reader.line_num) from None
    records, locs = [record for _, record in rows], [line for line, _ in rows]
    unclosed_quote(text.count('"'), records, locs, source, error)
    return Table(source, header, records, locs, by_line=True, is_csv=True, error=error)


def unclosed_quote(n_quotes: int, records: list[dict[str, Any]], locs: list[int], source: str,
                   error: InputErrors) -> None:
    """An opening quote never closed makes Python's csv swallow every following row into one cell, without
    an error. Balanced CSV has an even number (`n_quotes`) of quote characters; with an odd one, the last
    row (of `records`, the file's last rows) that spans lines and runs to the end of the file is where the
    quote opened."""
    if n_quotes % 2 == 0 or not records:
        return
    last = records[-1]
    if any(isinstance(cell, str) and "\n" in cell for cell in last.values()):
        swallowed = sum(cell.rstrip("\n").count("\n") for cell in last.values() if isinstance(cell, str))
        raise error(source, f"unbalanced quote: a quoted cell opened here is never closed, so the next "
                            f"{swallowed} line(s) were read into it; close the quote or double it (\"\")",
                    line=locs[-1])


