"""Paired statistics for baseline-vs-candidate metrics.

Every metric function returns None when no pair is usable (never zeros), otherwise a dict:
    {"baseline", "candidate", "delta", "ci_low", "ci_high", "p_value", "n"}    (all metrics)
    + {"flips": {"to_true", "to_false"}, "ci_method"}                          (binary)
    + {"baseline_median", "candidate_median"}                                  (continuous)
    + {"p_value_adj"} once `with_holm` has adjusted the metrics shown together.
`delta` is candidate - baseline; the CI is for that difference at level 1 - alpha. A pair with a
missing value on either side is excluded, and `n` counts the pairs used.

- Binary (0/1 per case): Newcombe's hybrid score interval for paired proportions (Newcombe 1998,
  method 10, with his correction of the phi coefficient), exact McNemar p (binomial test on the
  discordant pairs; 1.0 when there are none) and the flips each way.
- Binary after `aggregate_repeats` (per-case fractions): rates are means of the fractions and the CI
  is a paired bootstrap of the per-case differences (Newcombe needs 0/1 data); McNemar and the flips
  use the per-case majority (fraction > 0.5), and cases tied at exactly 0.5 on either side are left
  out of the test.
- Continuous (length, latency, cost): means and medians, the CI of the mean difference by inverting the
  paired sign-flip randomization test (`sign_flip_ci`; the t interval from LARGE_N pairs on), and the
  Wilcoxon signed-rank p on the non-zero differences (exact below EXACT_WILCOXON_MAX of them, with
  ties; 1.0 when every difference is zero). Unchanged pairs do not move the p-value. Why not the
  percentile bootstrap: it covered 0 in only ~0.91 of A/A comparisons at n = 30 (bench/coverage_bench.py).
- Single-sample (similarity: one value per pair, so there is nothing to subtract): `single_metric`
  reports the mean ("candidate" and "baseline" are None, "mean" holds it) with a bootstrap CI and no
  p-value.

The Holm family (`with_holm`; docs/statistics.md). The Overview's adjusted p-values correct for the
hypotheses that could be significant, once per question:
- A metric whose test cannot reach alpha is outside the family (Tarone 1990): a binary metric whose
  discordant pairs k give a smallest attainable exact McNemar p, 2 * 0.5**k, above alpha (no flips at
  all: p = 1 by construction), and a continuous metric with no non-zero difference. Its p_value_adj is
  its unadjusted p (it can never be significant).
- Near-duplicates (`groups`: the length measures in characters, words and tokens) count once: each
  member is adjusted in the family where the group is represented by that member, and the other
  metrics in the family where it is represented by the group's first informative member.
The gate's family is the policy's criteria, and needs no adjustment: "go" requires every blocking
threshold to pass (an intersection-union test: the chance of a wrong "go" stays at most the policy's
alpha however many criteria there are, Berger 1982), so the gate uses the unadjusted intervals at the
policy's alpha. A wrong "no-go" is what more criteria make likelier; the detectability check
(lib/governance/detectability.py) says, before locking, what the policy can pass.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import numpy as np
import pandas as pd
from scipy.stats import binomtest, rankdata, wilcoxon
from scipy.stats import t as t_dist
from statsmodels.stats.proportion import proportion_confint

from lib.review.constants import ALPHA


class Flips(TypedDict):
    to_true: int  # pairs whose check went from false (baseline) to true (candidate)
    to_false: int


class MetricBlock(TypedDict):
    """One metric of the report ("M" in docs/report-json.md): the JSON keys are an interface."""

    baseline: float | None  # None only for single-sample metrics (similarity)
    candidate: float | None
    delta: float | None  # candidate - baseline
    ci_low: float
    ci_high: float
    p_value: float | None
    n: int  # pairs used
    ci_method: str
    flips: NotRequired[Flips]  # binary metrics
    unchanged: NotRequired[dict[str, int]]  # binary metrics in the report: pairs true/false on both sides
    baseline_ci: NotRequired[list[float]]  # binary metrics in the report: Wilson interval of each rate
    candidate_ci: NotRequired[list[float] | None]  # None: a judge score with a single pair
    baseline_median: NotRequired[float]  # continuous metrics
    candidate_median: NotRequired[float]
    mean: NotRequired[float]  # single-sample metrics
    median: NotRequired[float]
    p_value_adj: NotRequired[float | None]  # after `with_holm`

N_RESAMPLES = 2000
EXACT_WILCOXON_MAX = 50  # non-zero differences up to which the signed-rank p is exact (as scipy's "auto")
SEED = 0
LARGE_N = 1_000  # from here on, the t interval replaces the bootstrap (see mean_ci)
_CHUNK_ELEMENTS = 4_000_000  # resampled indices held at once (~32 MB): bounds memory at any n

ArrayLike = pd.Series | np.ndarray | Sequence[Any]


def wilson(k: float, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n (k may be fractional: repeats averaged per case)."""
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return float(low), float(high)


def binary_metric(
    baseline: ArrayLike, candidate: ArrayLike, alpha: float = ALPHA, *,
    n_resamples: int = N_RESAMPLES, seed: int = SEED,
) -> MetricBlock | None:
    """Rates, delta, CI, McNemar p and flips for a pass/fail metric (0/1, or per-case fractions)."""
    b, c = _paired(baseline, candidate)
    if b.size == 0:
        return None
    if ((b < 0) | (b > 1) | (c < 0) | (c > 1)).any():
        raise ValueError("binary metric values must lie in [0, 1]")
    binary = np.isin(b, (0.0, 1.0)).all() and np.isin(c, (0.0, 1.0)).all()
    if binary:
        ci, method = newcombe_paired_ci(c, b, alpha), "newcombe"
        b_major, c_major = b, c
    else:
        *ci, method = delta_ci(c - b, alpha, n_resamples, seed)
        decided = (b != 0.5) & (c != 0.5)
        b_major, c_major = b[decided] > 0.5, c[decided] > 0.5
    to_true = int(np.sum((b_major == 0) & (c_major == 1)))
    to_false = int(np.sum((b_major == 1) & (c_major == 0)))
    return {
        "baseline": float(b.mean()), "candidate": float(c.mean()), "delta": float(c.mean() - b.mean()),
        "ci_low": ci[0], "ci_high": ci[1], "p_value": mcnemar_exact(to_true, to_false), "n": int(b.size),
        "flips": {"to_true": to_true, "to_false": to_false}, "ci_method": method,
    }


def newcombe_paired_ci(first: np.ndarray, second: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """CI for mean(first) - mean(second), paired 0/1 data: Newcombe (1998) method 10.

    Wilson score intervals of both marginal proportions are combined ("square and add") with the
    correlation between them, phi, corrected as Newcombe describes: reduced by n/2 when positive
    (0 if that makes it negative), used as is when negative, 0 when a margin is empty.
    """
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    n = first.size
    n11 = int(np.sum(first & second))
    n10 = int(np.sum(first & ~second))
    n01 = int(np.sum(~first & second))
    n00 = n - n11 - n10 - n01
    p1, p2 = (n11 + n10) / n, (n11 + n01) / n
    l1, u1 = wilson(n11 + n10, n, alpha)
    l2, u2 = wilson(n11 + n01, n, alpha)
    margins = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    phi = 0.0
    if margins > 0:
        a = n11 * n00 - n10 * n01
        phi = (a - n / 2 if a > n / 2 else min(a, 0)) / math.sqrt(margins)
    d1, e1 = p1 - l1, u1 - p1  # distances to the Wilson limits
    d2, e2 = p2 - l2, u2 - p2
    low = (p1 - p2) - math.sqrt(d1**2 - 2 * phi * d1 * e2 + e2**2)
    high = (p1 - p2) + math.sqrt(e1**2 - 2 * phi * e1 * d2 + d2**2)
    return float(low), float(high)


def mcnemar_exact(to_true: int, to_false: int) -> float:
    """Two-sided exact McNemar p: binomial test of one discordant count out of all discordant pairs."""
    discordant = to_true + to_false
    return 1.0 if discordant == 0 else float(binomtest(to_true, discordant, 0.5).pvalue)


def continuous_metric(
    baseline: ArrayLike, candidate: ArrayLike, alpha: float = ALPHA, *,
    n_resamples: int = N_RESAMPLES, seed: int = SEED,
) -> MetricBlock | None:
    """Means, medians, the mean difference with its paired interval (`delta_ci`), Wilcoxon signed-rank p."""
    b, c = _paired(baseline, candidate)
    if b.size == 0:
        return None
    diff = c - b
    low, high, method = delta_ci(diff, alpha, n_resamples, seed)
    return {
        "baseline": float(b.mean()), "candidate": float(c.mean()), "delta": float(diff.mean()),
        "ci_low": low, "ci_high": high, "p_value": wilcoxon_p(diff), "n": int(b.size), "ci_method": method,
        "baseline_median": float(np.median(b)), "candidate_median": float(np.median(c)),
    }


def single_metric(
    values: ArrayLike, alpha: float = ALPHA, *, n_resamples: int = N_RESAMPLES, seed: int = SEED,
) -> MetricBlock | None:
    """Mean of a one-value-per-pair metric (similarity) with a bootstrap CI; no delta, no p-value."""
    v = _as_float(values)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    low, high, method = mean_ci(v, alpha, n_resamples, seed)
    return {
        "baseline": None, "candidate": None, "delta": None, "mean": float(v.mean()),
        "median": float(np.median(v)), "ci_low": low, "ci_high": high, "p_value": None, "n": int(v.size),
        "ci_method": method,
    }


def mean_ci(
    values: np.ndarray, alpha: float = ALPHA, n_resamples: int = N_RESAMPLES, seed: int = SEED,
) -> tuple[float, float, str]:
    """CI of a mean: percentile bootstrap below LARGE_N pairs; from there on the t interval, which the
    bootstrap converges to (CLT; a test checks they agree) at a thousandth of the cost: a review
    computes dozens of these (metrics x categories), 1.5 s each at 100k pairs by bootstrap."""
    values = np.asarray(values, dtype=float)
    if values.size < LARGE_N:
        return (*bootstrap_mean_ci(values, alpha, n_resamples, seed), "bootstrap")
    return (*t_mean_ci(values, alpha), "t")


def delta_ci(
    differences: np.ndarray, alpha: float = ALPHA, n_resamples: int = N_RESAMPLES, seed: int = SEED,
) -> tuple[float, float, str]:
    """CI of a mean paired difference: `sign_flip_ci` below LARGE_N pairs, the t interval from there on
    (they converge; the t interval is exact enough there and costs nothing). Coverage in A/A
    simulations at n = 30, 100, 1000: bench/coverage_bench.py."""
    differences = np.asarray(differences, dtype=float)
    if differences.size < LARGE_N:
        return (*sign_flip_ci(differences, alpha, n_resamples, seed), "sign-flip")
    return (*t_mean_ci(differences, alpha), "t")


def sign_flip_ci(
    differences: np.ndarray, alpha: float = ALPHA, n_resamples: int = N_RESAMPLES, seed: int = SEED,
) -> tuple[float, float]:
    """The shifts delta that the paired sign-flip randomization test does not reject at alpha.

    Under "no change" each pair's difference is as likely to have either sign, so the test is exact
    for any distribution symmetric about delta (an A/A comparison covers 0 in 1 - alpha of runs, heavy
    tails or not, where the percentile bootstrap and the t interval do not). Inverted in closed form:
    with random signs s, the flipped statistic mean(s * (d - delta)) reaches mean(d - delta) exactly when
    delta >= the mean of d over the flipped pairs, so the interval is the alpha/2 and 1 - alpha/2
    quantiles of the means of random halves (each pair flipped with probability 1/2). Seeded."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return math.nan, math.nan
    if d.size == 1 or np.all(d == d[0]):
        return float(d[0]), float(d[0])
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // d.size)
    means = np.empty(n_resamples)
    filled = 0
    while filled < n_resamples:
        flipped = rng.random((min(per_chunk, n_resamples - filled), d.size)) < 0.5
        counts = flipped.sum(axis=1)
        keep = counts > 0  # flipping no pair says nothing (its mean is undefined)
        chunk = (flipped[keep] @ d) / counts[keep]
        take = min(chunk.size, n_resamples - filled)
        means[filled:filled + take] = chunk[:take]
        filled += take
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def t_mean_ci(values: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """Student's t interval of a mean."""
    values = np.asarray(values, dtype=float)
    half = float(t_dist.ppf(1 - alpha / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    mean = float(values.mean())
    return mean - half, mean + half


def bootstrap_mean_ci(
    values: np.ndarray, alpha: float = ALPHA, n_resamples: int = N_RESAMPLES, seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; resamples indices in chunks so memory stays bounded."""
    values = np.asarray(values, dtype=float)
    n = values.size
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_ELEMENTS // n)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, per_chunk):
        k = min(per_chunk, n_resamples - start)
        means[start:start + k] = values[rng.integers(0, n, size=(k, n), dtype=np.int32)].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p on the non-zero differences (zeros are dropped first, so adding
    unchanged pairs never changes it); all zero -> 1.0.

    Exact (the permutation distribution of the signed-rank sum, with mid-ranks for ties) up to
    EXACT_WILCOXON_MAX non-zero differences; the normal approximation with the tie correction beyond.
    """
    d = np.asarray(differences, dtype=float)
    if d.size < 1:
        return None
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    if d.size > EXACT_WILCOXON_MAX:
        return float(wilcoxon(d, zero_method="wilcox", method="approx").pvalue)
    return _exact_signed_rank_p(d)


def _exact_signed_rank_p(d: np.ndarray) -> float:
    """Exact two-sided p of the signed-rank sum: each rank's sign flips with probability 1/2 under
    the null. Mid-ranks are halves, so the distribution is built over doubled ranks (integers)."""
    doubled = np.rint(2 * rankdata(np.abs(d))).astype(int)
    observed = int(doubled[d > 0].sum())
    counts = np.zeros(int(doubled.sum()) + 1)
    counts[0] = 1.0
    for w in doubled:  # distribution of the sum of a random subset of the weights
        counts[w:] += counts[:-w].copy()
    counts /= counts.sum()
    lower, upper = counts[:observed + 1].sum(), counts[observed:].sum()
    return float(min(1.0, 2 * min(lower, upper)))


def holm(pvalues: dict[str, float | None]) -> dict[str, float | None]:
    """Holm-adjusted p-values for the metrics shown together; None stays None.

    Step-down: the i-th smallest p (0-based) times (m - i), made monotone, capped at 1. Computed
    here because statsmodels' multipletests runs gc.collect() on each call (~0.2 s on a big heap,
    and a review calls it once per category); a test checks equality with statsmodels.
    """
    names = [k for k, p in pvalues.items() if p is not None]
    adjusted = dict.fromkeys(pvalues)
    if names:
        p = np.array([pvalues[k] for k in names], dtype=float)
        order = np.argsort(p, kind="stable")
        stepped = np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p))))
        corrected = np.empty_like(p)
        corrected[order] = np.minimum(stepped, 1.0)
        adjusted.update({k: float(v) for k, v in zip(names, corrected)})
    return adjusted


def in_holm_family(m: MetricBlock, alpha: float = ALPHA) -> bool:
    """Can this metric's test reach alpha at all (module docstring, "The Holm family")?"""
    if m["p_value"] is None:
        return False
    if "flips" in m:
        discordant = m["flips"]["to_true"] + m["flips"]["to_false"]
        return discordant > 0 and min(1.0, 2 * 0.5 ** discordant) <= alpha
    return not (m["ci_low"] == m["ci_high"] == m["delta"] == 0)  # every difference zero


def with_holm(
    metrics: Mapping[str, MetricBlock | None], *, groups: Sequence[Sequence[str]] = (), alpha: float = ALPHA,
) -> dict[str, MetricBlock | None]:
    """Copies of the metric dicts with "p_value_adj": Holm over the family (module docstring), with
    each group of near-duplicate metrics counted once."""
    family = {k: m["p_value"] for k, m in metrics.items() if m is not None and in_holm_family(m, alpha)}
    members = [[k for k in g if k in family] for g in groups]
    grouped = {k for g in members for k in g}
    core = {k: p for k, p in family.items() if k not in grouped}
    representatives = {g[0]: family[g[0]] for g in members if g}
    adjusted: dict[str, float | None] = dict(holm(core | representatives))
    for group in members:
        others = {g[0]: family[g[0]] for g in members if g and g is not group}
        for k in group[1:]:  # each duplicate in the family in place of its group's first member
            adjusted[k] = holm(core | others | {k: family[k]})[k]
    out: dict[str, MetricBlock | None] = {}
    for k, m in metrics.items():
        out[k] = None if m is None else {**m, "p_value_adj": adjusted.get(k, m["p_value"])}
    return out


def aggregate_repeats(frame: pd.DataFrame, key: str = "case_id") -> pd.DataFrame:
    """One row per case from several repeats per side: boolean columns become the fraction of true
    repeats (for rates; `binary_metric` takes majorities for the test), numeric columns their mean,
    other columns their first value. Missing values are ignored; all missing stays missing."""
    how = {
        col: "mean" if pd.api.types.is_bool_dtype(frame[col]) or pd.api.types.is_numeric_dtype(frame[col])
        else "first"
        for col in frame.columns if col != key
    }
    numeric = {col: frame[col].astype("Float64") if how[col] == "mean" else frame[col] for col in how}
    return pd.DataFrame({key: frame[key], **numeric}).groupby(key, sort=False).agg(how).reset_index()


def _as_float(values: ArrayLike) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == np.float64:
        return values  # already what the conversion below yields (NaN = missing): skip the copy
    return pd.Series(values).astype("Float64").to_numpy(dtype=float, na_value=np.nan)


def _paired(baseline: ArrayLike, candidate: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    b, c = _as_float(baseline), _as_float(candidate)
    if b.shape != c.shape:
        raise ValueError(f"baseline and candidate differ in length ({b.size} vs {c.size})")
    keep = np.isfinite(b) & np.isfinite(c)
    return b[keep], c[keep]
