"""The one way a pattern a user wrote is compiled: RE2, which matches in time linear in the text.

Python's `re` backtracks: `^(a|a)+$` against 40 `a`s and a `!` never returns, and it holds the GIL, so
neither a signal nor another thread can stop it. Every reviewer-supplied pattern (refusal patterns,
match patterns, case patterns, drift regexes, canary rules, red-team rules) goes through
`compile_user_pattern`, both when it is given and when a stored one is read back, so a hostile pattern
is either refused with a clear message or runs in linear time.

RE2 has no backreferences (`\\1`) and no lookarounds (`(?=`, `(?!`, `(?<=`, `(?<!`); Python's `\\Z` (end
of text) is RE2's `\\z` and is translated. Everything else users write (classes, groups, named groups,
`(?i)`, anchors) works as in `re`, except that `$` without `(?m)` matches only at the very end.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

from lib.review.checks import InvalidPatternError

UserPattern = Any  # re2._Regexp: search/match/fullmatch/finditer/groups, like re.Pattern

MAX_PATTERN_CHARS = 10_000  # a reviewer's pattern is a line, not a document
_MAX_MEM = 64 << 20  # RE2's compiled-program budget; a larger pattern is refused, not built

_UNSUPPORTED = (  # RE2's parse error (a fragment of it) -> what the user wrote that RE2 cannot run
    ("(?=", "lookahead (?=...) is not supported"),
    ("(?!", "negative lookahead (?!...) is not supported"),
    ("(?<=", "lookbehind (?<=...) is not supported"),
    ("(?<!", "negative lookbehind (?<!...) is not supported"),
)
_ENGINE_NOTE = "patterns run on RE2 (linear time): no backreferences or lookarounds"


def _options(ignore_case: bool) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # else the C++ library prints a line to stderr: one-line errors only
    options.max_mem = _MAX_MEM
    options.case_sensitive = not ignore_case
    return options


def _reason(message: str) -> str:
    for fragment, reason in _UNSUPPORTED:
        if fragment in message:
            return f"{reason}; {_ENGINE_NOTE}"
    if "invalid escape sequence: \\" in message and message.rstrip()[-1:].isdigit():
        return f"backreferences (\\1, \\2, ...) are not supported; {_ENGINE_NOTE}"
    return message


def _python_spellings(pattern: str) -> str:
    """Python's `\\Z` as RE2's `\\z` (same meaning); an escaped backslash before a Z is left alone."""
    if "\\Z" not in pattern:
        return pattern
    out, i = [], 0
    while i < len(pattern):
        pair = pattern[i:i + 2]
        if pair[:1] == "\\" and len(pair) == 2:
            out.append("\\z" if pair == "\\Z" else pair)
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


@lru_cache(maxsize=512)  # red-team rules and stored patterns are compiled per use; RE2 objects are thread-safe
def _compiled(pattern: str, ignore_case: bool) -> UserPattern:
    return re2.compile(_python_spellings(pattern), _options(ignore_case))


def compile_user_pattern(pattern: object, *, what: str = "pattern", ignore_case: bool = False) -> UserPattern:
    """`pattern` compiled on RE2; InvalidPatternError (exit 2) naming `what` when it cannot be."""
    if not isinstance(pattern, str):
        raise InvalidPatternError(str(pattern), f"a pattern is text, got {type(pattern).__name__}", what=what)
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidPatternError(pattern[:40] + "...", f"longer than {MAX_PATTERN_CHARS:,} characters", what=what)
    try:
        pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPatternError(pattern, "contains a lone surrogate (not valid Unicode text)", what=what) from None
    try:
        return _compiled(pattern, ignore_case)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else str(exc)
        text = detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
        raise InvalidPatternError(pattern, _reason(text), what=what) from None


def pattern_problem(pattern: object, *, what: str = "pattern") -> str | None:
    """Why `pattern` cannot be used (the reason only), or None when it compiles."""
    try:
        compile_user_pattern(pattern, what=what)
    except InvalidPatternError as exc:
        return exc.reason
    return None
