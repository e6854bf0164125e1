"""Statistics without small-sample traps, each against an independent reference: scipy, exact
enumeration, or a simulation of the claim (see docs/statistics.md)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import rankdata, wilcoxon

from lib.review.stats import (
    binary_metric,
    continuous_metric,
    delta_ci,
    holm,
    in_holm_family,
    sign_flip_ci,
    wilcoxon_p,
    with_holm,
)

# ---- Wilcoxon signed-rank on the non-zero differences ------------------------------------------------

def test_unchanged_pairs_do_not_move_the_p_value() -> None:
    assert wilcoxon_p(np.arange(1.0, 6.0)) == pytest.approx(0.0625, abs=1e-15)
    assert wilcoxon_p(np.r_[np.zeros(25), np.arange(1.0, 6.0)]) == pytest.approx(0.0625, abs=1e-15)
    m_small = continuous_metric(np.zeros(5), np.arange(1.0, 6.0))
    m_padded = continuous_metric(np.zeros(30), np.r_[np.zeros(25), np.arange(1.0, 6.0)])
    assert m_small["p_value"] == m_padded["p_value"] == pytest.approx(0.0625)


@pytest.mark.parametrize("seed", range(5))
def test_exact_p_equals_scipy_exact_without_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = rng.normal(0.3, 1.0, size=int(rng.integers(5, 40)))
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d, method="exact").pvalue, rel=1e-9)


def _enumerated_p(d: np.ndarray) -> float:
    """Two-sided p by listing all 2**n sign assignments of the mid-ranks (no formula shared)."""
    ranks = rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    sums = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=d.size)])
    return min(1.0, 2 * min(np.mean(sums <= observed + 1e-9), np.mean(sums >= observed - 1e-9)))


@pytest.mark.parametrize("d", [
    [1, 1, 2, -2, 3, 3, 3, 4, -1, 5],  # ties in |d|, both signs
    [2, 2, 2, 2, -2, 7, 7, 1],
    [0, 0, 0, 1, -1, 2, 2, 2, 3, 0, 4, 4],  # zeros are dropped first
    [5, 4, 3, 2, 1, 1, -0.5],
])
def test_exact_p_with_ties_equals_enumeration(d: list[float]) -> None:
    d = np.asarray(d, dtype=float)
    assert wilcoxon_p(d) == pytest.approx(_enumerated_p(d[d != 0]), rel=1e-12)


def test_many_differences_use_scipys_normal_approximation_on_the_non_zero_ones() -> None:
    rng = np.random.default_rng(11)
    d = np.round(rng.normal(0.2, 1.0, size=300), 1)  # ties and zeros
    nonzero = d[d != 0]
    assert nonzero.size > 50
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(nonzero, method="approx").pvalue, rel=1e-12)


# ---- the interval for continuous deltas ---------------------------------------------------------------

def _brute_force_inversion(d: np.ndarray, alpha: float) -> tuple[float, float]:
    """The set of shifts the exact sign-flip test (all 2**n flips) does not reject, found by scanning."""
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=d.size)))
    kept = []
    for delta in np.linspace(d.min(), d.max(), 4001):
        stat = (signs * (d - delta)).mean(axis=1)
        observed = (d - delta).mean()
        if np.mean(stat >= observed - 1e-12) > alpha / 2 and np.mean(stat <= observed + 1e-12) > alpha / 2:
            kept.append(delta)
    return min(kept), max(kept)


def test_sign_flip_interval_inverts_the_exact_randomization_test() -> None:
    d = np.array([3.0, -1.0, 4.0, 1.5, 9.0, -2.6, 5.0, 3.5, 0.5, 12.0, -0.8, 2.0])
    low, high = sign_flip_ci(d, 0.05, n_resamples=200_000, seed=1)
    ref_low, ref_high = _brute_force_inversion(d, 0.05)
    spread = d.max() - d.min()
    assert low == pytest.approx(ref_low, abs=0.01 * spread) and high == pytest.approx(ref_high, abs=0.01 * spread)


def test_sign_flip_interval_holds_coverage_in_a_a_runs_with_heavy_tails() -> None:
    # the short version of bench/coverage_bench.py: 600 A/A studies of 30 pairs, t(2)-tailed noise
    rng = np.random.default_rng(5)
    covered = sum(lo <= 0 <= hi for lo, hi in
                  (sign_flip_ci(rng.standard_t(2, 30) - rng.standard_t(2, 30), n_resamples=999, seed=s)
                   for s in range(600)))
    assert 0.93 <= covered / 600 <= 0.97  # 3 standard errors around 0.95


def test_delta_ci_methods_and_degenerate_input() -> None:
    assert delta_ci(np.arange(10.0))[2] == "sign-flip"
    assert delta_ci(np.arange(2000.0))[2] == "t"
    assert sign_flip_ci(np.zeros(7)) == (0.0, 0.0)
    assert sign_flip_ci(np.array([2.5])) == (2.5, 2.5)
    assert sign_flip_ci(np.arange(50.0)) == sign_flip_ci(np.arange(50.0))  # seeded


# ---- the Holm family ----------------------------------------------------------------------------------

def test_metrics_that_cannot_reach_alpha_do_not_cost_the_real_tests_power() -> None:
    real = binary_metric([0] * 12 + [1] * 28, [1] * 12 + [1] * 28)  # 12 flips: p ~ 0.0005
    constant = binary_metric([1] * 40, [1] * 40)  # no discordant pair: p = 1
    two_flips = binary_metric([0, 0] + [1] * 38, [1, 1] + [1] * 38)  # min attainable p = 0.5 > alpha
    unchanged = continuous_metric(np.arange(40.0), np.arange(40.0))  # every difference zero
    assert not any(in_holm_family(m) for m in (constant, two_flips, unchanged))
    alone = with_holm({"accuracy": real})["accuracy"]["p_value_adj"]
    padded = with_holm({"accuracy": real, "refusal_rate": constant, "truncation_rate": two_flips,
                        "latency_s_mean": unchanged})
    assert padded["accuracy"]["p_value_adj"] == alone == real["p_value"]
    assert padded["refusal_rate"]["p_value_adj"] == 1.0
    assert padded["truncation_rate"]["p_value_adj"] == two_flips["p_value"]


def test_near_duplicate_length_measures_count_once() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(400, 50, 40)
    cand = base + rng.normal(30, 20, 40)
    real = binary_metric([0] * 10 + [1] * 30, [1] * 10 + [1] * 30)
    lengths = {"length_chars_mean": continuous_metric(base, cand),
               "length_words_mean": continuous_metric(base / 5, cand / 5 + 0.1),
               "length_tokens_mean": continuous_metric(base / 4, cand / 4)}
    group = [list(lengths)]
    adjusted = with_holm({"accuracy": real, **lengths}, groups=group)
    two = holm({"a": real["p_value"], "l": lengths["length_chars_mean"]["p_value"]})
    assert adjusted["accuracy"]["p_value_adj"] == pytest.approx(two["a"])  # a family of 2, not 4
    for key, m in lengths.items():
        expected = holm({"a": real["p_value"], key: m["p_value"]})[key]
        assert adjusted[key]["p_value_adj"] == pytest.approx(expected)
    ungrouped = with_holm({"accuracy": real, **lengths})
    assert ungrouped["accuracy"]["p_value_adj"] >= adjusted["accuracy"]["p_value_adj"]


def test_the_gates_family_is_the_policys_criteria_without_adjustment() -> None:
    # "go" is an intersection-union test: each threshold is judged on its own unadjusted interval at the
    # policy's alpha, so adding criteria never changes another criterion's result (docs/statistics.md).
    from lib.governance.gate import evaluate
    from lib.governance.policy import parse_policy

    accuracy = binary_metric([1] * 100, [1] * 97 + [0] * 3)
    refusal = binary_metric([0] * 100, [0] * 100)
    report = {"alpha": 0.05, "metrics": {"accuracy": accuracy, "refusal_rate": refusal}}
    alone = evaluate(parse_policy(b"[criteria.accuracy]\nmax_decrease = 0.08\n"), report)
    many = evaluate(parse_policy(b"[criteria.accuracy]\nmax_decrease = 0.08\n[criteria.refusal_rate]\n"
                                 b"max_increase = 0.05\nmax = 0.1\n"), report)
    assert [alone[0].result, alone[0].ci] == [many[0].result, many[0].ci]
    assert alone[0].ci == (accuracy["ci_low"], accuracy["ci_high"])  # the report's unadjusted interval
