"""Long files (production or shadow logs): one row per (case, model), joined on a request key.

Also the column helpers the wide loader shares: picking a column, numbers, timestamps.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from lib.data.answers import answer_texts
from lib.data.fields import InvalidField, case_key, content_key
from lib.data.loaders.store import Recorded, assemble, choose_models, mapping_rule
from lib.data.tables import Table
from lib.errors import RecordedLoadError
from lib.run.redact import scrubber

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


EPOCH_MS_FROM = 1e11  # epoch seconds reach 1e11 only in the year 5138: larger numbers are milliseconds
NO_INPUT_WARNING = ("no input column: checks that need the input (input token limit, input drift, search "
                    "over inputs) are skipped")


def parse_timestamps(raw: pd.Series, fmt: str | None = None) -> pd.Series:
    """UTC timestamps from ISO 8601 text (naive means UTC), epoch seconds or milliseconds, or text in the
    strftime `fmt`; NaT where a present cell does not parse. A day/month order is never guessed."""
    if fmt:
        return pd.to_datetime(raw, format=fmt, utc=True, errors="coerce")
    epoch = pd.to_numeric(raw, errors="coerce")
    if raw.notna().any() and epoch.notna().sum() == raw.notna().sum():
        as_ms = epoch.abs() >= EPOCH_MS_FROM
        seconds_ = epoch.where(~as_ms, epoch / 1000.0)
        return pd.to_datetime(seconds_, unit="s", utc=True)
    return pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")


def _bad_timestamp(raw: pd.Series, values: pd.Series) -> int | None:
    bad = (values.isna() & raw.notna()).to_numpy()
    return int(bad.argmax()) if bad.any() else None


def _timestamp_hint(fmt: str | None) -> str:
    if fmt:
        return f"not a timestamp in the format '{fmt}'"
    return ("not ISO 8601 or epoch seconds/milliseconds; give its format with --timestamp-format "
            "(strftime, e.g. '%m/%d/%Y, %H:%M:%S' or '%d/%m/%Y, %H:%M:%S': the day/month order is never guessed)")


def timestamps(table: Table, df: pd.DataFrame, column: str, fmt: str | None = None) -> pd.Series:
    """`parse_timestamps` of a column; a cell that does not parse is an error on its row."""
    raw = df[column]
    values = parse_timestamps(raw, fmt)
    row = _bad_timestamp(raw, values)
    if row is not None:
        table.fail(int(df.index[row]), f"is '{raw.iloc[row]}', {_timestamp_hint(fmt)}", field=column)
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


def read_columns(table: Table, df: pd.DataFrame, columns: dict[str, str | None], m: LoadMapping | None = None,
                 warnings: list[str] | None = None) -> dict[str, pd.Series]:
    """The optional fields present, parsed (numbers, timestamps) as the output table needs them.

    A timestamp column picked by its default name that does not parse is dropped from `columns` with a
    warning (the load goes on without timestamps); one the user named (`m.timestamp_col`) fails on its row.
    """
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
            stamps = _logged_at(table, df, column, columns, m, warnings)
            if stamps is not None:
                read[name] = stamps
        elif name == "error":  # a logged provider error may echo the key it was sent
            read[name] = df[column].map(scrubber(), na_action="ignore")
        else:
            read[name] = df[column]
    return read


def _logged_at(table: Table, df: pd.DataFrame, column: str, columns: dict[str, str | None], m: LoadMapping | None,
               warnings: list[str] | None) -> pd.Series | None:
    fmt = m.timestamp_format if m is not None else None
    named = m is not None and m.timestamp_col is not None
    if named or warnings is None:
        return timestamps(table, df, column, fmt)
    raw = df[column]
    values = parse_timestamps(raw, fmt)
    row = _bad_timestamp(raw, values)
    if row is None:
        return values
    columns["logged_at"] = None  # ignored from here on (a streamed log: for the chunks still to come)
    warnings.append(f"column '{column}' ignored (picked as the timestamp by its name): '{raw.iloc[row]}' is "
                    f"{_timestamp_hint(fmt)}; or pass --timestamp-col to use it")
    return None


def answered_text(text: pd.Series, error: pd.Series | None) -> pd.Series:
    """A logged row without an error answered, so a blank output cell is an empty answer (""), not a
    missing one: CSV cannot tell the two apart, and empty answers are what the empty-output check counts."""
    blank = text.isna() if error is None else text.isna() & error.isna()
    return text.where(~blank, "")


def model_summary(models: pd.Series, stamps: pd.Series | None) -> str:
    """Each model value with its row count and first/last timestamp, for a "which is which?" error."""
    parts = []
    for value, count in models.value_counts(sort=False).items():
        span = ""
        if stamps is not None:
            own = stamps[models == value].dropna()
            if len(own):
                span = f", {own.min().isoformat()} .. {own.max().isoformat()}"
        parts.append(f"'{value}' ({count} rows{span})")
    return "; ".join(parts)


def parse(table: Table, m: LoadMapping) -> Recorded:
    rule = mapping_rule(table.source, m.match, m.pattern)
    key_col = pick(table, m.id_col, ID_COLS, "id")
    model_col = require(table, pick(table, m.model_col, MODEL_COLS, "model"), MODEL_COLS, "model", "--model-col")
    input_col = pick(table, m.input_col, INPUT_COLS, "input")
    if input_col is None and key_col is None:
        table.fail_header(f"has neither an id column ({' or '.join(ID_COLS)}, or --id-col) nor an input column "
                          f"({' or '.join(INPUT_COLS)}, or --input-col) to pair rows on; available columns: "
                          f"{', '.join(table.columns)}", field="id")
    output_col = require(table, pick(table, m.output_col, OUTPUT_COLS, "output"), OUTPUT_COLS, "output",
                         "--output-col")
    optional = optional_columns(table, m)
    df = table.frame()
    warnings: list[str] = []
    read = read_columns(table, df, optional, m, warnings)
    models = df[model_col]
    if models.isna().any():
        table.fail(int(models.isna().to_numpy().argmax()), "is empty", field=model_col)
    models = models.astype(str)
    values = models.drop_duplicates().tolist()
    if m.baseline is None and m.candidate is None and len(values) >= 2:
        raise RecordedLoadError(table.source, "which is the baseline and which the candidate? pass --baseline and "
                                              f"--candidate; the model values are: "
                                              f"{model_summary(models, read.get('logged_at'))}")
    baseline, candidate, chosen = choose_models(table.source, values, m.baseline, m.candidate,
                                                what="model values", auto_order=False)
    warnings = chosen + warnings
    keep = models.isin([baseline, candidate])
    df = df[keep]
    if key_col is None:
        warnings.append(f"no id column: rows are paired on their input ('{input_col}')")
    if input_col is None:
        warnings.append(NO_INPUT_WARNING)
    texts, notes = answer_texts(df[output_col], output_col)
    warnings += notes
    frame = pd.DataFrame({
        "key": keys(table, df, key_col) if key_col else df[input_col].map(content_key),
        "side": (models[df.index] == candidate).map({False: "baseline", True: "candidate"}),
        "row": df.index, "input": df[input_col] if input_col else None,
        "text": answered_text(texts, read["error"][keep] if "error" in read else None),
        **{name: col[keep] for name, col in read.items()},
    }, index=df.index)
    return assemble(frame, table, baseline, candidate, rule, warnings, has_input=input_col is not None)
