"""Expected-answer matching, one rule per case (`Case.match`).

Rules:
- `exact`: equal after stripping leading/trailing whitespace (providers add trailing newlines
  inconsistently; nothing else is forgiven).
- `normalized`: equal after `normalize` (Unicode NFKC, case-folded, punctuation removed, whitespace
  collapsed). This is the DEFAULT when a case has an expected answer but no rule: predictable, no
  false positives; datasets that want leniency for chatty models say `contains`.
- `contains`: the normalized expected answer is a substring of the normalized output.
- `not_contains`: the output must not contain `expected` (a canary, a forbidden word); case-insensitive
  (NFKC + case-fold), punctuation kept so "ZEBRA-42" is looked for as written.
- `regex`: the first capture group of the first match of `pattern` (the whole match when the pattern
  has no group) equals `expected` after `normalize`; no match is False.
- `numeric`: the first number in the output (-3, 1,234.5, 3.0e5, 12%) equals the number in `expected`
  within `tolerance + rel_tolerance * |expected|` (numpy.isclose; defaults 1e-6 and 1e-9). "12%" is 12:
  percentages are not rescaled; a decimal comma ("3,5") is not supported.

Applicability: a case without an expected answer is not applicable (NA, never False), whatever its
rule. A missing output (provider error, unfinished run) is NA too: a check judges an answer, and
errors are their own metric, so infrastructure failures are not counted twice (see lengths.error_flags).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache, partial

import numpy as np
import pandas as pd

from lib.review.checks import InvalidMatchRuleError
from lib.review.checks.patterns import UserPattern, compile_user_pattern
from lib.store.entities import MATCH_RULES

DEFAULT_RULE = "normalized"
ABS_TOL = 1e-6
REL_TOL = 1e-9

# A number starting at a given position: optional sign (ASCII or U+2212), thousands separators,
# decimals, exponent.
_NUMBER_AT = re.compile(r"[-+\u2212]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_DIGIT = re.compile(r"\d")  # a plain character class: re scans for it fast, unlike a lookbehind


# A check gets aligned lists (output, expected answer, case pattern) of the rows using its rule.
_Check = Callable[[list[str], list[str], list[object]], "list[bool] | np.ndarray"]


class _PunctuationTable(dict):
    """For str.translate: punctuation code points (categories P*) map to None (removed), others to
    themselves. Filled as characters are met (translate looks each one up, __missing__ decides once):
    building it for all 1.1M code points up front cost ~0.2 s per process."""

    def __missing__(self, cp: int) -> int | None:
        value = self[cp] = None if unicodedata.category(chr(cp)).startswith("P") else cp
        return value


@cache
def _punctuation_table() -> dict[int, int | None]:
    return _PunctuationTable()


_MEMO: ContextVar[dict[str, str] | None] = ContextVar("normalize_memo", default=None)


@contextmanager
def shared_normalize() -> Iterator[None]:
    """Within the block (this thread only), each distinct text is normalized once across every
    `match_outputs` call: a load's rule advice tries several rules on the same outputs. Nested blocks share
    the outermost one's memo (a load's advice and its checks)."""
    token = _MEMO.set(_MEMO.get() if _MEMO.get() is not None else {})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _normalizer() -> Callable[[str], str]:
    memo = _MEMO.get()
    if memo is None:
        return cache(normalize)  # expected answers repeat across repeats and sides

    def norm(text: str) -> str:
        value = memo.get(text)
        if value is None:
            value = memo[text] = normalize(text)
        return value

    return norm


def normalize(text: str) -> str:
    """NFKC, case-folded, punctuation removed (not replaced: "U.S.A." == "USA"), whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_punctuation_table())
    return " ".join(folded.split())


def first_number(text: str) -> float | None:
    """The first number that is not part of a word or a dotted token ("x3", "v1.2" are skipped)."""
    for digit in _DIGIT.finditer(text):
        start = digit.start()
        start -= start > 0 and text[start - 1] == "."  # ".5"
        start -= start > 0 and text[start - 1] in "-+\u2212"  # "-3"
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._"):
            continue
        m = _NUMBER_AT.match(text, start)
        if m:
            return float(m.group(0).replace(",", "").replace("\u2212", "-"))
    return None


def match_outputs(
    outputs: pd.Series,
    expected: pd.Series,
    rule: pd.Series,
    pattern: pd.Series,
    tolerance: float = ABS_TOL,
    rel_tolerance: float = REL_TOL,
) -> pd.Series:
    """True/False/NA per row (aligned Series: output text, case expected, match rule, pattern)."""
    raw = rule.fillna("").astype(str)
    # one rule (or a few) for 100k rows: normalise each distinct spelling once
    rules = raw.map({name: name.strip().lower() or DEFAULT_RULE for name in pd.unique(raw)})
    unknown = sorted(set(rules) - set(MATCH_RULES))
    if unknown:
        raise InvalidMatchRuleError(f"unknown match rule(s) {unknown}; expected one of {list(MATCH_RULES)}")
    checks: dict[str, _Check] = {
        **_TEXT_CHECKS,
        "regex": _regex,
        "numeric": partial(_numeric, abs_tol=tolerance, rel_tol=rel_tolerance),
    }
    result = pd.Series(pd.NA, index=outputs.index, dtype="boolean")
    applicable = outputs.notna() & expected.notna()
    for name, check in checks.items():
        rows = applicable & (rules == name)
        if rows.any():
            verdicts = check(outputs[rows].astype(str).tolist(), expected[rows].astype(str).tolist(),
                             pattern[rows].tolist())
            result[rows] = np.asarray(verdicts, dtype=bool)
    return result


def _exact(out: list[str], exp: list[str], _patterns: list[object]) -> list[bool]:
    return [o.strip() == e.strip() for o, e in zip(out, exp)]


def _normalized(out: list[str], exp: list[str], _patterns: list[object]) -> list[bool]:
    norm = _normalizer()
    return [norm(o) == norm(e) for o, e in zip(out, exp)]


def _contains(out: list[str], exp: list[str], _patterns: list[object]) -> list[bool]:
    norm = _normalizer()
    return [norm(e) in norm(o) for o, e in zip(out, exp)]


def _not_contains(out: list[str], exp: list[str], _patterns: list[object]) -> list[bool]:
    def fold(s: str) -> str:
        return unicodedata.normalize("NFKC", s).casefold()

    return [fold(e) not in fold(o) for o, e in zip(out, exp)]


def _regex(out: list[str], exp: list[str], patterns: list[object]) -> list[bool]:
    compiled = {p: _compile_case_pattern(p) for p in set(patterns)}
    norm = _normalizer()  # expected answers repeat; a load's rule advice tries two patterns on them
    verdicts = []
    for o, e, p in zip(out, exp, patterns):
        m = compiled[p].search(o)
        value = None if m is None else (m.group(1) if m.re.groups else m.group(0))
        verdicts.append(value is not None and norm(value) == norm(e))
    return verdicts


def _compile_case_pattern(pattern: object) -> UserPattern:
    if not isinstance(pattern, str) or not pattern:
        raise InvalidMatchRuleError("a case with match rule 'regex' has no pattern")
    return compile_user_pattern(pattern)


def _numeric(
    out: list[str], exp: list[str], _patterns: list[object], *, abs_tol: float, rel_tol: float
) -> np.ndarray:
    targets = []
    for e in exp:
        value = first_number(e)
        if value is None:
            raise InvalidMatchRuleError(f"expected answer {e!r} has no number for match rule 'numeric'")
        targets.append(value)
    found = np.array([first_number(o) for o in out], dtype=float)  # None -> nan -> never close
    return np.isclose(found, np.array(targets), rtol=rel_tol, atol=abs_tol)


_TEXT_CHECKS: dict[str, _Check] = {
    "exact": _exact,
    "normalized": _normalized,
    "contains": _contains,
    "not_contains": _not_contains,
}
