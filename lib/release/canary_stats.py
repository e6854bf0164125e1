"""Unpaired statistics for a canary: its arms are different requests, so nothing here is paired.

Every function returns the difference canary - control (`delta`) with a CI at level 1 - alpha:
- Rates: Newcombe's hybrid score interval for the difference of two independent proportions
  (Newcombe 1998, "Interval estimation for the difference between independent proportions",
  method 10: Wilson intervals of each arm combined by square-and-add), Fisher's exact p-value.
- Means (judge score): Welch's t interval from 1,000 values per arm on; below that a percentile
  bootstrap resampling each arm on its own; Mann-Whitney U p-value.
- The 95th percentile (latency): below 1,000 values per arm a percentile bootstrap of the difference of
  the two quantiles; from there on each arm's distribution-free order-statistic interval (binomial
  ranks) turned into a standard error and combined, delta +/- z * sqrt(se1^2 + se2^2) — the bootstrap
  of 1M latencies would cost seconds for the same answer.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.stats import binom, fisher_exact, mannwhitneyu, norm
from scipy.stats import t as t_dist

from lib.review.stats import t_mean_ci, wilson

N_RESAMPLES = 2000
SEED = 0
LARGE_N = 1_000
_CHUNK_ELEMENTS = 4_000_000  # resampled values held at once


def rate_difference(k_control: int, n_control: int, k_canary: int, n_canary: int, alpha: float
                    ) -> dict[str, Any] | None:
    """Rates of two independent arms, the difference with Newcombe's interval, Fisher's exact p."""
    if n_control == 0 or n_canary == 0:
        return None
    p0, p1 = k_control / n_control, k_canary / n_canary
    l0, u0 = wilson(k_control, n_control, alpha)
    l1, u1 = wilson(k_canary, n_canary, alpha)
    delta = p1 - p0
    low = delta - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = delta + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    table = [[k_canary, n_canary - k_canary], [k_control, n_control - k_control]]
    return {"control": p0, "canary": p1, "delta": delta, "ci_low": low, "ci_high": high,
            "control_ci": [l0, u0], "canary_ci": [l1, u1], "n_control": n_control, "n_canary": n_canary,
            "p_value": float(fisher_exact(table)[1]), "ci_method": "newcombe-unpaired"}


def _bootstrap(control: np.ndarray, canary: np.ndarray, stat: Any, alpha: float) -> tuple[float, float]:
    """Percentile bootstrap of stat(canary) - stat(control), each arm resampled on its own."""
    rng = np.random.default_rng(SEED)
    out = np.empty(N_RESAMPLES)
    per_chunk = max(1, _CHUNK_ELEMENTS // max(control.size, canary.size))
    for start in range(0, N_RESAMPLES, per_chunk):
        k = min(per_chunk, N_RESAMPLES - start)
        c0 = control[rng.integers(0, control.size, size=(k, control.size))]
        c1 = canary[rng.integers(0, canary.size, size=(k, canary.size))]
        out[start:start + k] = stat(c1) - stat(c0)
    low, high = np.quantile(out, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _mann_whitney(control: np.ndarray, canary: np.ndarray) -> float:
    if np.all(control == control[0]) and np.all(canary == control[0]):
        return 1.0
    return float(mannwhitneyu(canary, control, alternative="two-sided").pvalue)


def mean_difference(control: np.ndarray, canary: np.ndarray, alpha: float) -> dict[str, Any] | None:
    """Means of two independent arms, the difference with Welch's (or a bootstrap) CI, Mann-Whitney p."""
    control, canary = np.asarray(control, dtype=float), np.asarray(canary, dtype=float)
    if control.size < 2 or canary.size < 2:
        return None
    m0, m1 = float(control.mean()), float(canary.mean())
    if min(control.size, canary.size) < LARGE_N:
        (low, high), method = _bootstrap(control, canary, lambda a: a.mean(axis=-1), alpha), "bootstrap"
    else:
        v0, v1 = control.var(ddof=1) / control.size, canary.var(ddof=1) / canary.size
        se = math.sqrt(v0 + v1)
        df = (v0 + v1) ** 2 / (v0**2 / (control.size - 1) + v1**2 / (canary.size - 1)) if se > 0 else 1.0
        half = float(t_dist.ppf(1 - alpha / 2, df)) * se
        low, high, method = m1 - m0 - half, m1 - m0 + half, "welch"
    return {"control": m0, "canary": m1, "delta": m1 - m0, "ci_low": low, "ci_high": high,
            "canary_ci": list(t_mean_ci(canary, alpha)), "n_control": int(control.size), "n_canary": int(canary.size),
            "p_value": _mann_whitney(control, canary), "ci_method": method}


def quantile_ci(values: np.ndarray, q: float, alpha: float) -> tuple[float, float]:
    """Distribution-free CI of a quantile: order statistics at binomial ranks around n * q."""
    ordered = np.sort(values)
    n = ordered.size
    low_rank = int(binom.ppf(alpha / 2, n, q))  # 0-based index of the lower order statistic
    high_rank = int(binom.ppf(1 - alpha / 2, n, q))
    return float(ordered[max(low_rank - 1, 0)]), float(ordered[min(high_rank, n - 1)])


def quantile_difference(control: np.ndarray, canary: np.ndarray, alpha: float, q: float = 0.95
                        ) -> dict[str, Any] | None:
    """The q-quantile of two independent arms and the CI of their difference (see module docstring)."""
    control, canary = np.asarray(control, dtype=float), np.asarray(canary, dtype=float)
    if control.size < 2 or canary.size < 2:
        return None
    v0, v1 = float(np.quantile(control, q)), float(np.quantile(canary, q))
    ci0, ci1 = quantile_ci(control, q, alpha), quantile_ci(canary, q, alpha)
    if min(control.size, canary.size) < LARGE_N:
        (low, high), method = _bootstrap(control, canary, lambda a: np.quantile(a, q, axis=-1), alpha), "bootstrap"
    else:
        z = float(norm.ppf(1 - alpha / 2))
        se = math.hypot((ci0[1] - ci0[0]) / (2 * z), (ci1[1] - ci1[0]) / (2 * z))
        low, high, method = v1 - v0 - z * se, v1 - v0 + z * se, "order-statistic"
    return {"control": v0, "canary": v1, "delta": v1 - v0, "ci_low": low, "ci_high": high,
            "control_ci": list(ci0), "canary_ci": list(ci1), "n_control": int(control.size),
            "n_canary": int(canary.size), "p_value": _mann_whitney(control, canary), "ci_method": method}
