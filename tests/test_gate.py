"""Verdict rules on report dicts, and post-hoc marking against the store."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from lib.governance.gate import (
    FAIL,
    GO,
    INCONCLUSIVE,
    NO_GO,
    PASS,
    build_verdict,
    candidate_started_at,
    evaluate,
    overall,
)
from lib.governance.policy import KNOWN_METRICS, create_policy, get_policy, parse_policy
from lib.review.comparisons import get_comparison
from lib.store.columns import utcnow
from tests.gov_helpers import make_comparison, pairs


def metric(baseline: float, candidate: float, lo: float, hi: float, n: int = 200,
           cand_ci: tuple[float, float] | None = None) -> dict:
    m = {"baseline": baseline, "candidate": candidate, "delta": candidate - baseline, "ci_low": lo,
         "ci_high": hi, "p_value": 0.5, "n": n, "flips": {"to_true": 0, "to_false": 0}}
    if cand_ci:
        m["candidate_ci"] = list(cand_ci)
    return m


def report(metrics: dict, by_category: dict | None = None) -> dict:
    return {"comparison": "c", "n_pairs": 200, "metrics": metrics, "by_category": by_category or {}}


def judge(policy_toml: str, rep: dict) -> list:
    return evaluate(parse_policy(policy_toml), rep)


@pytest.mark.parametrize("lo, hi, expected", [(0.03, 0.08, FAIL), (-0.01, 0.01, PASS), (0.0, 0.05, INCONCLUSIVE),
                                              (-0.01, 0.02, PASS)])  # the margin itself is allowed
def test_max_increase_on_the_delta_ci(lo: float, hi: float, expected: str) -> None:
    [r] = judge("[criteria.refusal_rate]\nmax_increase = 0.02\n", report({"refusal_rate": metric(0.1, 0.12, lo, hi)}))
    assert r.result == expected and r.ci == (lo, hi) and r.observed == pytest.approx(0.02)


@pytest.mark.parametrize("lo, hi, expected", [(-0.1, -0.05, FAIL), (-0.01, 0.02, PASS), (-0.05, 0.01, INCONCLUSIVE)])
def test_max_decrease_is_non_inferiority_on_the_delta_ci(lo: float, hi: float, expected: str) -> None:
    [r] = judge("[criteria.accuracy]\nmax_decrease = 0.02\n", report({"accuracy": metric(0.9, 0.88, lo, hi)}))
    assert r.result == expected and r.margin == 0.02


@pytest.mark.parametrize("cand_ci, expected",
                         [((0.80, 0.88), FAIL), ((0.92, 0.97), PASS), ((0.85, 0.95), INCONCLUSIVE)])
def test_min_uses_the_candidates_interval(cand_ci: tuple, expected: str) -> None:
    m = metric(0.99, 0.9, -0.2, 0.1, cand_ci=cand_ci)
    [r] = judge("[criteria.json_valid_rate]\nmin = 0.9\n", report({"json_valid_rate": m}))
    assert r.result == expected and r.ci == cand_ci and r.observed == 0.9


@pytest.mark.parametrize("cand_ci, expected",
                         [((0.15, 0.30), FAIL), ((0.01, 0.05), PASS), ((0.05, 0.15), INCONCLUSIVE)])
def test_max_uses_the_candidates_interval(cand_ci: tuple, expected: str) -> None:
    m = metric(0.1, 0.1, -0.1, 0.1, cand_ci=cand_ci)
    [r] = judge("[criteria.refusal_rate]\nmax = 0.1\n", report({"refusal_rate": m}))
    assert r.result == expected


def test_value_metric_without_interval_is_judged_on_its_value() -> None:
    rep = report({"latency_s_mean": metric(1.0, 2.5, 1.2, 1.8), "cost_usd_total": metric(1.0, 0.5, -0.6, -0.4)})
    fail, ok = judge("[criteria.latency_s_mean]\nmax = 2.0\n[criteria.cost_usd_total]\nmax = 1.0\n", rep)
    assert (fail.result, ok.result) == (FAIL, PASS) and "judged on the candidate's value" in fail.reason


@pytest.mark.parametrize("lo, hi, expected", [(0.9, 0.95, PASS), (0.6, 0.75, FAIL), (0.75, 0.85, INCONCLUSIVE)])
def test_similarity_min_uses_the_ci_of_its_mean(lo: float, hi: float, expected: str) -> None:
    mean = (lo + hi) / 2  # lib.review.report's shape: one value per pair, the candidate's value is the mean
    m = {"baseline": None, "candidate": mean, "delta": None, "mean": mean, "ci_low": lo, "ci_high": hi,
         "candidate_ci": [lo, hi], "p_value": None, "n": 50}
    [r] = judge("[criteria.similarity]\nmin = 0.8\n", report({"similarity": m}))
    assert r.result == expected and r.observed == mean and r.ci == (lo, hi)


def test_missing_metric_and_missing_drift_are_inconclusive_with_reason() -> None:
    acc, drift = judge("[criteria.json_valid_rate]\nmin = 0.9\n[criteria.drift]\nmax = 0.1\n",
                       report({"json_valid_rate": None}))
    assert acc.result == drift.result == INCONCLUSIVE
    assert "no applicable cases for json_valid_rate" in acc.reason
    assert "drift analysis has not been run" in drift.reason


@pytest.mark.parametrize("share, expected", [(0.1, PASS), (0.5, FAIL)])
def test_drift_result_when_present_is_judged_on_the_drifted_share(share: float, expected: str) -> None:
    rep = {**report({}), "drift": {"drifted_share": share, "columns": {}, "digest": "d"}}
    [r] = judge("[criteria.drift]\nmax = 0.3\n", rep)
    assert r.result == expected and r.observed == share


def test_per_category_criteria_read_by_category() -> None:
    rep = report({"accuracy": metric(0.9, 0.9, -0.01, 0.01)},
                 {"math": {"accuracy": metric(0.9, 0.6, -0.4, -0.2)}})
    math, geo = judge('[criteria."accuracy@math"]\nmax_decrease = 0.05\n'
                      '[criteria."accuracy@geo"]\nmax_decrease = 0.05\n', rep)
    assert math.result == FAIL and geo.result == INCONCLUSIVE and "category 'geo'" in geo.reason


def test_several_thresholds_on_one_criterion_are_each_judged() -> None:
    m = metric(0.95, 0.94, -0.03, 0.01, cand_ci=(0.92, 0.96))
    results = judge("[criteria.accuracy]\nmax_decrease = 0.05\nmin = 0.93\n", report({"accuracy": m}))
    assert [(r.threshold, r.result) for r in results] == [("max_decrease", PASS), ("min", INCONCLUSIVE)]


def test_overall_and_blocking_false() -> None:
    rep = report({"accuracy": metric(0.9, 0.5, -0.5, -0.3), "refusal_rate": metric(0.1, 0.1, -0.01, 0.01),
                  "json_valid_rate": metric(0.9, 0.9, -0.1, 0.1, cand_ci=(0.85, 0.95))})
    nonblocking_fail = judge("[criteria.accuracy]\nmax_decrease = 0.02\nblocking = false\n"
                             "[criteria.refusal_rate]\nmax_increase = 0.02\n", rep)
    assert [r.result for r in nonblocking_fail] == [FAIL, PASS] and overall(nonblocking_fail) == GO
    assert overall(judge("[criteria.accuracy]\nmax_decrease = 0.02\n[criteria.json_valid_rate]\nmin = 0.9\n",
                         rep)) == NO_GO
    assert overall(judge("[criteria.json_valid_rate]\nmin = 0.9\n[criteria.refusal_rate]\nmax_increase = 0.02\n",
                         rep)) == INCONCLUSIVE
    assert overall(judge("[criteria.json_valid_rate]\nmin = 0.9\nblocking = false\n"
                         "[criteria.refusal_rate]\nmax_increase = 0.02\n", rep)) == GO


def test_report_and_policy_must_share_alpha() -> None:
    rep = {**report({"accuracy": metric(0.9, 0.9, -0.01, 0.01)}), "alpha": 0.05}
    assert judge("alpha = 0.05\n[criteria.accuracy]\nmax_decrease = 0.02\n", rep)[0].result == PASS
    with pytest.raises(ValueError, match="alpha"):
        judge("alpha = 0.1\n[criteria.accuracy]\nmax_decrease = 0.02\n", rep)


def test_every_report_metric_is_a_known_criterion() -> None:
    from lib.review.report import BINARY_METRICS, CONTINUOUS_METRICS

    assert set(BINARY_METRICS) | set(CONTINUOUS_METRICS) | {"similarity"} <= set(KNOWN_METRICS)


def _verdict_at(engine, policy_toml: bytes, outputs_offset: timedelta, live: bool):
    make_comparison(engine, "cmp", pairs(20), live=live, outputs_at=utcnow() + outputs_offset)
    create_policy(engine, "p", policy_toml)
    with Session(engine) as s:
        comp = get_comparison(s, "cmp")
        started = candidate_started_at(s, comp)
        return build_verdict("cmp", get_policy(s, "p"), report({}), started), started


@pytest.mark.parametrize("live", [True, False])
def test_post_hoc_when_policy_locked_after_first_candidate_output(engine, live: bool) -> None:
    verdict, started = _verdict_at(engine, b"[criteria.accuracy]\nmin = 0.5\n", -timedelta(hours=1), live)
    assert verdict.post_hoc is True and verdict.to_dict()["post_hoc"] is True
    assert verdict.candidate_first_output_at == started.isoformat()
    assert verdict.verdict == INCONCLUSIVE and verdict.policy_name == "p" and verdict.policy_version == 1


def test_not_post_hoc_when_policy_locked_before(engine) -> None:
    verdict, _ = _verdict_at(engine, b"[criteria.accuracy]\nmin = 0.5\n", timedelta(hours=1), True)
    assert verdict.post_hoc is False
    assert len(verdict.policy_hash) == 64 and verdict.to_dict()["ci_level"] == pytest.approx(0.95)


def judge_report(dims: dict | None = None, pairwise: dict | None = None, drift: dict | None = None) -> dict:
    block = {"config": {"rubric": ["accuracy", "safety"]}, "dimensions": dims or {}, "pairwise": pairwise,
             "drift": drift or {"status": "stable", "flagged": False}}
    return {**report({}), "judge": block}


def rate(count: int, n: int, lo: float, hi: float) -> dict:
    return {"count": count, "rate": count / n, "ci_low": lo, "ci_high": hi, "n": n}


def test_judge_score_criteria_use_the_delta_ci_and_the_candidates_own_interval() -> None:
    accuracy = {**metric(4.5, 3.9, -0.8, -0.4, n=50), "candidate_ci": [3.7, 4.1]}
    rep = judge_report({"accuracy": accuracy, "safety": metric(4.9, 4.9, -0.1, 0.1, n=50)})
    acc_delta, acc_min, safety = judge('[criteria."judge_score:accuracy"]\nmax_decrease = 0.3\nmin = 3.5\n'
                                       '[criteria."judge_score:safety"]\nmax_decrease = 0.3\n', rep)
    assert (acc_delta.result, acc_delta.ci, acc_delta.n) == (FAIL, (-0.8, -0.4), 50)
    assert (acc_min.result, acc_min.ci) == (PASS, (3.7, 4.1))
    assert safety.result == PASS


def test_pairwise_rates_are_judged_on_their_wilson_intervals() -> None:
    rep = judge_report(pairwise={"win": rate(10, 40, 0.14, 0.40), "loss": rate(25, 40, 0.47, 0.76),
                                 "tie": rate(5, 40, 0.05, 0.26), "position_consistency": rate(36, 40, 0.77, 0.96)})
    win, loss, consistency = judge("[criteria.judge_win_rate]\nmin = 0.1\n[criteria.judge_loss_rate]\nmax = 0.4\n"
                                   "[criteria.judge_position_consistency]\nmin = 0.8\n", rep)
    assert (win.result, win.observed, win.n) == (PASS, 0.25, 40)
    assert (loss.result, loss.ci) == (FAIL, (0.47, 0.76))
    assert consistency.result == INCONCLUSIVE


def test_judge_criteria_without_judge_results_are_inconclusive_and_say_why() -> None:
    no_judge = judge('[criteria."judge_score:accuracy"]\nmax_decrease = 0.3\n[criteria.judge_win_rate]\nmin = 0.1\n',
                     report({}))
    assert [r.result for r in no_judge] == [INCONCLUSIVE, INCONCLUSIVE]
    assert all("no judge results" in r.reason and "./review judge" in r.reason for r in no_judge)
    tone, win = judge('[criteria."judge_score:tone"]\nmax_decrease = 0.3\n[criteria.judge_win_rate]\nmin = 0.1\n',
                      judge_report({"accuracy": metric(4, 4, 0, 0)}))
    assert "no pair on 'tone'" in tone.reason and "accuracy, safety" in tone.reason
    assert "--pairwise" in win.reason


def test_a_drifted_judge_is_noted_in_the_verdict(engine) -> None:
    make_comparison(engine, "cmp", pairs(20))
    create_policy(engine, "p", b'[criteria."judge_score:accuracy"]\nmax_decrease = 0.3\n')
    rep = judge_report({"accuracy": metric(4, 4, -0.1, 0.1)},
                       drift={"status": "drifted", "flagged": True, "message": "anchor scores moved by 0.9"})
    with Session(engine) as s:
        verdict = build_verdict("cmp", get_policy(s, "p"), rep, None)
    assert verdict.verdict == GO and any("judge drift" in n and "moved by 0.9" in n for n in verdict.notes)
    steady = build_verdict("cmp", get_policy(Session(engine), "p"), judge_report({"accuracy": metric(4, 4, -0.1, 0.1)}),
                           None)
    assert steady.notes == []
