"""Hostile inputs: each is either handled cleanly (a named ReviewInputError: exit 2, one line, nothing
written) or works as it should. Patterns run on RE2 (linear time); schemas never fetch; secrets stay out;
malformed, deep, huge and oddly encoded files fail with a message naming what is wrong."""
from __future__ import annotations

import time

import pytest
from gov_helpers import Pair, make_comparison, tamper

from lib.data.fields import InvalidField  # a field problem; the importer wraps it with the file and line
from lib.errors import ReviewInputError

CATASTROPHIC = "^(a|a)+$"  # Python's re never returns on 40 a's and a '!'; RE2 answers at once
SLOW_TEXT = "a" * 40 + "!"


# ---------------------------------------------------------------- patterns (section 2)

UNSUPPORTED_PATTERNS = [
    (r"(a)\1", "backreferences"),
    (r"foo(?=bar)", "lookahead"),
    (r"foo(?!bar)", "negative lookahead"),
    (r"(?<=x)foo", "lookbehind"),
    (r"(?<!x)foo", "negative lookbehind"),
    ("(unclosed", "missing )"),
    ("[a-", "missing ]"),
    ("a{1001}", "invalid repetition size"),
    ("x" * 10_001, "longer than 10,000 characters"),
    ("\ud800", "lone surrogate"),
]


@pytest.mark.parametrize(("pattern", "fragment"), UNSUPPORTED_PATTERNS, ids=lambda v: str(v)[:20])
def test_patterns_re2_cannot_run_are_named_input_errors(pattern: str, fragment: str) -> None:
    from lib.review.checks import InvalidPatternError
    from lib.review.checks.patterns import compile_user_pattern

    with pytest.raises(InvalidPatternError) as err:
        compile_user_pattern(pattern, what="refusal pattern")
    assert isinstance(err.value, ReviewInputError)
    message = str(err.value)
    assert message.startswith("invalid refusal pattern ") and fragment in message and "\n" not in message


def _every_pattern_entry_point(pattern: str) -> list[tuple[str, object]]:
    """Each place a user's pattern enters: (name, a callable that compiles and runs it)."""
    from lib.data.fields import check_rule
    from lib.drift.analysis import DriftOptions
    from lib.redteam.constraints import failed_constraints, parse_constraints
    from lib.review.checks.refusal import RefusalDetector
    from lib.review.settings import ReviewSettings

    return [
        ("refusal", lambda: RefusalDetector([pattern]).is_refusal(SLOW_TEXT)),
        ("settings pattern", lambda: ReviewSettings(match="regex", pattern=pattern)),
        ("case pattern", lambda: check_rule("regex", pattern, "x")),
        ("drift regex", lambda: DriftOptions(regex={"r": pattern}).validate()),
        ("red-team rule", lambda: failed_constraints(SLOW_TEXT, parse_constraints([{"type": "regex",
                                                                                     "value": pattern}]))),
    ]


@pytest.mark.parametrize("entry", range(5), ids=["refusal", "settings", "case", "drift", "redteam"])
@pytest.mark.parametrize("pattern", [CATASTROPHIC, r"(a)\1", r"x(?=y)"], ids=["redos", "backref", "lookahead"])
def test_every_pattern_entry_point_is_linear_or_refused(entry: int, pattern: str) -> None:
    name, call = _every_pattern_entry_point(pattern)[entry]
    start = time.monotonic()
    if pattern == CATASTROPHIC:
        call()  # accepted: RE2 runs it in linear time
    else:
        with pytest.raises((ReviewInputError, InvalidField), match="not supported"):
            call()
    assert time.monotonic() - start < 2.0, name


def test_catastrophic_pattern_runs_in_linear_time_everywhere() -> None:
    import pandas as pd

    from lib.review.checks.matching import match_outputs
    from lib.review.checks.refusal import RefusalDetector

    start = time.monotonic()
    assert RefusalDetector([CATASTROPHIC]).is_refusal(SLOW_TEXT) is False
    assert RefusalDetector([CATASTROPHIC]).is_refusal("a" * 40) is True
    flags = match_outputs(pd.Series([SLOW_TEXT] * 50), pd.Series(["a"] * 50), pd.Series(["regex"] * 50),
                        pd.Series([CATASTROPHIC] * 50))
    assert not flags.any()
    assert time.monotonic() - start < 2.0


def test_stored_patterns_are_compiled_on_re2_when_read(engine, db_url: str) -> None:
    """A pattern already in the store (written before this check existed) is safe too."""
    import json

    from lib.review.report import build_report

    make_comparison(engine, "stored", [Pair("a", SLOW_TEXT, "a" * 40)] * 3)
    tamper(db_url, "UPDATE comparison SET settings_json = ? WHERE name = 'stored'",
           json.dumps({"match": None, "pattern": None, "refusal_patterns": [CATASTROPHIC]}))
    start = time.monotonic()
    report = build_report(engine, "stored")
    assert time.monotonic() - start < 30
    assert report["settings"]["refusal_patterns"] == [CATASTROPHIC]
    tamper(db_url, "UPDATE comparison SET settings_json = ? WHERE name = 'stored'",
           json.dumps({"match": None, "pattern": None, "refusal_patterns": [r"(a)\1"]}))
    with pytest.raises(ReviewInputError, match="backreferences"):
        build_report(engine, "stored")
