"""Datasets: the golden datasets in the store, and importing one with a column mapping."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.data.golden import ColumnMapping, import_dataset, list_datasets
from lib.data.tables import read_table
from lib.errors import ReviewInputError
from lib.store.columns import to_json
from pages import _shared

st.title("Golden datasets")
NONE = "(none)"
FIELDS = ("id", "input", "expected", "match", "pattern", "schema", "category", "metadata")


def _render_list() -> None:
    rows = list_datasets(_shared.engine())
    if not rows:
        st.info("No golden dataset yet: upload one above.")
        return
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="datasets_table")


def _mapping_form(columns: list[str]) -> ColumnMapping:
    """One selectbox per documented field, defaulting to the same-named column when present."""
    chosen: dict[str, str | None] = {}
    grid = st.columns(4)
    for i, field in enumerate(FIELDS):
        options = ([] if field == "input" else [NONE]) + columns
        default = options.index(field) if field in options else 0
        value = grid[i % 4].selectbox(field, options, index=default, key=f"datasets_map_{field}")
        chosen[field] = None if value == NONE else value
    return ColumnMapping(**chosen)


def _render_import() -> None:
    st.subheader("Import")
    st.caption("JSONL, CSV or JSON. Documented fields: `id`, `input` (text or a list of {role, content}), "
               "`expected`, `match` (exact, normalized, contains, not_contains, regex, numeric), "
               "`pattern`, `schema`, `category`, `metadata`. Other column names map below.")
    upload = st.file_uploader("Dataset file", type=["jsonl", "csv", "json"], key="datasets_upload")
    if upload is None:
        return
    data = upload.getvalue()
    try:
        raw = read_table(data, upload.name)
    except ReviewInputError as exc:
        st.error(_shared.md(exc))  # names the uploaded file: untrusted
        return
    # Column and file names are the uploader's: escaped, so `![c](http://...)` is text, not a fetch.
    st.caption(f"Preview: {len(raw)} rows, columns {', '.join(_shared.md(c) for c in raw.columns)}")
    shown = raw.head(20).map(lambda v: to_json(v) if isinstance(v, (dict, list)) else v)  # JSON, not reprs
    st.dataframe(shown.astype("string"), hide_index=True, width="stretch", key="datasets_preview")  # no "nan"
    mapping = _mapping_form([str(c) for c in raw.columns])
    default_name = upload.name.rsplit(".", 1)[0]
    name = st.text_input("Dataset name", value=default_name, key="datasets_name").strip()
    if st.button("Import", type="primary", key="datasets_import", disabled=not name):
        _do_import(data, upload.name, name, mapping)


def _do_import(data: bytes, filename: str, name: str, mapping: ColumnMapping) -> None:
    try:
        result = import_dataset(_shared.engine(), data, filename, name, mapping)
    except ReviewInputError as exc:
        st.error(f"Nothing was imported. {_shared.md(exc)}")
        return
    verb = "Imported" if result.created else "Unchanged: already stored as"
    st.success(f"{verb} {_shared.md(result.name)} v{result.version} ({result.n_cases} cases).")
    for warning in getattr(result, "warnings", []) or []:
        st.info(_shared.md(warning))


_render_import()
st.subheader("Stored")
_render_list()
