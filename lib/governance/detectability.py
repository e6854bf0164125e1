"""What a policy can detect before it is locked: for the cases it will gate, per threshold, the smallest
margin that can pass when the candidate's outputs are identical to the baseline's, and how many cases the
chosen margin needs.

Rate deltas (`max_increase` / `max_decrease` on a rate) are judged on Newcombe's paired interval
(lib/review/stats.py). Identical outputs have no discordant pair, yet the interval still has a width:
a margin below its upper limit can never pass, even on an A/A comparison. Before any output exists the
rate is unknown, so the policy-time figure is the least favourable rate (the margin passes at any rate);
the gate, which knows the baseline's rate, uses that rate (`inconclusive_note`).
Level thresholds on a rate (`min` / `max`) are judged on the candidate's Wilson interval: the figure is
the observed rate the candidate must reach at this n. Continuous deltas (length, latency, cost) give an
interval of exactly 0 on identical values, so any margin can pass them; how small a real change they
resolve depends on the spread of the differences, unknown before a run. Judge and drift criteria are
not estimated. With repeats, rates are per-case fractions and the figures are for one output per case.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from lib.data.golden import get_dataset
from lib.governance.policy import JUDGE_RATE_METRICS, JUDGE_SCORE, RATE_METRICS, Criterion, PolicySpec

MAX_CASES = 10_000_000  # beyond this, "needs more than 10,000,000 cases"
_NOT_ESTIMATED = frozenset({"drift", JUDGE_SCORE, *JUDGE_RATE_METRICS})
_NEEDS_EXPECTED = frozenset({"accuracy"})
_NEEDS_SCHEMA = frozenset({"json_valid_rate", "json_valid_rate_lenient"})


@dataclass(frozen=True)
class CaseCounts:
    """How many cases each kind of metric applies to, overall and per category."""

    n: int
    with_expected: int
    with_schema: int
    by_category: dict[str, tuple[int, int, int]]  # category -> (n, with_expected, with_schema)

    def for_criterion(self, crit: Criterion) -> int:
        n, expected, schema = (self.n, self.with_expected, self.with_schema) if crit.category is None \
            else self.by_category.get(crit.category, (0, 0, 0))
        return expected if crit.metric in _NEEDS_EXPECTED else schema if crit.metric in _NEEDS_SCHEMA else n


@dataclass(frozen=True)
class Detectability:
    criterion: str
    threshold: str
    margin: float
    n: int  # cases the criterion applies to
    smallest_margin: float | None  # smallest margin that can pass on identical outputs (rate deltas)
    cases_needed: int | None  # cases for the chosen margin to be able to pass on identical outputs
    can_pass: bool | None  # None: not estimated
    sentence: str


def dataset_counts(engine: Engine, dataset: str, version: int | None = None) -> CaseCounts:
    """Case counts of a stored dataset (its latest version by default)."""
    with Session(engine) as session:
        dataset_id = get_dataset(session, dataset, version).id
    sql = text("SELECT COALESCE(category, ''), COUNT(*), SUM(expected IS NOT NULL AND expected != ''), "
               'SUM(json_schema IS NOT NULL AND json_schema != \'\') FROM "case" WHERE dataset_id = :d '
               "GROUP BY COALESCE(category, '')")
    with engine.connect() as conn:
        rows = [(str(c), int(n), int(e or 0), int(s or 0)) for c, n, e, s in conn.execute(sql, {"d": dataset_id})]
    by_category = {c: (n, e, s) for c, n, e, s in rows if c}
    return CaseCounts(sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows), by_category)


def aa_upper(n: int, k: np.ndarray | int, alpha: float) -> np.ndarray:
    """Upper limit of Newcombe's paired interval when both sides are identical with k of n true
    (vectorised over k; equals lib.review.stats.newcombe_paired_ci on such data, which a test checks)."""
    k = np.asarray(k, dtype=float)
    z = norm.ppf(1 - alpha / 2)
    p = k / n
    centre = (k + z * z / 2) / (n + z * z)
    half = z * np.sqrt(k * (n - k) / n + z * z / 4) / (n + z * z)
    low, high = centre - half, centre + half
    d, e = p - low, high - p
    margins = k * (n - k)  # n11 * n00, and both margins products are equal on identical data
    a = k * (n - k)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(margins > 0, np.where(a > n / 2, (a - n / 2) / np.where(margins > 0, margins, 1),
                                             np.minimum(a, 0) / np.where(margins > 0, margins, 1)), 0.0)
    return np.sqrt(np.maximum(e * e - 2 * phi * e * d + d * d, 0.0))


def _worst_k(n: int) -> np.ndarray:
    grid = np.unique(np.concatenate([np.round(np.linspace(0, n, 1001)), np.arange(0, min(n, 60) + 1),
                                     np.arange(max(0, n - 60), n + 1)]))
    return grid


def smallest_rate_margin(n: int, alpha: float, rate: float | None = None) -> float:
    """The smallest delta margin a rate criterion can pass on identical outputs: at `rate`, or at the
    least favourable rate when it is unknown."""
    if n <= 0:
        return math.inf
    ks = np.array([round(rate * n)]) if rate is not None else _worst_k(n)
    return float(np.max(aa_upper(n, ks, alpha)))


def cases_needed(margin: float, alpha: float, rate: float | None = None) -> int | None:
    """The fewest cases at which `margin` can pass on identical outputs (None: more than MAX_CASES)."""
    if margin <= 0:
        return None
    lo, hi = 1, 2
    while smallest_rate_margin(hi, alpha, rate) > margin:
        lo, hi = hi, hi * 2
        if hi > MAX_CASES:
            return None
    while lo < hi:  # the margin shrinks with n (up to rounding of the rate): bisect
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if smallest_rate_margin(mid, alpha, rate) > margin else (lo, mid)
    return lo


def _level_sentence(key: str, bound: float, n: int, alpha: float) -> str:
    ks = np.arange(n + 1)
    z = norm.ppf(1 - alpha / 2)
    centre = (ks + z * z / 2) / (n + z * z)
    half = z * np.sqrt(ks * (n - ks) / n + z * z / 4) / (n + z * z)
    if key == "max":
        ok = ks[centre + half <= bound]
        return (f"on {n} cases it passes only if the candidate's rate is at most {ok.max() / n:.1%}" if ok.size
                else f"on {n} cases it cannot pass at any observed rate (the interval's upper limit stays above "
                     f"{bound:.1%})")
    ok = ks[centre - half >= bound]
    return (f"on {n} cases it passes only if the candidate's rate is at least {ok.min() / n:.1%}" if ok.size
            else f"on {n} cases it cannot pass at any observed rate (the interval's lower limit stays below "
                 f"{bound:.1%})")


def _rate_delta(crit: Criterion, key: str, n: int, alpha: float, rate: float | None) -> Detectability:
    margin = crit.thresholds[key]
    smallest = smallest_rate_margin(n, alpha, rate)
    needed = cases_needed(margin, alpha, rate)
    at = f"at a baseline rate of {rate:.1%}" if rate is not None else "at the least favourable rate"
    can = margin >= smallest
    need = f"{needed:,} cases" if needed else f"more than {MAX_CASES:,} cases"
    sentence = (f"{crit.name} {key} {margin:g}: on {n} cases, identical outputs give an interval reaching "
                f"{smallest:.2%} ({at}), so the smallest margin that can pass is {smallest:.2%}; "
                + ("the chosen margin can pass" if can else "the chosen margin can never pass, even with identical "
                   "outputs") + f"; a margin of {margin:.2%} needs {need}.")
    return Detectability(crit.name, key, margin, n, smallest, needed, can, sentence)


def _continuous_sentence(crit: Criterion, key: str) -> str:
    return (f"{crit.name} {key} {crit.thresholds[key]:g}: identical outputs give an interval of 0, so any margin "
            "can pass; how small a real change it resolves depends on the spread of the differences (latency and "
            "cost vary even with identical outputs).")


def assess(spec: PolicySpec, counts: CaseCounts, rates: dict[str, float] | None = None) -> list[Detectability]:
    """Every threshold of the policy against these case counts (policy order). `rates`: known baseline
    rates per criterion name (the gate's); unknown rates are taken at their least favourable value."""
    out: list[Detectability] = []
    for crit in spec.criteria:
        n = counts.for_criterion(crit)
        for key, margin in crit.thresholds.items():
            if crit.metric in _NOT_ESTIMATED:
                out.append(Detectability(crit.name, key, margin, n, None, None, None,
                                         f"{crit.name} {key}: not estimated (depends on judge or drift results)."))
            elif n == 0:
                out.append(Detectability(crit.name, key, margin, 0, None, None, False,
                                         f"{crit.name} {key}: no case in the dataset applies, so it cannot pass."))
            elif crit.metric in RATE_METRICS and key in ("max_increase", "max_decrease"):
                out.append(_rate_delta(crit, key, n, spec.alpha, (rates or {}).get(crit.name)))
            elif crit.metric in RATE_METRICS:
                out.append(Detectability(crit.name, key, margin, n, None, None, None,
                                         f"{crit.name} {key} {margin:g}: " + _level_sentence(key, margin, n, spec.alpha)
                                         + "."))
            else:
                out.append(Detectability(crit.name, key, margin, n, 0.0, None, True, _continuous_sentence(crit, key)))
    return out


def inconclusive_note(crit: Criterion, key: str, n: int | None, baseline_rate: float | None,
                      alpha: float) -> str | None:
    """The sentence the gate adds to an inconclusive rate criterion: for a delta, whether its margin could
    pass at all on this comparison's n and baseline rate and the cases the margin needs; for a level, the
    observed rate that passes at this n."""
    if not n or crit.metric not in RATE_METRICS or crit.metric in _NOT_ESTIMATED:
        return None
    if key in ("min", "max"):
        return f"{crit.name} {key} {crit.thresholds[key]:g}: " + _level_sentence(key, crit.thresholds[key], n, alpha)
    return _rate_delta(crit, key, n, alpha, baseline_rate).sentence
