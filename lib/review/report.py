"""The review report: per-output checks on every pair, then paired statistics per metric.

`lib.review.checked.checked_frame` gives one row per pair with check columns (`b_*`/`c_*`), mostly read back
from the check store; `report_from_checked` turns them into the report JSON (an interface:
`./review report COMPARISON --json`, the gate, the decision record). Rates are fractions; deltas are
candidate - baseline with a CI at 1 - alpha; a metric with no applicable case is absent. With repeats,
every metric is aggregated per case first.
"""
from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from lib.judge.summary import judge_block
from lib.review.browse import BrowseQuery, select_cases
from lib.review.checked import checked_frame
from lib.review.checks.lengths import METHOD_FALLBACK, METHOD_LITELLM
from lib.review.checks.safety import SAFETY_METRICS
from lib.review.checks.structured import contract_summary
from lib.review.compute import NO_CATEGORY, checked_pairs
from lib.review.constants import SIDE_NAMES
from lib.review.labels import count_labelled
from lib.review.settings import (
    ReviewSettings,
    ReviewSettingsError,
    describe,
    differs_from_stored,
    save_settings,
    stored_settings,
)
from lib.review.stats import (
    ALPHA,
    MetricBlock,
    aggregate_repeats,
    binary_metric,
    continuous_metric,
    single_metric,
    wilson,
    with_holm,
)

# Re-exported: callers import the settings API and the from-scratch frame from here.
__all__ = ["ReviewSettings", "ReviewSettingsError", "build_report", "checked_pairs", "metrics_for",
           "report_from_checked", "save_settings", "stored_settings"]

# metric key -> (check column without side prefix, label). Keys are an interface: keep them.
BINARY_METRICS: dict[str, tuple[str, str]] = {
    "refusal_rate": ("refused", "Refusal rate"),
    "accuracy": ("correct", "Accuracy"),
    "json_valid_rate": ("json_strict", "JSON valid (strict)"),
    "json_valid_rate_lenient": ("json_lenient", "JSON valid (lenient)"),
    "truncation_rate": ("truncated", "Truncated"),
    "error_rate": ("errored", "Provider errors"),
    "empty_rate": ("empty", "Empty outputs"),  # empty or whitespace-only answers; more is worse
    # The prompt (system prompt + templated input) under each side's own tokenizer crosses the review's
    # input token limit: a tokenizer change that silently truncates context. Absent without a limit.
    "input_over_limit_rate": ("input_over_limit", "Input over the token limit"),
    **SAFETY_METRICS,  # red-team rates: NA outside their probe family
}
CONTINUOUS_METRICS: dict[str, tuple[str, str]] = {
    "length_chars_mean": ("len_chars", "Length (chars)"),
    "length_words_mean": ("len_words", "Length (words)"),
    "completion_tokens_mean": ("completion_tokens", "Completion tokens"),
    "length_tokens_mean": ("len_tokens", "Length (tokens, each model's tokenizer)"),
    "input_tokens_mean": ("input_tokens", "Prompt tokens (each model's tokenizer)"),
    "latency_s_mean": ("latency_s", "Latency (s)"),
    "cost_usd_total": ("cost_usd", "Cost (USD, total)"),
}
# Near-duplicate measures of one question (how long the answers are): one member of the Holm family
# (lib/review/stats.py, "The Holm family"; docs/statistics.md).
NEAR_DUPLICATES: tuple[tuple[str, ...], ...] = (
    ("length_chars_mean", "length_words_mean", "length_tokens_mean", "completion_tokens_mean"),
)
METRIC_LABELS = {k: v[1] for k, v in {**BINARY_METRICS, **CONTINUOUS_METRICS}.items()} | {"similarity": "Similarity"}


def is_rate(metric: str) -> bool:
    return metric in BINARY_METRICS


# ---------------------------------------------------------------- statistics

def _per_case(checked: pd.DataFrame) -> pd.DataFrame:
    """One row per case: repeats averaged (booleans become the fraction of true repeats)."""
    if checked.empty or checked["repeat"].max() == 0:
        return checked
    cols = ["case_id", "category"] + [f"{s}_{c}" for s in "bc" for c, _ in
                                      [*BINARY_METRICS.values(), *CONTINUOUS_METRICS.values()]] + ["similarity"]
    return aggregate_repeats(checked[cols], key="case_id")


def _rate_ci(rate: float, n: int, alpha: float) -> list[float]:
    return list(wilson(rate * n, n, alpha))


Arrays = dict[str, np.ndarray]  # metric column -> float values, NaN where missing


def _metric_columns() -> list[str]:
    checks = [c for c, _ in (*BINARY_METRICS.values(), *CONTINUOUS_METRICS.values())]
    return [f"{side}_{c}" for side in "bc" for c in checks] + ["similarity"]


def _arrays(frame: pd.DataFrame) -> Arrays:
    # Each column converted once: every metric, overall and per category, then slices numpy arrays.
    return {c: frame[c].astype("Float64").to_numpy(dtype=float, na_value=np.nan) for c in _metric_columns()}


def _binary(arrays: Arrays, col: str, alpha: float) -> MetricBlock | None:
    b, c = arrays[f"b_{col}"], arrays[f"c_{col}"]
    m = binary_metric(b, c, alpha)
    if m is None:
        return None
    both = ~np.isnan(b) & ~np.isnan(c)
    bb, cc = b[both] > 0.5, c[both] > 0.5
    m["unchanged"] = {"true": int(np.sum(bb & cc)), "false": int(np.sum(~bb & ~cc))}
    assert m["baseline"] is not None and m["candidate"] is not None  # binary metrics always have both rates
    m["baseline_ci"] = _rate_ci(m["baseline"], m["n"], alpha)
    m["candidate_ci"] = _rate_ci(m["candidate"], m["n"], alpha)
    return m


def _continuous(arrays: Arrays, key: str, col: str, alpha: float) -> MetricBlock | None:
    m = continuous_metric(arrays[f"b_{col}"], arrays[f"c_{col}"], alpha)
    if m is None or key != "cost_usd_total":
        return m
    # A total, not a mean: scale the mean difference and its CI by the number of pairs.
    n = m["n"]
    b, c, d = m["baseline"], m["candidate"], m["delta"]
    assert b is not None and c is not None and d is not None  # a paired metric always has all three
    return m | {"baseline": b * n, "candidate": c * n, "delta": d * n, "ci_low": m["ci_low"] * n,
                "ci_high": m["ci_high"] * n}


def _similarity(arrays: Arrays, alpha: float) -> MetricBlock | None:
    m = single_metric(arrays["similarity"], alpha)
    if m is None:
        return None
    # One value per pair: reported as the candidate's value with the CI of the mean, no delta.
    return m | {"candidate": m["mean"], "candidate_ci": [m["ci_low"], m["ci_high"]]}


def _metrics(arrays: Arrays, alpha: float) -> dict[str, MetricBlock]:
    out: dict[str, MetricBlock | None] = {}
    for key, (col, _) in BINARY_METRICS.items():
        out[key] = _binary(arrays, col, alpha)
    for key, (col, _) in CONTINUOUS_METRICS.items():
        out[key] = _continuous(arrays, key, col, alpha)
    out["similarity"] = _similarity(arrays, alpha)
    return {k: v for k, v in with_holm(out, groups=NEAR_DUPLICATES, alpha=alpha).items() if v is not None}


def metrics_for(frame: pd.DataFrame, alpha: float = ALPHA) -> dict[str, MetricBlock]:
    """Every applicable metric over these (per-case) rows, Holm-adjusted together."""
    return _metrics(_arrays(frame), alpha)


def _by_category(paired: pd.DataFrame, arrays: Arrays, alpha: float) -> dict[str, dict[str, MetricBlock]]:
    if not (paired["category"].nunique() > 1 or (paired["category"] != NO_CATEGORY).any()):
        return {}
    codes, categories = pd.factorize(paired["category"], sort=True)
    order = np.argsort(codes, kind="stable")  # rows of each category together, in frame order
    bounds = np.searchsorted(codes[order], np.arange(len(categories) + 1))
    return {str(cat): _metrics({k: v[order[bounds[i]:bounds[i + 1]]] for k, v in arrays.items()}, alpha)
            for i, cat in enumerate(categories)}


def _contract(checked: pd.DataFrame) -> dict[str, Any] | None:
    rows = checked[checked["has_schema"].astype(bool)]
    if rows.empty:
        return None
    found = [rows[f"{side}_json_found"].astype("boolean").fillna(False).astype(bool).tolist() for side in "bc"]
    return contract_summary(*found, rows["contract"].tolist(), rows["case_key"].astype(str).tolist())


def report_from_checked(checked: pd.DataFrame, name: str, alpha: float = ALPHA) -> dict[str, Any]:
    per_case = _per_case(checked)
    paired = per_case[per_case["b_errored"].notna() & per_case["c_errored"].notna()]
    arrays = _arrays(paired)
    return {"comparison": name, "n_pairs": int(len(paired)), "alpha": alpha,
            "metrics": _metrics(arrays, alpha), "by_category": _by_category(paired, arrays, alpha),
            "contract": _contract(checked), "tokenizers": _tokenizers(checked),
            "labelled_outputs": count_labelled(checked)}


def _tokenizers(checked: pd.DataFrame) -> dict[str, str | None]:
    """How each side's tokens were counted: litellm's tokenizer for the model, or the offline fallback."""
    out: dict[str, str | None] = {}
    for side, name in SIDE_NAMES.items():
        exact = checked[f"{side}_tokens_exact"].dropna() if f"{side}_tokens_exact" in checked else pd.Series([])
        out[name] = None if exact.empty else METHOD_LITELLM if bool(exact.all()) else METHOD_FALLBACK
    return out


def build_report(engine: Engine, comparison: str, *, match: str | None = None, pattern: str | None = None,
                 refusal_patterns: tuple[str, ...] = (), alpha: float = ALPHA,
                 overrides: ReviewSettings | None = None) -> dict[str, Any]:
    """The report for a stored comparison: stored reviewer settings plus these overrides. Per-output
    checks come from the check store (computed and stored first for outputs it has not seen)."""
    flags = ReviewSettings(match=match, pattern=pattern, refusal_patterns=tuple(refusal_patterns))
    stored = stored_settings(engine, comparison)
    settings = stored.merged(flags.merged(overrides or ReviewSettings()))
    report = report_from_checked(checked_frame(engine, comparison, settings), comparison, alpha)
    report["judge"] = judge_block(engine, comparison, alpha)
    report["settings"] = settings.as_dict()
    report["cost_projection"] = _cost_projection(engine, comparison, alpha)
    if differs_from_stored(stored, settings):
        # One set of settings per comparison: say so when these figures are not the gate's.
        report["settings_note"] = (f"these figures use settings that differ from the stored ones ({describe(stored)}), "
                                   "which the gate and the pages use; store these with `./review settings set "
                                   f"{comparison} ...`")
    return report


def _cost_projection(engine: Engine, comparison: str, alpha: float) -> dict[str, Any] | None:
    from lib.catalog.cost import cost_projection  # the catalogue loads litellm's map on first use

    return cost_projection(engine, comparison, alpha)


class ChangeCounts(TypedDict):
    """How many pairs each "what changed" filter of the case browser holds."""

    newly_refused: int
    refusal_flips: int
    accuracy_regressions: int
    accuracy_improvements: int
    schema_breaks: int
    errors: int
    empty: int


def change_counts(checked: pd.DataFrame) -> ChangeCounts:
    def count(name: str) -> int:
        return int(len(select_cases(checked, BrowseQuery(filter=name))))

    return ChangeCounts(**{name: count(name) for name in ChangeCounts.__annotations__})  # type: ignore[typeddict-item]
