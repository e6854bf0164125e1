"""Load: bring in a comparison that was already recorded (other eval tools, production logs)."""
from __future__ import annotations

import streamlit as st

from lib.datasets import read_table
from lib.errors import ReviewInputError
from lib.loaders import LoadMapping, load_recorded
from lib.models import MATCH_RULES
from pages import _shared

st.title("Load a recorded comparison")
NONE = "(none)"
FORMATS = {"wide": "Wide: one row per case, a baseline-output and a candidate-output column",
           "long": "Long: one row per (case, model), like production or shadow-traffic logs",
           "promptfoo": "promptfoo: results.json (v3 or v2) or its JSONL output"}


def _pick(label: str, columns: list[str], key: str, guesses: tuple[str, ...] = ()) -> str | None:
    options = [NONE] + columns
    default = next((options.index(g) for g in guesses if g in options), 0)
    value = st.selectbox(label, options, index=default, key=f"load_{key}")
    return None if value == NONE else value


def _optional_columns(columns: list[str]) -> dict[str, str | None]:
    grid = st.columns(4)
    specs = [("expected_col", "expected", ("expected",)), ("category_col", "category", ("category",)),
             ("latency_col", "latency (s)", ("latency_s", "latency")), ("cost_col", "cost (USD)", ("cost_usd", "cost")),
             ("prompt_tokens_col", "prompt tokens", ("prompt_tokens",)),
             ("completion_tokens_col", "completion tokens", ("completion_tokens",)),
             ("timestamp_col", "timestamp", ("timestamp", "ts", "created_at"))]
    out = {}
    for i, (field, label, guesses) in enumerate(specs):
        with grid[i % 4]:
            out[field] = _pick(label, columns, field, guesses)
    return out


def _table_mapping(fmt: str, data: bytes, filename: str) -> LoadMapping | None:
    try:
        raw = read_table(data, filename)
    except ReviewInputError as exc:
        st.error(str(exc))
        return None
    columns = [str(c) for c in raw.columns]
    st.caption(f"Preview: {len(raw)} rows")
    st.dataframe(raw.head(20).astype(str), hide_index=True, width="stretch", key="load_preview")
    left, right = st.columns(2)
    with left:
        id_col = _pick("case / request key", columns, "id_col", ("id", "case_id", "request_id"))
        input_col = _pick("input", columns, "input_col", ("input", "prompt"))
    fields: dict = {"id_col": id_col, "input_col": input_col}
    with right:
        if fmt == "wide":
            fields["baseline_col"] = _pick("baseline output", columns, "baseline_col", ("baseline_output", "baseline"))
            fields["candidate_col"] = _pick("candidate output", columns, "candidate_col", ("candidate_output", "candidate"))
        else:
            fields["output_col"] = _pick("output", columns, "output_col", ("output", "response"))
            fields["model_col"] = _pick("model", columns, "model_col", ("model", "deployment"))
            values = sorted(map(str, raw[fields["model_col"]].dropna().unique())) if fields["model_col"] else []
            if values:
                fields["baseline"] = st.selectbox("baseline model value", values, key="load_baseline")
                fields["candidate"] = st.selectbox("candidate model value", values,
                                                   index=min(1, len(values) - 1), key="load_candidate")
    fields.update(_optional_columns(columns))
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
    fmt = st.radio("Format", list(FORMATS), format_func=FORMATS.get, key="load_format")
    upload = st.file_uploader("Recorded file", type=["csv", "jsonl", "json"], key="load_upload")
    if upload is None:
        return
    data = upload.getvalue()
    if fmt == "promptfoo":
        mapping = LoadMapping()
    else:
        mapping = _table_mapping(fmt, data, upload.name)
        if mapping is None:
            return
    mapping = _rule_fields(mapping)
    name = st.text_input("Comparison name", value=upload.name.rsplit(".", 1)[0], key="load_name").strip()
    system = st.text_input("System", value="default", key="load_system").strip() or "default"
    if st.button("Load", type="primary", key="load_submit", disabled=not name):
        _do_load(data, upload.name, name, fmt, mapping, system)


def _do_load(data: bytes, filename: str, name: str, fmt: str, mapping: LoadMapping, system: str) -> None:
    try:
        result = load_recorded(_shared.engine(), data, filename, name, fmt, mapping, system)
    except ReviewInputError as exc:
        st.error(f"Nothing was loaded. {exc}")
        return
    _shared.after_write()
    _shared.set_active(result.comparison)
    st.success(f"Loaded {_shared.md(result.comparison)}: {result.n_pairs} pairs, "
               f"{_shared.md(result.baseline)} → {_shared.md(result.candidate)}.")
    if result.baseline_only or result.candidate_only:
        st.warning(f"Unpaired rows: {result.baseline_only} baseline only, {result.candidate_only} candidate "
                   f"only (first ids: {_shared.md(', '.join(result.first_unpaired_ids))}).")
    for warning in result.warnings:
        st.info(_shared.md(warning))


_render()
