"""Paired statistics: published values, hand computations and a seeded coverage simulation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from lib.review.stats import (
    aggregate_repeats,
    binary_metric,
    bootstrap_mean_ci,
    continuous_metric,
    holm,
    mcnemar_exact,
    newcombe_paired_ci,
    single_metric,
    wilcoxon_p,
    with_holm,
)


def paired_table(n11: int, n10: int, n01: int, n00: int) -> tuple[np.ndarray, np.ndarray]:
    """0/1 arrays (first, second) with the given 2x2 paired table (rows: first, columns: second)."""
    first = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00)
    second = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00)
    return first, second


# ---- binary ----------------------------------------------------------------------------------------

def test_newcombe_matches_published_example() -> None:
    # Complete response before/after consolidation therapy (Cavo et al. 2012), paired table
    # [[59, 6], [16, 80]]: Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables"
    # (2017), ch. 8, Newcombe square-and-add: estimate -0.0621, 95% CI -0.1186 to -0.0046.
    first, second = paired_table(59, 6, 16, 80)
    low, high = newcombe_paired_ci(first, second)
    assert first.mean() - second.mean() == pytest.approx(-0.0621, abs=5e-5)
    assert (low, high) == (pytest.approx(-0.1186, abs=5e-5), pytest.approx(-0.0046, abs=5e-5))


def test_binary_metric_orientation_is_candidate_minus_baseline() -> None:
    candidate, baseline = paired_table(59, 6, 16, 80)
    m = binary_metric(baseline, candidate)
    assert m["delta"] == pytest.approx(-10 / 161)
    assert (m["ci_low"], m["ci_high"]) == pytest.approx(newcombe_paired_ci(candidate, baseline))
    assert m["flips"] == {"to_true": 6, "to_false": 16}  # candidate 1 / baseline 0 is "to_true"
    assert m["n"] == 161 and m["ci_method"] == "newcombe"
    assert m["p_value"] == pytest.approx(binomtest(6, 22, 0.5).pvalue)


def test_newcombe_interval_contains_the_estimate() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        first, second = paired_table(*rng.integers(0, 15, size=4))
        if first.size == 0:
            continue
        low, high = newcombe_paired_ci(first, second)
        estimate = first.mean() - second.mean()
        assert -1 <= low <= estimate <= high <= 1


@pytest.mark.parametrize(("to_true", "to_false"), [(6, 16), (0, 5), (7, 7), (1, 0), (30, 12)])
def test_mcnemar_exact_by_hand(to_true: int, to_false: int) -> None:
    # two-sided exact binomial: 2 * P(X <= min(b, c)) under Binomial(b + c, 1/2), capped at 1
    n, k = to_true + to_false, min(to_true, to_false)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    assert mcnemar_exact(to_true, to_false) == pytest.approx(min(1.0, 2 * tail))


def test_mcnemar_without_discordant_pairs_is_one() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert binary_metric([1, 1, 0], [1, 1, 0])["p_value"] == 1.0


def test_pairs_with_a_missing_side_are_excluded() -> None:
    baseline = pd.array([True, False, None, True, False], dtype="boolean")
    candidate = pd.Series([True, True, True, None, np.nan], dtype=object)
    m = binary_metric(baseline, candidate)
    assert m["n"] == 2
    assert (m["baseline"], m["candidate"]) == (0.5, 1.0)
    assert m["flips"] == {"to_true": 1, "to_false": 0}


@pytest.mark.parametrize("metric", [binary_metric, continuous_metric])
def test_no_usable_pair_is_none_not_zero(metric) -> None:
    assert metric([], []) is None
    assert metric([None, 1.0], [0.0, None]) is None
    assert single_metric([None, np.nan]) is None


def test_binary_values_must_be_rates() -> None:
    with pytest.raises(ValueError):
        binary_metric([0, 2], [1, 1])


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError):
        continuous_metric([1.0, 2.0], [1.0])


# ---- continuous ------------------------------------------------------------------------------------

def test_continuous_metric_shape_and_values() -> None:
    baseline = [10.0, 12.0, 14.0, None, 100.0]
    candidate = [11.0, 15.0, 14.0, 3.0, 104.0]
    m = continuous_metric(baseline, candidate)
    assert m["n"] == 4
    assert m["baseline"] == pytest.approx(34.0) and m["candidate"] == pytest.approx(36.0)
    assert m["delta"] == pytest.approx(2.0)
    assert (m["baseline_median"], m["candidate_median"]) == (13.0, 14.5)
    assert m["ci_low"] <= m["delta"] <= m["ci_high"]
    assert "flips" not in m
    assert continuous_metric(baseline, candidate) == m  # seeded: same inputs, same CI


def test_bootstrap_covers_the_true_difference() -> None:
    # 200 seeded studies of 60 skewed paired differences (true mean 0.5): the 95% percentile
    # bootstrap should cover the truth in roughly 95% of them.
    rng = np.random.default_rng(2024)
    covered = 0
    for study in range(200):
        baseline = rng.exponential(1.0, size=60)
        candidate = baseline + rng.exponential(0.5, size=60)
        low, high = bootstrap_mean_ci(candidate - baseline, seed=study)
        covered += low <= 0.5 <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_bootstrap_handles_more_resamples_than_a_chunk() -> None:
    values = np.random.default_rng(0).normal(size=50_000)  # 80 resamples per chunk: 25 chunks
    low, high = bootstrap_mean_ci(values)
    se = values.std() / np.sqrt(values.size)
    assert low == pytest.approx(values.mean() - 1.96 * se, abs=0.2 * se)
    assert high == pytest.approx(values.mean() + 1.96 * se, abs=0.2 * se)


def test_wilcoxon_known_value() -> None:
    # Darwin's Zea mays height differences (Fisher 1935), the scipy.stats.wilcoxon documentation
    # example: exact two-sided p = 0.04125976562499978.
    d = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75])
    assert wilcoxon_p(d) == pytest.approx(0.04125976562499978, rel=1e-12)


def test_wilcoxon_edge_cases() -> None:
    assert wilcoxon_p(np.zeros(5)) == 1.0
    assert wilcoxon_p(np.array([])) is None
    assert continuous_metric([1.0, 2.0], [1.0, 2.0])["p_value"] == 1.0


# ---- single-sample (similarity) --------------------------------------------------------------------

def test_single_metric_has_a_mean_and_no_delta() -> None:
    m = single_metric(pd.Series([0.9, 1.0, None, 0.8], dtype="Float64"))
    assert m["n"] == 3 and m["mean"] == pytest.approx(0.9) and m["median"] == pytest.approx(0.9)
    assert m["delta"] is None and m["p_value"] is None
    assert m["ci_low"] <= 0.9 <= m["ci_high"]


# ---- multiple comparisons --------------------------------------------------------------------------

def test_holm_known_values() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03; 2 x 0.03 = 0.06; max(0.06, 1 x 0.04) = 0.06
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03, "none": None}) == {
        "a": pytest.approx(0.03), "b": pytest.approx(0.06), "c": pytest.approx(0.06), "none": None}
    assert holm({"a": 0.5, "b": 0.9}) == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}


def test_with_holm_adds_adjusted_p_values() -> None:
    metrics = {"accuracy": binary_metric([1] * 8 + [0], [0] * 9),  # 8 discordant: can reach 0.05
               "latency": continuous_metric([1.0, 2.0, 3.0], [2.0, 3.0, 5.0]),
               "similarity": single_metric([0.5, 0.7]), "empty": None}
    adjusted = with_holm(metrics)
    assert adjusted["empty"] is None
    assert adjusted["similarity"]["p_value_adj"] is None
    expected = holm({"a": metrics["accuracy"]["p_value"], "l": metrics["latency"]["p_value"]})
    assert adjusted["accuracy"]["p_value_adj"] == pytest.approx(expected["a"])
    assert adjusted["latency"]["p_value_adj"] == pytest.approx(expected["l"])
    assert "p_value_adj" not in metrics["accuracy"]  # inputs are not modified


# ---- repeats ---------------------------------------------------------------------------------------

def test_aggregate_repeats_fractions_means_and_firsts() -> None:
    frame = pd.DataFrame({
        "case_id": [1, 1, 1, 2, 2, 2, 3, 3, 3],
        "b_match": pd.array([True, True, False, False, False, True, None, None, None], dtype="boolean"),
        "c_match": pd.array([True, True, True, True, False, None, True, False, True], dtype="boolean"),
        "b_latency_s": [1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 2.0, None, 4.0],
        "category": ["x"] * 3 + ["y"] * 3 + ["z"] * 3,
    })
    per_case = aggregate_repeats(frame)
    assert per_case["case_id"].tolist() == [1, 2, 3]
    assert per_case["b_match"][:2].tolist() == pytest.approx([2 / 3, 1 / 3])
    assert per_case["b_match"][2] is pd.NA
    assert per_case["c_match"].tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    assert per_case["b_latency_s"].tolist() == pytest.approx([2.0, 1.0, 3.0])
    assert per_case["category"].tolist() == ["x", "y", "z"]


def test_binary_metric_on_repeat_fractions() -> None:
    baseline = [1.0, 2 / 3, 0.0, 0.5, 1 / 3]
    candidate = [1.0, 1 / 3, 2 / 3, 1.0, 0.0]
    m = binary_metric(baseline, candidate)
    assert m["ci_method"] == "sign-flip" and m["n"] == 5
    assert m["baseline"] == pytest.approx(2.5 / 5) and m["candidate"] == pytest.approx(3 / 5)
    # majorities: case 2 true -> false, case 3 false -> true; case 4 is a baseline tie: left out
    assert m["flips"] == {"to_true": 1, "to_false": 1}
    assert m["p_value"] == 1.0
    assert m["ci_low"] <= m["delta"] <= m["ci_high"]


def test_large_n_uses_the_t_interval_and_agrees_with_the_bootstrap() -> None:
    from lib.review.stats import LARGE_N, bootstrap_mean_ci, mean_ci

    rng = np.random.default_rng(7)
    values = rng.exponential(2.0, size=LARGE_N * 5)  # skewed, as latencies are
    low, high, method = mean_ci(values)
    b_low, b_high = bootstrap_mean_ci(values)
    assert method == "t"
    assert abs(low - b_low) < 0.01 and abs(high - b_high) < 0.01
    assert mean_ci(values[:100])[2] == "bootstrap"


def test_holm_equals_statsmodels_on_random_p_values() -> None:
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    for size in (1, 2, 5, 17):
        p = rng.uniform(0, 0.2, size=size)
        ours = holm({str(i): float(v) for i, v in enumerate(p)})
        theirs = multipletests(p, method="holm")[1]
        assert [ours[str(i)] for i in range(size)] == pytest.approx(list(theirs))


def test_float_arrays_and_nullable_series_give_identical_metrics() -> None:
    # The report passes float arrays (NaN = missing) straight through; other callers pass Series.
    rng = np.random.default_rng(3)
    b = rng.normal(10, 2, 3000)
    c = b + rng.normal(0.1, 1, 3000)
    b[::17] = np.nan
    as_series = (pd.Series(b).astype("Float64"), pd.Series(c).astype("Float64"))
    assert continuous_metric(b, c) == continuous_metric(*as_series)
    flags_b, flags_c = (rng.random(3000) < 0.3).astype(float), (rng.random(3000) < 0.4).astype(float)
    flags_b[::13] = np.nan
    assert binary_metric(flags_b, flags_c) == binary_metric(pd.Series(flags_b).astype("Float64"),
                                                            pd.Series(flags_c).astype("Float64"))
    assert single_metric(c) == single_metric(pd.Series(c))
