"""Diffs: browse the cases behind every number, and compare two outputs side by side."""
from __future__ import annotations

import html
import json

import pandas as pd
import streamlit as st

from lib.review.browse import FILTERS, BrowseQuery, page_of, select_cases
from lib.review.checks.similarity import diff_html
from pages import _labels, _shared

st.title("Diffs")
PAGE_SIZE = 50
FILTER_KEY = "diffs_filter"  # also set by the Overview's "what changed most" links
FOCUS_KEY = "diffs_focus"  # {"filter", "case_id", "repeat"}: one case the Overview's lists open, read once
CHECKS = [("refused", "refused"), ("correct", "correct"), ("json_strict", "JSON valid (strict)"),
          ("json_lenient", "JSON valid (lenient)"), ("truncated", "truncated"), ("len_chars", "characters"),
          ("len_words", "words"), ("latency_s", "latency (s)"), ("cost_usd", "cost (USD)")]
STYLE = """<style>
.diff-box{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:0.85rem;padding:0.6rem;
 border:1px solid #ddd;border-radius:0.4rem;max-height:28rem;overflow:auto;background:#fafafa}
.diff-del{background:#ffd7d5;text-decoration:line-through} .diff-ins{background:#ccf3d4;text-decoration:none}
</style>"""


def _query(frame: pd.DataFrame) -> BrowseQuery:
    a, b, c = st.columns([2, 2, 3])
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


def _render_table(rows: pd.DataFrame, query: BrowseQuery, focused: bool) -> pd.Series | None:
    """One page of matching cases; returns the selected row (the first when none is selected)."""
    last = max(1, -(-len(rows) // PAGE_SIZE))
    if st.session_state.get("diffs_page", 1) > last:  # the filter shrank the result: back to page 1
        st.session_state["diffs_page"] = 1
    page_no = st.number_input("Page", 1, last, 1, key="diffs_page")
    # A row ticked on another page, filter or search is not a row of this view (a deep link just chose it)
    _shared.clear_selection_if_moved("diffs_table", (query.filter, query.categories, query.search, int(page_no)),
                                     keep=focused)
    page, n_pages = page_of(rows, int(page_no), PAGE_SIZE)
    page = _shared.page_texts(page)  # texts of this page only: the checks frame carries none
    st.caption(f"{len(rows):,} matching pairs · page {int(page_no)} of {n_pages}")
    view = pd.DataFrame({
        "case": page["case_key"].astype(str), "repeat": page["repeat"], "category": page["category"],
        "input": page["input_text"].str.slice(0, 120),
        "baseline": page["b_text"].fillna(page["b_error"]).astype("string").str.slice(0, 120),
        "candidate": page["c_text"].fillna(page["c_error"]).astype("string").str.slice(0, 120),
        "similarity": page["similarity"].astype(float)})
    event = st.dataframe(view, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                         key="diffs_table",
                         column_config={"similarity": st.column_config.ProgressColumn(min_value=0, max_value=1,
                                                                                      format="%.2f")})
    at = _shared.selected_row(event, len(page))
    return page.iloc[at] if at is not None else (page.iloc[0] if len(page) else None)


def _checks_table(row: pd.Series) -> pd.DataFrame:
    def val(side: str, col: str) -> str:
        v = row.get(f"{side}_{col}")
        return "—" if v is None or pd.isna(v) else str(v)

    return pd.DataFrame({"check": [label for _, label in CHECKS],
                         "baseline": [val("b", c) for c, _ in CHECKS],
                         "candidate": [val("c", c) for c, _ in CHECKS]})


def _text_box(title: str, body_html: str) -> str:
    return f"<div><strong>{html.escape(title)}</strong><div class='diff-box'>{body_html}</div></div>"


def _render_pair(row: pd.Series) -> None:
    st.subheader(f"Case {_shared.md_text(row['case_key'])} (repeat {row['repeat']})", anchor=False)
    st.caption(f"category {_shared.md_text(row['category'])} · similarity "
               f"{'—' if pd.isna(row['similarity']) else format(row['similarity'], '.2f')}")
    expected = row["expected"] if isinstance(row["expected"], str) else None
    st.html(STYLE + _text_box("Input", html.escape(row["input_text"] or ""))
            + (_text_box(f"Expected ({row['match'] or 'normalized'})", html.escape(expected)) if expected else ""))
    b_text = row["b_text"] if isinstance(row["b_text"], str) else None
    c_text = row["c_text"] if isinstance(row["c_text"], str) else None
    left, right = diff_html(b_text or "", c_text or "")
    if b_text is None:
        left = f"<em>error: {html.escape(str(row['b_error'] or 'no output'))}</em>"
    if c_text is None:
        right = f"<em>error: {html.escape(str(row['c_error'] or 'no output'))}</em>"
    col_b, col_c = st.columns(2)
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
query = _query(frame)
if query.search.strip():  # searching needs every text: read once, cached
    frame = _shared.searchable(_shared.database_url(), name)
rows = select_cases(frame, query)
if rows.empty:
    st.info("No pair matches these filters.")
    st.stop()
focused = focus is not None and _select_focus(rows, focus)
selected = _render_table(rows, query, focused=focused)
if selected is not None:
    _render_pair(selected)
    _labels.render(name, selected)
