"""Drift results in words: what each tested column is, which test ran, and what its score means.

Evidently names its tests tersely ("K-S p_value") and one score column would mix p-values (small =
drift) with ROC AUCs (large = drift) and distances. `summary_rows` gives a reader one row per column
with the score under its own kind, every absent value as `lib.review.fmt.DASH`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lib.review import fmt

P_VALUE, AUC, DISTANCE = "p-value", "ROC AUC", "distance"


@dataclass(frozen=True)
class Method:
    name: str  # the test in words
    kind: str  # P_VALUE | AUC | DISTANCE: which column its score goes in
    rule: str  # when it calls drift, with "{t}" for the threshold


_P_RULE = "drift if p < {t}: unlikely to be one distribution"
_DISTANCE_RULE = "drift if at least {t} (0 = same distribution)"
_AUC_RULE = "drift if AUC > {t} and above chance (0.5 = alike, 1 = told apart)"
# Evidently's display names (lib.drift.evidently_report stores them) -> words
METHODS: dict[str, Method] = {
    "K-S p_value": Method("Kolmogorov-Smirnov test", P_VALUE, _P_RULE),
    "Z-test p_value": Method("two-proportion Z-test", P_VALUE, _P_RULE),
    "chi-square p_value": Method("chi-square test", P_VALUE, _P_RULE),
    "Anderson-Darling p_value": Method("Anderson-Darling test", P_VALUE, _P_RULE),
    "Mann-Whitney U-rank test p_value": Method("Mann-Whitney U test", P_VALUE, _P_RULE),
    "Fisher's Exact test p_value": Method("Fisher's exact test", P_VALUE, _P_RULE),
    "Wasserstein distance (normed)": Method("Wasserstein distance (normed)", DISTANCE, _DISTANCE_RULE),
    "Jensen-Shannon distance": Method("Jensen-Shannon distance", DISTANCE, _DISTANCE_RULE),
    "PSI": Method("population stability index", DISTANCE, "drift if the index is at least {t}"),
    "Text domain classifier ROC AUC": Method("text classifier (TF-IDF words)", AUC, _AUC_RULE),
    "Embeddings domain classifier (ROC AUC)": Method("embedding classifier", AUC, _AUC_RULE),
}
COLUMNS = {  # tested column -> what it measures
    "length": "Length (characters)", "word_count": "Words", "sentence_count": "Sentences",
    "non_letter_pct": "Non-letter characters (%)", "refusal": "Refusals (share)",
    "json_valid": "Valid JSON (share)", "sentiment": "Sentiment (VADER, -1 to 1)",
    "text": "Wording (the raw text)", "embedding": "Meaning (embeddings)",
}
HEADERS = ("measure", "drifted", "test", P_VALUE, AUC, DISTANCE, "what the score means")  # the rule holds the threshold


def method(name: str | None) -> Method:
    """The stored method name in words; an unknown name is shown as stored (no kind column claimed)."""
    if name and name in METHODS:
        return METHODS[name]
    kind = P_VALUE if name and "p_value" in name else DISTANCE
    return Method(str(name or fmt.DASH), kind, "drift past the threshold {t}")


def column_label(column: str) -> str:
    if column.startswith("regex_"):
        return f"Reviewer pattern {column.removeprefix('regex_')} (share found)"
    return COLUMNS.get(column, column)


def _tested_row(column: str, result: dict[str, Any], threshold: float | None) -> dict[str, str]:
    m = method(result.get("method"))
    scores = {P_VALUE: fmt.DASH, AUC: fmt.DASH, DISTANCE: fmt.DASH}
    scores[m.kind] = fmt.p_value(result.get("score")) if m.kind == P_VALUE else fmt.fixed(result.get("score"), ".3f")
    t = fmt.num(threshold) if threshold is not None else "chance (bootstrap)"
    return {"measure": column_label(column), "drifted": "yes" if result.get("drifted") else "no", "test": m.name,
            **scores, "what the score means": m.rule.format(t=t)}


def summary_rows(summary: dict[str, Any], details: dict[str, Any]) -> list[dict[str, str]]:
    """Drifted columns first, then the rest, then those not tested and why; every cell text."""
    thresholds = details.get("thresholds", {})
    tested = sorted(summary.get("columns", {}).items(), key=lambda item: not item[1].get("drifted"))
    rows = [_tested_row(name, col, thresholds.get(name)) for name, col in tested]
    rows += [{"measure": column_label(name), "drifted": "not tested", "test": fmt.DASH, P_VALUE: fmt.DASH,
              AUC: fmt.DASH, DISTANCE: fmt.DASH, "what the score means": reason}
             for name, reason in details.get("skipped", {}).items()]
    return rows
