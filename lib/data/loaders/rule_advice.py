"""The default match rule, said out loud: a load with expected answers and no rule chosen says which rule
was applied, and warns when another rule agrees with the expected answers far more often.

Short labels (`yes`) inside long outputs are the classic trap: the default rule (`normalized`, whole-text
equality) scores almost nothing, `contains` or a regex extracting a bracketed or final answer scores most.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lib.data.loaders.store import Recorded
from lib.review.checks.matching import DEFAULT_RULE, match_outputs, shared_normalize
from lib.review.fmt import pct

BRACKETED = r"\[([^\[\]]+)\]"
FINAL_ANSWER = r"(?i)answer\s*(?:is|:)\s*\**([^\s.,;:!*]+)"
# (label, rule, pattern) tried against the default; a pattern is quoted in the suggested command.
ALTERNATIVES: tuple[tuple[str, str, str | None], ...] = (
    ("contains", "contains", None),
    ("a regex extracting a bracketed answer", "regex", BRACKETED),
    ("a regex extracting a final answer", "regex", FINAL_ANSWER),
)
MIN_GAIN = 0.25  # "far more often": at least this many points more ...
MIN_RATIO = 2.0  # ... and at least this many times the default's agreement


@dataclass(frozen=True)
class Agreement:
    label: str
    rule: str
    pattern: str | None
    rate: float
    n: int

    def flags(self) -> str:
        return f"--match {self.rule}" + (f" --pattern '{self.pattern}'" if self.pattern else "")


def agreement(texts: pd.Series, expected: pd.Series, rule: str, pattern: str | None) -> tuple[float, int]:
    """(share of outputs agreeing with their expected answer under one rule, outputs judged)."""
    verdicts = match_outputs(texts, expected, pd.Series(rule, index=texts.index),
                             pd.Series(pattern, index=texts.index, dtype=object)).dropna()
    return (float(verdicts.mean()), int(len(verdicts))) if len(verdicts) else (0.0, 0)


def default_rule_notes(rec: Recorded) -> tuple[list[str], list[str]]:
    """(notes, warnings) about the rule of cases with an expected answer and no rule (empty: none such)."""
    expected = pd.Series([c.expected if c.match is None else None for c in rec.cases], dtype=object)
    if expected.notna().sum() == 0:
        return [], []
    out = rec.outputs
    texts = out["text"].reset_index(drop=True)
    exp = expected.reindex(out["position"].to_numpy()).reset_index(drop=True)
    with shared_normalize():  # the default and `contains` normalise the same outputs: once
        default, n = agreement(texts, exp, DEFAULT_RULE, None)
        rates = [Agreement(label, rule, pattern, *agreement(texts, exp, rule, pattern))
                 for label, rule, pattern in ALTERNATIVES]
    notes = [f"match rule: '{DEFAULT_RULE}' (the default: no --match given) applied to "
             f"{int(expected.notna().sum())} cases with an expected answer; it agrees on {pct(default)} of "
             f"{n} outputs"]
    best = max(rates, key=lambda a: a.rate)
    warnings = []
    if best.rate >= default + MIN_GAIN and best.rate >= MIN_RATIO * default:
        warnings.append(f"{best.label} ({best.flags()}) agrees with the expected answers on {pct(best.rate)} of "
                     f"{best.n} outputs, against {pct(default)} for the default: the accuracy figures may be "
                     f"wrong; reload with {best.flags()} or set the rule with `./review settings set NAME "
                     f"{best.flags()}`")
    return notes, warnings
