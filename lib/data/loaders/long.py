"""Long files (production or shadow logs): one row per (case, model), joined on a request key.

Also the column helpers the wide loader shares: picking a column, numbers, timestamps.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from lib.data.fields import InvalidField, case_key, content_key
from lib.data.tables import Table
from lib.data.loaders.store import Recorded, assemble, choose_models, mapping_rule

if TYPE_CHECKING:
    from lib.data.loaders import LoadMapping

# Default column names, tried in order when the mapping does not name one.
ID_COLS = ("id", "request_id", "case_id", "key")
INPUT_COLS = ("input", "prompt", "question")
OUTPUT_COLS = ("output", "response", "completion")
MODEL_COLS = ("model", "model_name", "deployment")
EXPECTED_COLS = ("expected", "reference", "target")
CATEGORY_COLS = ("category",)
LATENCY_COLS = ("latency_s", "latency_ms", "latency")
COST_COLS = ("cost_usd", "cost")
PROMPT_TOKENS_COLS = ("prompt_tokens", "input_tokens")
COMPLETION_TOKENS_COLS = ("completion_tokens", "output_tokens")
TIMESTAMP_COLS = ("timestamp", "logged_at", "created_at", "time")
ERROR_COLS = ("error",)


def pick(table: Table, given: str | None, defaults: tuple[str, ...], field: str) -> str | None:
    """The column for a field: the one the user named (which must exist) or the first default present."""
    if given is not None:
        if given not in table.columns:
            table.missing_column(given, field)
        return given
    return next((c for c in defaults if c in table.columns), None)


def require(table: Table, column: str | None, defaults: tuple[str, ...], field: str, flag: str) -> str:
    if column is None:
        table.fail_header(f"has no column: none named {' or '.join(defaults)} (pass {flag}); available "
                          f"columns: {', '.join(table.columns)}", field=field)
    return column


def numbers(table: Table, df: pd.DataFrame, column: str, *, integer: bool = False) -> pd.Series:
    """A numeric column; a cell that is not a number is an error on its row."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = (values.isna() & raw.notna()).to_numpy()
    if bad.any():
        row = int(bad.argmax())
        table.fail(int(df.index[row]), f"is '{raw.iloc[row]}', not a number", field=column)
    return values.round().astype("Int64") if integer else values.astype(float)


def seconds(table: Table, df: pd.DataFrame, column: str) -> pd.Series:
    """Latency in seconds; a column named *ms holds milliseconds."""
    values = numbers(table, df, column)
    return values / 1000.0 if column.lower().endswith("ms") else values


def timestamps(table: Table, df: pd.DataFrame, column: str) -> pd.Series:
    """ISO 8601 text (naive means UTC) or epoch seconds, as timezone-aware UTC."""
    raw = df[column]
    epoch = pd.to_numeric(raw, errors="coerce")
    if raw.notna().any() and epoch.notna().sum() == raw.notna().sum():
        return pd.to_datetime(epoch, unit="s", utc=True)
    values = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    bad = (values.isna() & raw.notna()).to_numpy()
    if bad.any():
        row = int(bad.argmax())
        table.fail(int(df.index[row]), f"is '{raw.iloc[row]}', not an ISO 8601 timestamp", field=column)
    return values


def keys(table: Table, df: pd.DataFrame, column: str) -> pd.Series:
    """Case keys as text; an empty key is an error on its row."""
    out = []
    for row, value in zip(df.index, df[column]):
        try:
            out.append(case_key(value))
        except InvalidField as exc:
            table.fail(int(row), exc.message, field=column)
    return pd.Series(out, index=df.index, dtype=object)


def optional_columns(table: Table, m: LoadMapping) -> dict[str, str | None]:
    """Frame column -> file column, for the optional fields (None: not in the file)."""
    return {
        "expected": pick(table, m.expected_col, EXPECTED_COLS, "expected"),
        "category": pick(table, m.category_col, CATEGORY_COLS, "category"),
        "error": pick(table, None, ERROR_COLS, "error"),
        "latency_s": pick(table, m.latency_col, LATENCY_COLS, "latency"),
        "cost_usd": pick(table, m.cost_col, COST_COLS, "cost"),
        "prompt_tokens": pick(table, m.prompt_tokens_col, PROMPT_TOKENS_COLS, "prompt_tokens"),
        "completion_tokens": pick(table, m.completion_tokens_col, COMPLETION_TOKENS_COLS, "completion_tokens"),
        "logged_at": pick(table, m.timestamp_col, TIMESTAMP_COLS, "timestamp"),
    }


def read_columns(table: Table, df: pd.DataFrame, columns: dict[str, str | None]) -> dict[str, pd.Series]:
    """The optional fields present, parsed (numbers, timestamps) as the output table needs them."""
    read = {}
    for name, column in columns.items():
        if column is None:
            continue
        if name == "latency_s":
            read[name] = seconds(table, df, column)
        elif name == "cost_usd":
            read[name] = numbers(table, df, column)
        elif name in ("prompt_tokens", "completion_tokens"):
            read[name] = numbers(table, df, column, integer=True)
        elif name == "logged_at":
            read[name] = timestamps(table, df, column)
        else:
            read[name] = df[column]
    return read


def parse(table: Table, m: LoadMapping) -> Recorded:
    rule = mapping_rule(table.source, m.match, m.pattern)
    key_col = pick(table, m.id_col, ID_COLS, "id")
    model_col = require(table, pick(table, m.model_col, MODEL_COLS, "model"), MODEL_COLS, "model", "--model-col")
    input_col = require(table, pick(table, m.input_col, INPUT_COLS, "input"), INPUT_COLS, "input", "--input-col")
    output_col = require(table, pick(table, m.output_col, OUTPUT_COLS, "output"), OUTPUT_COLS, "output",
                         "--output-col")
    optional = optional_columns(table, m)
    df = table.frame()
    models = df[model_col]
    if models.isna().any():
        table.fail(int(models.isna().to_numpy().argmax()), "is empty", field=model_col)
    models = models.astype(str)
    baseline, candidate, warnings = choose_models(table.source, models.drop_duplicates().tolist(),
                                                  m.baseline, m.candidate, what="model values",
                                                  auto_order=False)
    df = df[models.isin([baseline, candidate])]
    if key_col is None:
        warnings.append(f"no id column: rows are paired on their input ('{input_col}')")
    frame = pd.DataFrame({
        "key": keys(table, df, key_col) if key_col else df[input_col].map(content_key),
        "side": (models[df.index] == candidate).map({False: "baseline", True: "candidate"}),
        "row": df.index, "input": df[input_col], "text": df[output_col],
        **read_columns(table, df, optional),
    }, index=df.index)
    return assemble(frame, table, baseline, candidate, rule, warnings)
