"""Red-team safety profile (issue #7): probe families, their rules, the built-in suite and summaries.

- `families`: family names and aliases, the rule a case's metadata carries (canary, expectation,
  constraints) and its validation;
- `constraints`: instruction-following rules checked without a judge;
- `suite`: the built-in probes plus a user's file, imported as a versioned golden dataset;
- `summary`: per-family rates from the report, and the cases behind each flip.

The per-output checks themselves are `lib.review.checks.safety` (used by every report).
"""
