"""Wide files: one row per case with a baseline-output and a candidate-output column.

Per-side numbers sit in columns named after the output column's prefix: with `baseline_output`,
`baseline_latency_s`, `baseline_cost_usd`, `baseline_error`, ... (a metric flag names the part after
the prefix). Row-level columns (id, input, expected, category, timestamp) apply to both sides.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from lib.data.answers import answer_texts
from lib.data.fields import content_key
from lib.data.loaders.long import (
    CATEGORY_COLS,
    COMPLETION_TOKENS_COLS,
    COST_COLS,
    ERROR_COLS,
    EXPECTED_COLS,
    ID_COLS,
    INPUT_COLS,
    LATENCY_COLS,
    PROMPT_TOKENS_COLS,
    TIMESTAMP_COLS,
    keys,
    pick,
    read_columns,
    require,
)
from lib.data.loaders.store import SIDES, Recorded, assemble, mapping_rule
from lib.data.tables import Table

if TYPE_CHECKING:
    from lib.data.loaders import LoadMapping

OUTPUT_COLS = {"baseline": ("baseline_output", "baseline"), "candidate": ("candidate_output", "candidate")}


def _prefix(output_col: str) -> str:
    return output_col[: -len("output")] if output_col.endswith("output") else f"{output_col}_"


def _suffix(given: str | None, prefixes: list[str]) -> str | None:
    """A metric flag names the part after the side prefix; a full column name of either side works too."""
    if given is None:
        return None
    return next((given[len(p):] for p in prefixes if given.startswith(p)), given)


def _side_columns(table: Table, m: LoadMapping, prefix: str, prefixes: list[str]) -> dict[str, str | None]:
    """Frame column -> this side's file column; a named metric column must exist for each side."""
    wanted = {"error": (None, ERROR_COLS), "latency_s": (m.latency_col, LATENCY_COLS),
              "cost_usd": (m.cost_col, COST_COLS),
              "prompt_tokens": (m.prompt_tokens_col, PROMPT_TOKENS_COLS),
              "completion_tokens": (m.completion_tokens_col, COMPLETION_TOKENS_COLS)}
    columns = {}
    for name, (given, defaults) in wanted.items():
        suffix = _suffix(given, prefixes)
        named = prefix + suffix if suffix else None
        columns[name] = pick(table, named, tuple(prefix + d for d in defaults), name)
    return columns


def _model_names(m: LoadMapping, outputs: dict[str, str]) -> tuple[str, str, list[str]]:
    """Names given, else the output column when the user chose it (e.g. a `gpt-4o` column)."""
    names = [given or (col if col not in OUTPUT_COLS[side] else side)
             for side, given, col in zip(SIDES, (m.baseline, m.candidate), outputs.values())]
    generic = names == list(SIDES)
    warning = ["model names not given: using 'baseline' and 'candidate' (pass --baseline/--candidate)"]
    return names[0], names[1], warning if generic else []


def parse(table: Table, m: LoadMapping) -> Recorded:
    rule = mapping_rule(table.source, m.match, m.pattern)
    key_col = pick(table, m.id_col, ID_COLS, "id")
    input_col = require(table, pick(table, m.input_col, INPUT_COLS, "input"), INPUT_COLS, "input", "--input-col")
    outputs = {side: require(table, pick(table, given, OUTPUT_COLS[side], f"{side}_output"), OUTPUT_COLS[side],
                             f"{side}_output", f"--{side}-col")
               for side, given in zip(SIDES, (m.baseline_col, m.candidate_col))}
    shared = {"expected": pick(table, m.expected_col, EXPECTED_COLS, "expected"),
              "category": pick(table, m.category_col, CATEGORY_COLS, "category"),
              "logged_at": pick(table, m.timestamp_col, TIMESTAMP_COLS, "timestamp")}
    prefixes = [_prefix(col) for col in outputs.values()]
    per_side = {side: _side_columns(table, m, prefix, prefixes) for side, prefix in zip(SIDES, prefixes)}
    baseline, candidate, warnings = _model_names(m, outputs)
    df = table.frame()
    if key_col is None:
        warnings.append(f"no id column: cases are keyed by their input ('{input_col}')")
    base = {"key": keys(table, df, key_col) if key_col else df[input_col].map(content_key),
            "row": df.index, "input": df[input_col], **read_columns(table, df, shared, m, warnings)}
    parts = []
    for side, col in outputs.items():
        texts, notes = answer_texts(df[col], col)
        warnings += notes
        part = pd.DataFrame({**base, "side": side, "text": texts, **read_columns(table, df, per_side[side])},
                            index=df.index)
        # A side with neither an output nor an error did not answer this case: it stays unpaired.
        answered = part["text"].notna() | (part["error"].notna() if "error" in part else False)
        parts.append(part[answered])
    frame = pd.concat(parts).sort_values("row", kind="stable")
    return assemble(frame, table, baseline, candidate, rule, warnings)
