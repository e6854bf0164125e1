"""The case browser's filters and paging over the checked-pairs frame (lib.review.checked.checked_frame).

Vectorised pandas only: the Diffs page must stay fast at 100k pairs. Filters read check columns only;
free-text search also needs the texts (`lib.review.checked.with_texts`), which a page adds only to search.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lib.review.status import empty_or_missing

# filter name -> label shown in the page
FILTERS: dict[str, str] = {
    "all": "All cases",
    "refusal_flips": "Refusal flips (either way)",
    "newly_refused": "Newly refused by the candidate",
    "accuracy_regressions": "Accuracy regressions (right → wrong)",
    "accuracy_improvements": "Accuracy improvements (wrong → right)",
    "schema_breaks": "Schema breaks (valid JSON → invalid)",
    "errors": "Provider errors or truncation",
    "empty": "Empty or missing outputs (either side)",
    "length_change": "Largest length change",
    "lowest_similarity": "Lowest similarity",
}


@dataclass(frozen=True)
class BrowseQuery:
    filter: str = "all"
    categories: tuple[str, ...] = ()
    search: str = ""
    page: int = 1
    page_size: int = 50


def _flag(frame: pd.DataFrame, col: str) -> pd.Series:
    """A nullable boolean column as plain bool (NA -> False) for masking."""
    return frame[col].astype("boolean").fillna(False).astype(bool)


def _mask(frame: pd.DataFrame, name: str) -> pd.Series:
    if name == "refusal_flips":
        return _flag(frame, "b_refused") != _flag(frame, "c_refused")
    if name == "newly_refused":
        return ~_flag(frame, "b_refused") & _flag(frame, "c_refused")
    if name == "accuracy_regressions":
        return _flag(frame, "b_correct") & (frame["c_correct"].astype("boolean") == False)  # noqa: E712
    if name == "accuracy_improvements":
        return (frame["b_correct"].astype("boolean") == False) & _flag(frame, "c_correct")  # noqa: E712
    if name == "schema_breaks":
        return _flag(frame, "b_json_strict") & (frame["c_json_strict"].astype("boolean") == False)  # noqa: E712
    if name == "errors":
        return (_flag(frame, "b_errored") | _flag(frame, "c_errored")
                | _flag(frame, "b_truncated") | _flag(frame, "c_truncated"))
    if name == "empty":
        # the same rule as the Diffs status chip: a missing output counts as empty
        return empty_or_missing(frame, "b") | empty_or_missing(frame, "c")
    return pd.Series(True, index=frame.index)


SEARCHED = ("case_key", "input_text", "b_text", "c_text")


def _search(frame: pd.DataFrame, text: str) -> pd.Series:
    missing = [c for c in SEARCHED if c not in frame]
    if missing:
        raise ValueError(f"search needs the texts (lib.review.checked.with_texts); missing {missing}")
    hit = pd.Series(False, index=frame.index)
    for col in SEARCHED:
        hit |= frame[col].astype("string").str.contains(text, case=False, regex=False, na=False)
    return hit


def select_cases(frame: pd.DataFrame, query: BrowseQuery) -> pd.DataFrame:
    """The rows matching the query, in the filter's order (all of them; page with `page_of`)."""
    if query.filter not in FILTERS:
        raise ValueError(f"unknown filter {query.filter!r}")
    mask = _mask(frame, query.filter)
    if query.categories:
        mask &= frame["category"].isin(query.categories)
    if query.search.strip():
        mask &= _search(frame, query.search.strip())
    rows = frame[mask]
    if query.filter == "length_change":
        order = (rows["c_len_chars"] - rows["b_len_chars"]).abs()
        rows = rows.loc[order.sort_values(ascending=False, na_position="last").index]
    elif query.filter == "lowest_similarity":
        rows = rows.sort_values("similarity", ascending=True, na_position="last")
    return rows


def page_of(rows: pd.DataFrame, page: int, page_size: int) -> tuple[pd.DataFrame, int]:
    """One page (1-based, clamped) and the number of pages."""
    n_pages = max(1, -(-len(rows) // page_size))
    page = min(max(1, page), n_pages)
    start = (page - 1) * page_size
    return rows.iloc[start:start + page_size], n_pages
