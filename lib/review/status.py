"""What happened to each pair, in words a reviewer scans: the status chips of the Diffs page.

Vectorised over the checked-pairs frame (lib.review.checked.checked_frame), so a page computes them for
every row at once. A pair can carry several statuses (a refusal that is also a regression); `unchanged`
only when no other applies. Emptiness reads the check store's `{side}_empty` column when the store has
one, else an output with no characters or none at all (provider errors are `error`, not `empty`).
"""
from __future__ import annotations

import pandas as pd

# status -> (colour of its chip, what it means), in order of seriousness: the first applicable leads
STATUSES: dict[str, tuple[str, str]] = {
    "error": ("red", "a provider error on either side"),
    "schema break": ("red", "valid JSON on the baseline, invalid on the candidate"),
    "newly refused": ("red", "answered on the baseline, refused by the candidate"),
    "regressed": ("red", "a check passed on the baseline and fails on the candidate"),
    "empty": ("orange", "an empty or missing output on either side"),
    "truncated": ("orange", "an output cut off at the token limit on either side"),
    "no longer refused": ("blue", "refused on the baseline, answered by the candidate"),
    "improved": ("green", "a check failed on the baseline and passes on the candidate"),
    "unchanged": ("gray", "no check changed its outcome"),
}
# pass/fail checks whose flip makes a pair regressed or improved (True is the good outcome)
GOOD_WHEN_TRUE = ("correct", "injection_resisted", "harmful_refused", "instructions_followed")


def _flag(frame: pd.DataFrame, col: str) -> pd.Series:
    """A nullable boolean check as True / False / NA; all NA when the frame lacks the column."""
    if col not in frame:
        return pd.Series(pd.NA, index=frame.index, dtype="boolean")
    return frame[col].astype("boolean")


def _true(series: pd.Series) -> pd.Series:
    return series.fillna(False).astype(bool)


def _false(series: pd.Series) -> pd.Series:
    return (~series).fillna(False).astype(bool)


def _flip(frame: pd.DataFrame, col: str, worse: bool) -> pd.Series:
    """Known on both sides and changed: True -> False (`worse`) or False -> True."""
    b, c = _flag(frame, f"b_{col}"), _flag(frame, f"c_{col}")
    return (_true(b) & _false(c)) if worse else (_false(b) & _true(c))


def empty_or_missing(frame: pd.DataFrame, side: str) -> pd.Series:
    """No answer on this side: an empty or whitespace-only output, or no output stored (not an error)."""
    empty = _empty_answer(frame, side)
    if f"{side}_output_id" in frame:  # no output stored for this side at all
        empty |= frame[f"{side}_output_id"].isna().to_numpy()
    return empty & ~_true(_flag(frame, f"{side}_errored"))


def _empty_answer(frame: pd.DataFrame, side: str) -> pd.Series:
    """An answer with no characters, or only white space."""
    if f"{side}_empty" in frame:
        return _true(_flag(frame, f"{side}_empty"))
    chars = frame.get(f"{side}_len_chars")
    if chars is not None:
        empty = pd.to_numeric(chars, errors="coerce").eq(0).fillna(False).astype(bool)
    else:
        empty = pd.Series(False, index=frame.index)
    if f"{side}_text" in frame:  # texts shown on the page: whitespace only is empty too
        text = frame[f"{side}_text"]
        empty |= text.notna() & (text.astype("string").str.strip() == "").fillna(False).astype(bool)
    return empty


def _masks(frame: pd.DataFrame) -> dict[str, pd.Series]:
    either = lambda col: _true(_flag(frame, f"b_{col}")) | _true(_flag(frame, f"c_{col}"))  # noqa: E731
    regressed = pd.Series(False, index=frame.index)
    improved = pd.Series(False, index=frame.index)
    for col in GOOD_WHEN_TRUE:
        regressed |= _flip(frame, col, worse=True)
        improved |= _flip(frame, col, worse=False)
    return {
        "error": either("errored"),
        "schema break": _flip(frame, "json_strict", worse=True),
        "newly refused": _flip(frame, "refused", worse=False),
        "regressed": regressed,
        "empty": empty_or_missing(frame, "b") | empty_or_missing(frame, "c"),
        "truncated": either("truncated"),
        "no longer refused": _flip(frame, "refused", worse=True),
        "improved": improved,
    }


def pair_statuses(frame: pd.DataFrame) -> pd.Series:
    """Per row, the list of statuses that apply, most serious first (`["unchanged"]` when none)."""
    masks = _masks(frame)
    if frame.empty:
        return pd.Series([], index=frame.index, dtype=object)
    table = pd.DataFrame(masks, index=frame.index)
    names = list(masks)
    values = table.to_numpy()
    return pd.Series([[n for n, hit in zip(names, row) if hit] or ["unchanged"] for row in values],
                     index=frame.index, dtype=object)


def status_colors() -> list[str]:
    """Chip colours in the order of `STATUSES` (for a table column's options)."""
    return [color for color, _ in STATUSES.values()]
