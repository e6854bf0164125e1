"""Load: bring in a comparison that was already recorded (other eval tools, production logs)."""
from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from lib.data.loaders import LoadMapping, load_recorded, promptfoo
from lib.data.loaders.stream import iter_tables
from lib.data.tables import read_table
from lib.errors import RecordedLoadError, ReviewInputError
from lib.store.columns import to_json
from lib.store.entities import MATCH_RULES
from pages import _shared

st.title("Load a recorded comparison")
NONE = "(none)"
FORMATS = {"wide": "Wide: one row per case, a baseline-output and a candidate-output column",
           "long": "Long: one row per (case, model), like production or shadow-traffic logs",
           "promptfoo": "promptfoo: results.json (v3 or v2) or its JSONL output",
           "shadow": "Shadow traffic: serving and shadow model per logged request (CSV/JSONL, .gz too), streamed; "
                     "no expected answers"}
DONE_KEY = "load_outcome"
PREVIEW_ROWS = 2000  # a shadow log is previewed from its first rows only


def _pick(label: str, columns: list[str], key: str, guesses: tuple[str, ...] = ()) -> str | None:
    options = [NONE] + columns
    default = next((options.index(g) for g in guesses if g in options), 0)
    value = st.selectbox(label, options, index=default, key=f"load_{key}")
    return None if value == NONE else value


def _optional_columns(columns: list[str], traffic: bool) -> dict[str, str | None]:
    grid = st.columns(4)
    expected = [] if traffic else [("expected_col", "expected", ("expected",))]  # traffic has no expected answers
    specs = [*expected, ("category_col", "category", ("category",)),
             ("latency_col", "latency (s)", ("latency_s", "latency", "latency_ms")),
             ("cost_col", "cost (USD)", ("cost_usd", "cost")),
             ("prompt_tokens_col", "prompt tokens", ("prompt_tokens",)),
             ("completion_tokens_col", "completion tokens", ("completion_tokens",)),
             ("timestamp_col", "timestamp", ("timestamp", "ts", "created_at"))]
    out = {}
    for i, (field, label, guesses) in enumerate(specs):
        with grid[i % 4]:
            out[field] = _pick(label, columns, field, guesses)
    return out


def _preview(fmt: str, data: bytes, filename: str) -> pd.DataFrame:
    """The rows to map columns from: the whole file, or a shadow log's first rows (it may be huge)."""
    if fmt != "shadow":
        return read_table(data, filename)
    first = next(iter_tables(io.BytesIO(data), filename, RecordedLoadError, PREVIEW_ROWS))
    return pd.DataFrame.from_records(first.records, columns=first.columns)


def _sides(fmt: str, raw: pd.DataFrame, columns: list[str], fields: dict) -> None:
    """Long and shadow: which model value is the baseline (shadow: or a serving/shadow role column)."""
    fields["output_col"] = _pick("output", columns, "output_col", ("output", "response"))
    fields["model_col"] = _pick("model", columns, "model_col", ("model", "deployment"))
    if fmt == "shadow":
        fields["role_col"] = _pick("role (serving / shadow; instead of model values)", columns, "role_col", ("role",))
        if fields["role_col"]:
            return
    values = sorted(map(str, raw[fields["model_col"]].dropna().unique())) if fields["model_col"] else []
    if values:
        fields["baseline"], fields["candidate"] = _choose_sides(values, "model value")


def _choose_sides(values: list[str], what: str) -> tuple[str | None, str | None]:
    # Nothing preselected: a guessed order reverses every delta.
    picked = [st.selectbox(f"{side} {what}", values, index=None, placeholder="choose the model", key=f"load_{side}")
              for side in ("baseline", "candidate")]
    return picked[0], picked[1]


def _promptfoo_mapping(data: bytes, filename: str) -> LoadMapping | None:
    """A promptfoo file's providers, and which is which (its order is the config's, not old → new)."""
    try:
        values = promptfoo.providers(data, filename)
    except ReviewInputError as exc:
        st.error(_shared.md(exc))
        return None
    baseline, candidate = _choose_sides(values, "provider")
    return LoadMapping(baseline=baseline, candidate=candidate)


def _table_mapping(fmt: str, data: bytes, filename: str) -> LoadMapping | None:
    try:
        raw = _preview(fmt, data, filename)
    except ReviewInputError as exc:
        st.error(_shared.md(exc))
        return None
    columns = [str(c) for c in raw.columns]
    st.caption(f"Preview: {len(raw)} rows" + (" (the first rows of the log)" if fmt == "shadow" else ""))
    # Cells shown as text (untrusted); a missing cell stays empty instead of the word "nan".
    shown = raw.head(20).map(lambda v: to_json(v) if isinstance(v, (dict, list)) else v)  # JSON, not reprs
    st.dataframe(shown.astype("string"), hide_index=True, width="stretch", key="load_preview")
    left, right = st.columns(2)
    with left:
        id_col = _pick("case / request key", columns, "id_col", ("id", "case_id", "request_id"))
        input_col = _pick("input", columns, "input_col", ("input", "prompt"))
    fields: dict = {"id_col": id_col, "input_col": input_col}
    with right:
        if fmt == "wide":
            fields["baseline_col"] = _pick("baseline output", columns, "baseline_col", ("baseline_output", "baseline"))
            fields["candidate_col"] = _pick("candidate output", columns, "candidate_col",
                                            ("candidate_output", "candidate"))
        else:
            _sides(fmt, raw, columns, fields)
    fields.update(_optional_columns(columns, traffic=fmt == "shadow"))
    fields["timestamp_format"] = st.text_input(
        "timestamp format (strftime; empty: ISO 8601 or epoch seconds/milliseconds)", key="load_timestamp_format",
        placeholder="%m/%d/%Y, %H:%M:%S").strip() or None
    return LoadMapping(**fields)


def _rule_fields(mapping: LoadMapping) -> LoadMapping:
    rule = st.selectbox("Apply one match rule to every case (recorded data often has none)",
                        [NONE, *MATCH_RULES], key="load_match")
    if rule != NONE:
        mapping.match = rule
        if rule == "regex":
            mapping.pattern = st.text_input("regex pattern", key="load_pattern") or None
    return mapping


def _render() -> None:
    _shared.show_outcome(DONE_KEY, "load_go_overview")
    fmt = st.radio("Format", list(FORMATS), format_func=FORMATS.get, key="load_format")
    upload = st.file_uploader("Recorded file", type=["csv", "jsonl", "json", "gz"], key="load_upload")
    if upload is None:
        return
    data = upload.getvalue()
    if fmt == "promptfoo":
        mapping = _promptfoo_mapping(data, upload.name)
        if mapping is None:
            return
    else:
        mapping = _table_mapping(fmt, data, upload.name)
        if mapping is None:
            return
    if fmt != "shadow":
        mapping = _rule_fields(mapping)
    name = st.text_input("Comparison name", value=upload.name.rsplit(".", 1)[0], key="load_name").strip()
    system = st.text_input("System", value="default", key="load_system").strip() or "default"
    sides_missing = fmt != "wide" and not mapping.role_col and not (mapping.baseline and mapping.candidate)
    if sides_missing:
        st.info("Choose the baseline and the candidate model values.")
    if st.button("Load", type="primary", key="load_submit", disabled=not name or sides_missing):
        _do_load(data, upload.name, name, fmt, mapping, system)


def _do_load(data: bytes, filename: str, name: str, fmt: str, mapping: LoadMapping, system: str) -> None:
    try:
        result = load_recorded(_shared.engine(), data, filename, name, fmt, mapping, system)
    except ReviewInputError as exc:
        st.error(f"Nothing was loaded. {exc}")
        return
    _shared.after_write()
    messages: list[tuple[str, str]] = [("success", f"Loaded {_shared.md(result.comparison)}: {result.n_pairs} pairs, "
                                                   f"{_shared.md(result.baseline)} → {_shared.md(result.candidate)}.")]
    if result.baseline_only or result.candidate_only:
        messages.append(("warning", f"Unpaired rows: {result.baseline_only} baseline only, {result.candidate_only} "
                                    f"candidate only (first ids: {_shared.md(', '.join(result.first_unpaired_ids))})."))
    messages += [("info", _shared.md(note)) for note in result.notes]
    messages += [("warning", _shared.md(warning)) for warning in result.warnings]
    _shared.keep_outcome(DONE_KEY, result.comparison, messages)


_render()
