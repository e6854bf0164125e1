"""Per-output checks: pure functions over pandas Series, no store access, no Streamlit.

Every check returns NA (never False) for a missing output (provider error or unfinished run):
a check judges an answer, and errors are their own metric (`lengths.error_flags`).
"""
from __future__ import annotations

from lib.errors import ReviewInputError


class CheckInputError(ReviewInputError):
    """A check cannot run on what the dataset or the reviewer supplied."""


class InvalidPatternError(CheckInputError):
    """A regular expression (case pattern or extra refusal pattern) does not compile."""

    def __init__(self, pattern: str, reason: str, *, what: str = "pattern"):
        self.pattern = pattern
        self.reason = reason
        super().__init__(f"invalid {what} {pattern!r}: {reason}")


class InvalidSchemaError(CheckInputError):
    """A case's JSON schema is not valid JSON or not a valid JSON Schema."""


class InvalidMatchRuleError(CheckInputError):
    """A case names an unknown match rule, or a rule without what it needs (pattern, number)."""
