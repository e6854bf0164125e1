"""The Overview's "what changed most" lists: the few pairs that changed most, by several measures.

Pure pandas over the checked-pairs frame (`lib.review.checked.checked_frame`, no texts needed), vectorised
(a mask, then `nlargest`/`nsmallest`): cheap at 100k pairs. Every ranking

- excludes rows missing a value it reads (a pair without one side, an errored output, no expected answer),
- excludes pairs that did not change by its measure (equal lengths, identical outputs),
- breaks ties by dataset order (the frame's row order), keeping the first rows.

Each ranking is named after the case-browser filter (`lib.review.browse.FILTERS`) that lists all of its rows.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

TOP_N = 5
KEY_COLUMNS = ["case_id", "repeat", "case_key", "category"]
_PLAIN = {"b": "bool", "i": "int64", "u": "int64", "f": "float64"}  # dtype kind -> numpy dtype once NA is gone


@dataclass(frozen=True)
class Ranking:
    """One list: its top rows (best first) and how many rows qualified before the cut."""

    name: str  # the case-browser filter holding every row of this list
    title: str
    rows: pd.DataFrame  # KEY_COLUMNS + the values behind the rank, at most `n` rows
    total: int


def _values(checked: pd.DataFrame, column: str) -> pd.Series:
    """A nullable column as float64 (flags as 0/1), NaN where missing, indexed by row position: the
    frame's own labels need not be unique or ordered."""
    return pd.Series(checked[column].to_numpy(dtype="float64", na_value=np.nan))


def _top(checked: pd.DataFrame, score: pd.Series, n: int, *, largest: bool,
         columns: list[str]) -> tuple[pd.DataFrame, int]:
    """The `n` best-scored rows (only rows in `score`, by position, qualify), ties in frame order; only
    those rows are copied, so the cost is the score's, not the frame's."""
    picked = score.nlargest(n, keep="first") if largest else score.nsmallest(n, keep="first")
    rows = checked.take(picked.index)[KEY_COLUMNS + columns]
    return rows.astype({c: _PLAIN[rows[c].dtype.kind] for c in columns}), len(score)


def length_change(checked: pd.DataFrame, n: int = TOP_N) -> tuple[pd.DataFrame, int]:
    """Largest absolute change in characters; adds `change` (candidate − baseline, signed)."""
    change = (_values(checked, "c_len_chars") - _values(checked, "b_len_chars")).dropna()
    size = change[change != 0].abs()
    rows, total = _top(checked, size, n, largest=True, columns=["b_len_chars", "c_len_chars"])
    return rows.assign(change=rows["c_len_chars"] - rows["b_len_chars"]), total


def lowest_similarity(checked: pd.DataFrame, n: int = TOP_N) -> tuple[pd.DataFrame, int]:
    """Least similar outputs (identical ones excluded)."""
    similarity = _values(checked, "similarity").dropna()
    return _top(checked, similarity[similarity < 1.0], n, largest=False, columns=["similarity"])


def _flips(checked: pd.DataFrame, b_col: str, c_col: str, n: int,
           keep: Callable[[pd.Series, pd.Series], pd.Series]) -> tuple[pd.DataFrame, int]:
    """Rows where `keep(baseline, candidate)` holds, least similar first: a flip is binary, so the
    rank inside it is how much the output changed."""
    b, c, similarity = (_values(checked, col) for col in (b_col, c_col, "similarity"))
    present = b.notna() & c.notna() & similarity.notna()
    flipped = present & keep(b.fillna(0).astype(bool), c.fillna(0).astype(bool))
    return _top(checked, similarity[flipped], n, largest=False, columns=[b_col, c_col, "similarity"])


def refusal_flips(checked: pd.DataFrame, n: int = TOP_N) -> tuple[pd.DataFrame, int]:
    """Answered -> refused and refused -> answered, least similar first."""
    return _flips(checked, "b_refused", "c_refused", n, lambda b, c: b != c)


def accuracy_regressions(checked: pd.DataFrame, n: int = TOP_N) -> tuple[pd.DataFrame, int]:
    """Right -> wrong, least similar first."""
    return _flips(checked, "b_correct", "c_correct", n, lambda b, c: b & ~c)


RANKINGS: dict[str, tuple[str, Callable[[pd.DataFrame, int], tuple[pd.DataFrame, int]]]] = {
    "length_change": ("Largest length change", length_change),
    "lowest_similarity": ("Lowest similarity", lowest_similarity),
    "refusal_flips": ("Refusal flips", refusal_flips),
    "accuracy_regressions": ("Accuracy regressions", accuracy_regressions),
}


def changed_most(checked: pd.DataFrame, n: int = TOP_N) -> list[Ranking]:
    """Every "what changed most" list of a checked-pairs frame, top `n` rows each."""
    rankings = []
    for name, (title, rank) in RANKINGS.items():
        rows, total = rank(checked, n)
        rankings.append(Ranking(name, title, rows.reset_index(drop=True), total))
    return rankings
