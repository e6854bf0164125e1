"""The review report: per-output checks on every pair, then paired statistics per metric.

`checked_pairs` adds check columns (`b_*`/`c_*`) to `lib.comparisons.load_pairs`; `report_from_checked`
turns them into the report JSON (an interface: `python -m lib report --json`, the gate, the decision
record). Rates are fractions; deltas are candidate - baseline with a CI at 1 - alpha; a metric with no
applicable case is absent. With repeats, every metric is aggregated per case first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session
from statsmodels.stats.proportion import proportion_confint

from lib.checks.lengths import char_lengths, error_flags, truncation_flags, word_counts
from lib.checks.matching import match_outputs
from lib.checks.refusal import RefusalDetector
from lib.checks.safety import SAFETY_METRICS, safety_checks
from lib.checks.similarity import similarity
from lib.checks.structured import contract_diff, json_validity
from lib.browse import BrowseQuery, select_cases
from lib.comparisons import get_comparison, load_pairs
from lib.db import session_scope
from lib.models import MATCH_RULES, from_json, to_json
from lib.errors import ReviewInputError
from lib.judge.summary import judge_block
from lib.stats import (ALPHA, aggregate_repeats, binary_metric, continuous_metric, single_metric,
                       with_holm)

# metric key -> (check column without side prefix, label). Keys are an interface: keep them.
BINARY_METRICS: dict[str, tuple[str, str]] = {
    "refusal_rate": ("refused", "Refusal rate"),
    "accuracy": ("correct", "Accuracy"),
    "json_valid_rate": ("json_strict", "JSON valid (strict)"),
    "json_valid_rate_lenient": ("json_lenient", "JSON valid (lenient)"),
    "truncation_rate": ("truncated", "Truncated"),
    "error_rate": ("errored", "Provider errors"),
    **SAFETY_METRICS,  # red-team rates: NA outside their probe family
}
CONTINUOUS_METRICS: dict[str, tuple[str, str]] = {
    "length_chars_mean": ("len_chars", "Length (chars)"),
    "length_words_mean": ("len_words", "Length (words)"),
    "completion_tokens_mean": ("completion_tokens", "Completion tokens"),
    "latency_s_mean": ("latency_s", "Latency (s)"),
    "cost_usd_total": ("cost_usd", "Cost (USD, total)"),
}
METRIC_LABELS = {k: v[1] for k, v in {**BINARY_METRICS, **CONTINUOUS_METRICS}.items()} | {"similarity": "Similarity"}
NO_CATEGORY = "(none)"


class ReviewSettingsError(ReviewInputError):
    """Invalid reviewer settings (match rule, pattern, refusal pattern)."""


def is_rate(metric: str) -> bool:
    return metric in BINARY_METRICS


@dataclass(frozen=True)
class ReviewSettings:
    """How a comparison is checked: stored per comparison, extendable from the CLI."""

    match: str | None = None  # one rule for every case (recorded data often has none)
    pattern: str | None = None
    refusal_patterns: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.match is not None and self.match not in MATCH_RULES:
            raise ReviewSettingsError(f"unknown match rule '{self.match}' (use one of: {', '.join(MATCH_RULES)})")
        if self.match == "regex" and not self.pattern:
            raise ReviewSettingsError("match rule 'regex' needs a pattern (--pattern)")

    def merged(self, other: ReviewSettings) -> ReviewSettings:
        """`other` (e.g. CLI flags) on top of these (stored) settings; refusal patterns add up."""
        return ReviewSettings(match=other.match or self.match,
                              pattern=other.pattern if other.match else self.pattern,
                              refusal_patterns=tuple(dict.fromkeys(self.refusal_patterns + other.refusal_patterns)))


def stored_settings(engine: Engine, name: str) -> ReviewSettings:
    with Session(engine) as session:
        raw = from_json(get_comparison(session, name).settings_json) or {}
    return ReviewSettings(match=raw.get("match"), pattern=raw.get("pattern"),
                          refusal_patterns=tuple(raw.get("refusal_patterns", ())))


# ---------------------------------------------------------------- per-output checks

def _side_checks(frame: pd.DataFrame, side: str, detector: RefusalDetector,
                 rule: pd.Series, pattern: pd.Series) -> dict[str, pd.Series]:
    text = frame[f"{side}_text"]
    validity = json_validity(text, frame["json_schema"])
    refused = detector.flags(text)
    return {
        f"{side}_refused": refused,
        f"{side}_correct": match_outputs(text, frame["expected"], rule, pattern),
        f"{side}_json_strict": validity["strict"],
        f"{side}_json_lenient": validity["lenient"],
        f"{side}_truncated": truncation_flags(frame[f"{side}_finish_reason"]),
        f"{side}_errored": error_flags(frame[f"{side}_error"], text),
        f"{side}_len_chars": char_lengths(text),
        f"{side}_len_words": word_counts(text),
        **safety_checks(frame, side, refused),
    }


def checked_pairs(pairs: pd.DataFrame, settings: ReviewSettings = ReviewSettings()) -> pd.DataFrame:
    """The pairs frame plus every per-output check, per side, and the pair's similarity."""
    detector = RefusalDetector(settings.refusal_patterns)
    rule = pd.Series(settings.match, index=pairs.index) if settings.match else pairs["match"]
    pattern = pd.Series(settings.pattern, index=pairs.index) if settings.match else pairs["pattern"]
    columns = {**_side_checks(pairs, "b", detector, rule, pattern),
               **_side_checks(pairs, "c", detector, rule, pattern),
               "similarity": similarity(pairs["b_text"], pairs["c_text"])}
    out = pd.concat([pairs, pd.DataFrame(columns, index=pairs.index)], axis=1)
    out["category"] = out["category"].fillna(NO_CATEGORY)
    return out


# ---------------------------------------------------------------- statistics

def _per_case(checked: pd.DataFrame) -> pd.DataFrame:
    """One row per case: repeats averaged (booleans become the fraction of true repeats)."""
    if checked.empty or checked["repeat"].max() == 0:
        return checked
    cols = ["case_id", "category"] + [f"{s}_{c}" for s in "bc" for c, _ in
                                      [*BINARY_METRICS.values(), *CONTINUOUS_METRICS.values()]] + ["similarity"]
    return aggregate_repeats(checked[cols], key="case_id")


def _rate_ci(rate: float, n: int, alpha: float) -> list[float]:
    low, high = proportion_confint(rate * n, n, alpha=alpha, method="wilson")
    return [float(low), float(high)]


def _binary(frame: pd.DataFrame, col: str, alpha: float) -> dict[str, Any] | None:
    b, c = frame[f"b_{col}"].astype("Float64"), frame[f"c_{col}"].astype("Float64")
    m = binary_metric(b, c, alpha)
    if m is None:
        return None
    both = b.notna() & c.notna()
    bb, cc = b[both].to_numpy(dtype=float) > 0.5, c[both].to_numpy(dtype=float) > 0.5
    m["unchanged"] = {"true": int(np.sum(bb & cc)), "false": int(np.sum(~bb & ~cc))}
    m["baseline_ci"], m["candidate_ci"] = _rate_ci(m["baseline"], m["n"], alpha), _rate_ci(m["candidate"], m["n"], alpha)
    return m


def _continuous(frame: pd.DataFrame, key: str, col: str, alpha: float) -> dict[str, Any] | None:
    b, c = frame[f"b_{col}"].astype("Float64"), frame[f"c_{col}"].astype("Float64")
    m = continuous_metric(b, c, alpha)
    if m is None or key != "cost_usd_total":
        return m
    # A total, not a mean: scale the mean difference and its CI by the number of pairs.
    n = m["n"]
    return {**m, "baseline": m["baseline"] * n, "candidate": m["candidate"] * n, "delta": m["delta"] * n,
            "ci_low": m["ci_low"] * n, "ci_high": m["ci_high"] * n}


def _similarity(frame: pd.DataFrame, alpha: float) -> dict[str, Any] | None:
    m = single_metric(frame["similarity"], alpha)
    if m is None:
        return None
    # One value per pair: reported as the candidate's value with the CI of the mean, no delta.
    return {**m, "candidate": m["mean"], "candidate_ci": [m["ci_low"], m["ci_high"]]}


def metrics_for(frame: pd.DataFrame, alpha: float = ALPHA) -> dict[str, dict[str, Any]]:
    """Every applicable metric over these (per-case) rows, Holm-adjusted together."""
    out: dict[str, dict[str, Any] | None] = {}
    for key, (col, _) in BINARY_METRICS.items():
        out[key] = _binary(frame, col, alpha)
    for key, (col, _) in CONTINUOUS_METRICS.items():
        out[key] = _continuous(frame, key, col, alpha)
    out["similarity"] = _similarity(frame, alpha)
    return {k: v for k, v in with_holm(out).items() if v is not None}


def _contract(checked: pd.DataFrame) -> dict[str, Any] | None:
    rows = checked[checked["json_schema"].notna()]
    if rows.empty:
        return None
    diff = contract_diff(rows["b_text"], rows["c_text"])
    for change in diff["changes"]:  # frame indexes -> case ids users can look up
        change["examples"] = [str(rows.at[i, "case_key"]) for i in change["examples"]]
    return diff


def report_from_checked(checked: pd.DataFrame, name: str, alpha: float = ALPHA) -> dict[str, Any]:
    per_case = _per_case(checked)
    paired = per_case[per_case["b_errored"].notna() & per_case["c_errored"].notna()]
    by_category = {}
    if paired["category"].nunique() > 1 or (paired["category"] != NO_CATEGORY).any():
        by_category = {str(cat): metrics_for(rows, alpha) for cat, rows in paired.groupby("category", sort=True)}
    return {"comparison": name, "n_pairs": int(len(paired)), "alpha": alpha,
            "metrics": metrics_for(paired, alpha), "by_category": by_category,
            "contract": _contract(checked)}


def build_report(engine: Engine, comparison: str, *, match: str | None = None, pattern: str | None = None,
                 refusal_patterns: tuple[str, ...] = (), alpha: float = ALPHA) -> dict[str, Any]:
    """The report for a stored comparison: stored reviewer settings plus these overrides."""
    settings = stored_settings(engine, comparison).merged(
        ReviewSettings(match=match, pattern=pattern, refusal_patterns=tuple(refusal_patterns)))
    report = report_from_checked(checked_pairs(load_pairs(engine, comparison), settings), comparison, alpha)
    report["judge"] = judge_block(engine, comparison, alpha)
    report["settings"] = {"match": settings.match, "pattern": settings.pattern,
                          "refusal_patterns": list(settings.refusal_patterns)}
    return report


def save_settings(engine: Engine, comparison: str, settings: ReviewSettings) -> None:
    """Store the reviewer's settings with the comparison (validated: bad patterns raise here)."""
    RefusalDetector(settings.refusal_patterns)  # compiles every pattern: fail before writing
    with session_scope(engine) as session:
        comp = get_comparison(session, comparison)
        comp.settings_json = to_json({"match": settings.match, "pattern": settings.pattern,
                                      "refusal_patterns": list(settings.refusal_patterns)})
        session.add(comp)


def change_counts(checked: pd.DataFrame) -> dict[str, int]:
    """How many pairs each "what changed" filter of the case browser holds."""
    names = ("newly_refused", "refusal_flips", "accuracy_regressions", "accuracy_improvements",
             "schema_breaks", "errors")
    return {n: int(len(select_cases(checked, BrowseQuery(filter=n)))) for n in names}
