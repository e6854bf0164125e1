"""What a policy can detect before it is locked, and the gate's sentence on an inconclusive criterion."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lib.data.golden import import_dataset
from lib.governance.detectability import (
    CaseCounts,
    aa_upper,
    assess,
    cases_needed,
    dataset_counts,
    smallest_rate_margin,
)
from lib.governance.gate import INCONCLUSIVE, PASS, judge_threshold
from lib.governance.policy import parse_policy
from lib.review.stats import binary_metric, newcombe_paired_ci

ROOT = Path(__file__).resolve().parent.parent


def _identical(n: int, rate: float) -> np.ndarray:
    k = round(rate * n)
    return np.r_[np.ones(k), np.zeros(n - k)]


@pytest.mark.parametrize(("n", "k"), [(120, 96), (120, 0), (120, 120), (37, 18), (1000, 3)])
def test_aa_upper_is_newcombes_interval_on_identical_outputs(n: int, k: int) -> None:
    x = np.r_[np.ones(k), np.zeros(n - k)]
    assert aa_upper(n, k, 0.05) == pytest.approx(newcombe_paired_ci(x, x, 0.05)[1], rel=1e-9)


def test_two_points_on_120_cases_can_never_pass_even_a_a() -> None:
    # the example: accuracy 80% on both sides, 120 identical pairs, max_decrease 0.02
    m = binary_metric(_identical(120, 0.8), _identical(120, 0.8))
    spec = parse_policy(b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    result = judge_threshold(spec.criteria[0], "max_decrease", m, {"alpha": 0.05})
    assert result.result == INCONCLUSIVE
    assert "can never pass, even with identical outputs" in result.reason
    assert smallest_rate_margin(120, 0.05, 0.8) > 0.02


def test_cases_needed_is_where_identical_outputs_start_to_pass() -> None:
    needed = cases_needed(0.02, 0.05, 0.8)
    spec = parse_policy(b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    for n, want in ((needed, PASS), (needed - 1, INCONCLUSIVE)):
        m = binary_metric(_identical(n, 0.8), _identical(n, 0.8))
        assert judge_threshold(spec.criteria[0], "max_decrease", m, {"alpha": 0.05}).result == want, n
    # unknown rate: the least favourable one, so at least as many cases
    assert cases_needed(0.02, 0.05) >= needed


def test_assess_counts_the_cases_each_criterion_applies_to() -> None:
    spec = parse_policy(b'[criteria.accuracy]\nmax_decrease = 0.02\n[criteria.refusal_rate]\nmax = 0.05\n'
                        b'[criteria.latency_s_mean]\nmax_increase = 0.5\n[criteria."json_valid_rate@api"]\n'
                        b'min = 0.9\n[criteria."judge_score:accuracy"]\nmax_decrease = 0.2\n')
    counts = CaseCounts(n=400, with_expected=120, with_schema=0, by_category={"api": (50, 0, 0)})
    accuracy, refusal, latency, json_api, judge = assess(spec, counts)
    assert (accuracy.n, accuracy.can_pass) == (120, False) and "120 cases" in accuracy.sentence
    assert accuracy.cases_needed == cases_needed(0.02, 0.05)
    assert refusal.n == 400 and "at most" in refusal.sentence
    assert latency.can_pass is True and "any margin can pass" in latency.sentence
    assert json_api.n == 0 and json_api.can_pass is False
    assert judge.can_pass is None and "not estimated" in judge.sentence


def _dataset(engine) -> None:
    rows = ["id,input,expected,category"] + [f"q{i},Question {i}?,{'yes' if i < 30 else ''},{'a' if i < 40 else 'b'}"
                                             for i in range(60)]
    import_dataset(engine, "\n".join(rows).encode(), "gold.csv", "gold")


def test_dataset_counts(engine) -> None:
    _dataset(engine)
    counts = dataset_counts(engine, "gold")
    assert (counts.n, counts.with_expected, counts.with_schema) == (60, 30, 0)
    assert counts.by_category == {"a": (40, 30, 0), "b": (20, 0, 0)}


@pytest.mark.slow
def test_policy_create_prints_what_it_can_detect(engine, db_url: str, tmp_path: Path) -> None:
    _dataset(engine)
    policy = tmp_path / "p.toml"
    policy.write_text("[criteria.accuracy]\nmax_decrease = 0.02\n")
    env = {**os.environ, "DATABASE_URL": db_url}
    out = subprocess.run([sys.executable, "-m", "lib", "policy", "create", "--name", "p", "--file", str(policy),
                          "--dataset", "gold"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "What this policy can detect on dataset gold (60 cases)" in out.stdout
    assert "CANNOT PASS accuracy max_decrease 0.02: on 30 cases" in out.stdout
    assert "Locked policy p v1" in out.stdout


def test_policy_page_shows_it_before_locking(engine) -> None:
    _dataset(engine)
    at = AppTest.from_file(str(ROOT / "pages/policy.py"), default_timeout=60).run()
    at.selectbox(key="policy_row_0_metric").set_value("accuracy")
    at.selectbox(key="policy_row_0_key").set_value("max_decrease")
    at.number_input(key="policy_row_0_value").set_value(0.02).run()
    assert not at.exception, at.exception
    assert any("can never pass" in w.value and "30 cases" in w.value for w in at.warning)


def test_gate_says_which_rate_a_level_threshold_needs() -> None:
    m = binary_metric(_identical(60, 0.05), _identical(60, 0.05))
    m["candidate_ci"] = [0.01, 0.14]  # as the report gives it (Wilson)
    spec = parse_policy(b"[criteria.refusal_rate]\nmax = 0.1\n")
    result = judge_threshold(spec.criteria[0], "max", m, {"alpha": 0.05})
    assert result.result == INCONCLUSIVE
    assert "on 60 cases it passes only if the candidate's rate is at most" in result.reason
