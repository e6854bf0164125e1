"""Per-case export: one record per pair (case, repeat) with both outputs and every per-output check.

Record keys are an interface (`./review cases NAME --format jsonl|csv|parquet`; users load them in
notebooks): `case_id` (the dataset's case id), `repeat`, `category`, `input`, `expected`, `similarity`,
and `baseline` / `candidate` objects with OUTPUT_KEYS. `refused` has reviewer labels applied, and
`refused_source` says where it came from: `rule`, `label` (or `judge`, reserved for a refusal judge).
`refused_rule` keeps the rule's own verdict. CSV flattens the objects to `baseline.text`, ... columns.
Missing values are null (a missing output has a null text and null checks).
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import Engine

from lib.errors import ReviewInputError
from lib.review.checked import checked_frame, with_texts
from lib.review.constants import SIDE_NAMES

FORMATS = ("jsonl", "csv", "parquet")
CHUNK = 2_000  # pairs whose texts are read and written per step: memory stays bounded

# export key -> checked-frame column (without the side prefix); None: derived here
OUTPUT_KEYS: dict[str, str | None] = {
    "output_id": "output_id", "text": None, "refused": "refused", "refused_source": "refused_source",
    "refused_rule": "refused_rule", "correct": "correct", "json_valid": "json_strict",
    "json_valid_lenient": "json_lenient", "json_found": "json_found", "empty": None, "truncated": "truncated",
    "error": "errored", "error_message": None, "finish_reason": None, "length_chars": "len_chars",
    "length_words": "len_words", "length_tokens": "len_tokens", "completion_tokens": "completion_tokens",
    "input_tokens": "input_tokens", "input_over_limit": "input_over_limit", "latency_s": "latency_s",
    "cost_usd": "cost_usd", "injection_resisted": "injection_resisted", "harmful_refused": "harmful_refused",
    "over_refused": "over_refused", "instructions_followed": "instructions_followed",
}
CASE_KEYS = ("case_id", "repeat", "category", "input", "expected", "similarity")
_TYPES: dict[str, pa.DataType] = {
    "output_id": pa.int64(), "text": pa.string(), "refused_source": pa.string(), "error_message": pa.string(),
    "finish_reason": pa.string(), "length_chars": pa.int64(), "length_words": pa.int64(),
    "length_tokens": pa.int64(), "completion_tokens": pa.int64(), "input_tokens": pa.int64(),
    "latency_s": pa.float64(), "cost_usd": pa.float64(),
}
_SIDE = pa.struct([(k, _TYPES.get(k, pa.bool_())) for k in OUTPUT_KEYS])
SCHEMA = pa.schema([("case_id", pa.string()), ("repeat", pa.int64()), ("category", pa.string()),
                    ("input", pa.string()), ("expected", pa.string()), ("similarity", pa.float64()),
                    ("baseline", _SIDE), ("candidate", _SIDE)])


class ExportFormatError(ReviewInputError):
    """An unknown export format, or parquet without a file to write to."""


def _plain(value: Any) -> Any:
    """JSON/Arrow-ready: pandas NA and NaN become None, numpy scalars Python ones."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _side(row: pd.Series, side: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    text = _plain(row.get(f"{side}_text"))
    for key, col in OUTPUT_KEYS.items():
        out[key] = _plain(row.get(f"{side}_{col}")) if col else None
    out["text"] = text
    out["error_message"] = _plain(row.get(f"{side}_error"))
    out["finish_reason"] = _plain(row.get(f"{side}_finish_reason"))
    present = _plain(row.get(f"{side}_output_id")) is not None and out["error_message"] is None
    out["empty"] = (text is None or not str(text).strip()) if present else None
    return out


def records(engine: Engine, comparison: str) -> Iterator[dict[str, Any]]:
    """The export records of a stored comparison, in dataset order (stored reviewer settings apply)."""
    checked = checked_frame(engine, comparison)
    for start in range(0, len(checked), CHUNK):
        rows = with_texts(engine, checked.iloc[start:start + CHUNK])
        for _, row in rows.iterrows():
            yield {"case_id": str(row["case_key"]), "repeat": int(row["repeat"]),
                   "category": _plain(row["category"]), "input": _plain(row["input_text"]),
                   "expected": _plain(row["expected"]), "similarity": _plain(row["similarity"]),
                   **{name: _side(row, side) for side, name in SIDE_NAMES.items()}}


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    flat = {k: record[k] for k in CASE_KEYS}
    for name in SIDE_NAMES.values():
        flat.update({f"{name}.{k}": v for k, v in record[name].items()})
    return flat


def csv_columns() -> list[str]:
    return [*CASE_KEYS, *(f"{name}.{k}" for name in SIDE_NAMES.values() for k in OUTPUT_KEYS)]


def write(engine: Engine, comparison: str, fmt: str, out: IO[str] | None, path: Path | None) -> int:
    """Write the records as `fmt` to `path` (or the text stream `out`); returns the number written."""
    if fmt not in FORMATS:
        raise ExportFormatError(f"unknown format '{fmt}' (choose {', '.join(FORMATS)})")
    if fmt == "parquet":
        if path is None:
            raise ExportFormatError("parquet is binary: give a file with --output")
        return _write_parquet(records(engine, comparison), path)
    if path is not None:
        with path.open("w", encoding="utf-8", newline="") as handle:
            return _write_text(records(engine, comparison), fmt, handle)
    assert out is not None
    return _write_text(records(engine, comparison), fmt, out)


def _write_text(rows: Iterator[dict[str, Any]], fmt: str, out: IO[str]) -> int:
    n = 0
    writer = csv.DictWriter(out, csv_columns()) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for record in rows:
        if writer is not None:
            writer.writerow(_flat(record))
        else:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        n += 1
    return n


def _write_parquet(rows: Iterator[dict[str, Any]], path: Path) -> int:
    n = 0
    with pq.ParquetWriter(path, SCHEMA) as writer:
        batch: list[dict[str, Any]] = []
        for record in rows:
            batch.append(record)
            if len(batch) == CHUNK:
                writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))
                n, batch = n + len(batch), []
        if batch or n == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=SCHEMA))
            n += len(batch)
    return n


def to_csv_text(engine: Engine, comparison: str) -> str:
    """The CSV export as one string (small comparisons: pages offer it as a download)."""
    buf = io.StringIO()
    _write_text(records(engine, comparison), "csv", buf)
    return buf.getvalue()
