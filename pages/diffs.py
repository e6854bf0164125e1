"""Diffs: browse the cases behind every number, and compare two outputs side by side."""
from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from lib.review import fmt
from lib.review.browse import FILTERS, BrowseQuery, page_of, select_cases
from lib.review.checks.similarity import diff_html
from lib.review.fmt import DASH
from lib.review.status import STATUSES, pair_statuses, status_colors
from pages import _labels, _shared

st.title("Diffs")
PAGE_SIZE = 50
FILTER_KEY = "diffs_filter"  # also set by the Overview's "what changed most" links
FOCUS_KEY = "diffs_focus"  # {"filter", "case_id", "repeat"}: one case the Overview's lists open, read once
CHECKS = [("refused", "refused"), ("correct", "correct"), ("json_strict", "JSON valid (strict)"),
          ("json_lenient", "JSON valid (lenient)"), ("truncated", "truncated"), ("len_chars", "characters"),
          ("len_words", "words"), ("latency_s", "latency (s)"), ("cost_usd", "cost (USD)")]
CELL_CHARS = 120  # characters of each text in the table (the full texts are below it)
# Widths in pixels that fit side by side in the main area at 1280 px with the sidebar open (~820 px with the
# row selector); wider windows stretch them.
TABLE_COLUMNS = {
    "status": st.column_config.MultiselectColumn("status", options=list(STATUSES), color=status_colors(),
                                                 width=130, help="What changed between the two outputs"),
    "case": st.column_config.TextColumn(width=65), "repeat": st.column_config.NumberColumn(width=50),
    "category": st.column_config.TextColumn(width=75), "input": st.column_config.TextColumn(width=130),
    "baseline": st.column_config.TextColumn(width=145), "candidate": st.column_config.TextColumn(width=145),
    "similarity": st.column_config.ProgressColumn(min_value=0, max_value=1, format="%.2f", width=70,
                                                  help="1 = identical characters, 0 = nothing in common"),
}
STYLE = """<style>
.diff-box{white-space:pre-wrap;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:0.85rem;
 padding:0.6rem;border:1px solid #ddd;border-radius:0.4rem;max-height:28rem;overflow:auto;background:#fafafa}
.diff-del{background:#ffd7d5;text-decoration:line-through} .diff-ins{background:#ccf3d4;text-decoration:none}
</style>"""


def _query(frame: pd.DataFrame, a: DeltaGenerator, b: DeltaGenerator, c: DeltaGenerator) -> BrowseQuery:
    names = list(FILTERS)
    if st.session_state.get(FILTER_KEY) not in names:
        st.session_state[FILTER_KEY] = "all"
    chosen = a.selectbox("Show", names, format_func=FILTERS.get, key=FILTER_KEY)
    categories = b.multiselect("Category", sorted(frame["category"].unique()), key="diffs_categories")
    search = c.text_input("Search input and outputs", key="diffs_search")
    return BrowseQuery(filter=chosen, categories=tuple(categories), search=search)


def _take_focus() -> dict | None:
    """A case link from the Overview: show its list's filter, unnarrowed, so the case is in the rows."""
    focus = st.session_state.pop(FOCUS_KEY, None)
    if focus is not None:
        st.session_state[FILTER_KEY] = focus["filter"]
        st.session_state["diffs_categories"] = []
        st.session_state["diffs_search"] = ""
    return focus


def _select_focus(rows: pd.DataFrame, focus: dict) -> bool:
    """Turn to the page holding the focused case and select its row (before those widgets exist);
    False when the case is not among the rows."""
    at = ((rows["case_id"] == focus["case_id"]) & (rows["repeat"] == focus["repeat"])).to_numpy().nonzero()[0]
    if len(at):
        st.session_state["diffs_page"] = int(at[0]) // PAGE_SIZE + 1
        st.session_state["diffs_table"] = {"selection": {"rows": [int(at[0]) % PAGE_SIZE], "columns": []}}
    return bool(len(at))


def _visible(view: pd.DataFrame, optional: tuple[str, ...]) -> pd.DataFrame:
    """Drop the optional columns whose value is the same on every shown row (repeat 0 everywhere)."""
    constant = [c for c in optional if c in view and view[c].astype("string").nunique(dropna=False) <= 1]
    return view.drop(columns=constant)


def _short(texts: pd.Series) -> pd.Series:
    return texts.astype("string").fillna("").str.slice(0, CELL_CHARS)


def _table_view(page: pd.DataFrame) -> pd.DataFrame:
    """The rows as a reviewer scans them: what happened, which case, the three texts, how alike."""
    view = pd.DataFrame({
        "status": page["status"].to_numpy(), "case": page["case_key"].astype(str).to_numpy(),
        "repeat": page["repeat"].to_numpy(), "category": page["category"].astype("string").fillna(DASH).to_numpy(),
        "input": _short(page["input_text"]).to_numpy(),
        "baseline": _short(page["b_text"].fillna(page["b_error"])).to_numpy(),
        "candidate": _short(page["c_text"].fillna(page["c_error"])).to_numpy(),
        "similarity": page["similarity"].astype(float).to_numpy()})
    return _visible(view, ("repeat", "category"))


def _render_table(rows: pd.DataFrame, query: BrowseQuery, focused: bool,
                  pager: DeltaGenerator) -> pd.Series | None:
    """One page of matching cases; returns the selected row (the first when none is selected)."""
    last = max(1, -(-len(rows) // PAGE_SIZE))
    if st.session_state.get("diffs_page", 1) > last:  # the filter shrank the result: back to page 1
        st.session_state["diffs_page"] = 1
    page_no = pager.number_input("Page", min_value=1, max_value=last, key="diffs_page")  # value from the key
    # A row ticked on another page, filter or search is not a row of this view (a deep link just chose it)
    _shared.clear_selection_if_moved("diffs_table", (query.filter, query.categories, query.search, int(page_no)),
                                     keep=focused)
    page, n_pages = page_of(rows, int(page_no), PAGE_SIZE)
    page = _shared.page_texts(page)  # texts of this page only: the checks frame carries none
    page = page.assign(status=pair_statuses(page))
    st.caption(f"{len(rows):,} matching pairs · page {int(page_no)} of {n_pages} · select a row to compare "
               "its outputs below")
    event = st.dataframe(_table_view(page), hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-row", key="diffs_table", column_config=TABLE_COLUMNS)
    at = _shared.selected_row(event, len(page))
    return page.iloc[at] if at is not None else (page.iloc[0] if len(page) else None)


def _shown(value: object) -> str:
    if fmt.missing(value):
        return DASH
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return fmt.num(float(value))
    return str(value)


def _checks_table(row: pd.Series) -> pd.DataFrame:
    """Each check on both sides; checks unknown on both sides are left out."""
    rows = [{"check": label, "baseline": _shown(row.get(f"b_{col}")), "candidate": _shown(row.get(f"c_{col}"))}
            for col, label in CHECKS]
    return pd.DataFrame([r for r in rows if (r["baseline"], r["candidate"]) != (DASH, DASH)],
                        columns=["check", "baseline", "candidate"])


def _text_box(title: str, body_html: str) -> str:
    return f"<div><strong>{html.escape(title)}</strong><div class='diff-box'>{body_html}</div></div>"


def _side_html(row: pd.Series) -> tuple[str, str]:
    b_text = row["b_text"] if isinstance(row["b_text"], str) else None
    c_text = row["c_text"] if isinstance(row["c_text"], str) else None
    left, right = diff_html(b_text or "", c_text or "")
    if b_text is None:
        left = f"<em>error: {html.escape(str(row['b_error'] or 'no output'))}</em>"
    if c_text is None:
        right = f"<em>error: {html.escape(str(row['c_error'] or 'no output'))}</em>"
    return left, right


def _render_pair(row: pd.Series) -> None:
    st.subheader(f"Case {_shared.md_text(row['case_key'])} (repeat {row['repeat']})", anchor=False)
    similarity = DASH if fmt.missing(row["similarity"]) else format(row["similarity"], ".2f")
    st.markdown(" ".join(f":{STATUSES[s][0]}-badge[{s}]" for s in row["status"])
                + f" · similarity **{similarity}** (1 = identical characters) · category "
                + _shared.md_text(row["category"] if isinstance(row["category"], str) else DASH))
    expected = row["expected"] if isinstance(row["expected"], str) else None
    left, right = _side_html(row)
    col_i, col_b, col_c = st.columns(3)
    with col_i:
        st.html(STYLE + _text_box("Input", html.escape(row["input_text"] or ""))
                + (_text_box(f"Expected ({row['match'] or 'normalized'})", html.escape(expected)) if expected else ""))
    with col_b:
        st.html(STYLE + _text_box("Baseline", left))
    with col_c:
        st.html(STYLE + _text_box("Candidate", right))
    st.dataframe(_checks_table(row), hide_index=True, width="stretch", key="diffs_checks")
    if isinstance(row.get("json_schema"), str):
        with st.expander("JSON schema"):
            st.code(json.dumps(json.loads(row["json_schema"]), indent=2), language="json")


name = _shared.active_comparison()
if name is None:
    st.info("No comparison yet. Load one (Load page) or run one (Run page).")
    st.stop()
frame = _shared.checked(_shared.database_url(), name)
focus = _take_focus()
filters = st.columns([2, 2, 3, 1])  # the page number sits in the same row: the table starts higher
query = _query(frame, *filters[:3])
if query.search.strip():  # searching needs every text: read once, cached
    frame = _shared.searchable(_shared.database_url(), name)
rows = select_cases(frame, query)
if rows.empty:
    st.info("No pair matches these filters.")
    st.stop()
focused = focus is not None and _select_focus(rows, focus)
selected = _render_table(rows, query, focused=focused, pager=filters[3])
if selected is not None:
    _render_pair(selected)
    _labels.render(name, selected)
