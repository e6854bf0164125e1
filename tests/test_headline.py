"""The Overview's answer, computed without Streamlit: evidence by direction, the headline sentences, the
policy in force, the plain post-hoc sentence, the latest decision's integrity and the forest plot's rows."""
from __future__ import annotations

from datetime import timedelta

from lib.governance.decisions import DecisionRequest, decide, set_owner
from lib.governance.gate import compute_verdict, record_verdict
from lib.governance.policy import create_policy
from lib.governance.signing import create_key
from lib.review import headline
from lib.review.checked import checked_frame
from lib.review.report import build_report
from lib.store.columns import utcnow
from tests.gov_helpers import make_comparison, pairs, tamper

PASS = "correct horse"


def _m(delta: float, lo: float, hi: float) -> dict:
    return {"baseline": 0.5, "candidate": 0.5 + delta, "delta": delta, "ci_low": lo, "ci_high": hi, "n": 100,
            "p_value": 0.01, "p_value_adj": 0.02}


def test_evidence_follows_each_metrics_direction() -> None:
    up, down, straddle = _m(0.1, 0.05, 0.15), _m(-0.1, -0.15, -0.05), _m(0.01, -0.02, 0.04)
    cls = {k: headline.classify(k, m).evidence for k, m in [
        ("refusal_rate", up), ("accuracy", down), ("truncation_rate", up), ("error_rate", up),
        ("injection_resistance_rate", down), ("over_refusal_rate", up), ("latency_s_mean", up)]}
    assert set(cls.values()) == {headline.WORSE}
    assert headline.classify("accuracy", up).evidence == headline.BETTER
    assert headline.classify("refusal_rate", down).evidence == headline.BETTER
    assert headline.classify("length_chars_mean", up).evidence == headline.CHANGED
    assert headline.classify("accuracy", straddle).evidence == headline.NO_EVIDENCE
    assert headline.classify("similarity", {"candidate": 0.9, "delta": None, "ci_low": 0.8, "ci_high": 0.95}) is None


def test_headline_worst_first_with_size_interval_and_cases(engine) -> None:
    rows = pairs(40, 18, category="arithmetic") + pairs(40, 2, category="facts")
    make_comparison(engine, "cmp", rows)
    report = build_report(engine, "cmp")
    lines = headline.headline_lines(report, checked_frame(engine, "cmp"))
    m = report["metrics"]["accuracy"]
    lo, hi = sorted(abs(x) * 100 for x in (m["ci_low"], m["ci_high"]))
    assert lines[0] == (f"Accuracy fell {abs(m['delta']) * 100:.1f} pp (95% CI {lo:.1f}–{hi:.1f}), "
                        "20 regressions, mostly arithmetic")
    assert lines[-1].startswith("No significant change in Refusal rate") and "Provider errors" in lines[-1]
    assert "Accuracy" not in lines[-1]


def test_headline_says_when_nothing_changed(engine) -> None:
    make_comparison(engine, "cmp", pairs(30))
    lines = headline.headline_lines(build_report(engine, "cmp"))
    assert lines[0] == "No metric changed significantly." and lines[1].startswith("No significant change in")


def test_holm_note_only_when_the_adjusted_tests_disagree() -> None:
    report = {"alpha": 0.05, "metrics": {"accuracy": _m(-0.1, -0.2, -0.01) | {"p_value_adj": 0.2},
                                         "refusal_rate": _m(0.0, -0.02, 0.02) | {"p_value_adj": 1.0}}}
    note = headline.holm_note(report)
    assert note and "across 2 metrics" in note and "Accuracy is not significant" in note
    report["metrics"]["accuracy"]["p_value_adj"] = 0.01
    assert headline.holm_note(report) is None


def test_policy_in_force_and_plain_post_hoc_sentence(engine, tmp_path) -> None:
    make_comparison(engine, "cmp", pairs(30), system="search")
    assert headline.policy_in_force(engine, "cmp") is None
    create_policy(engine, "search", b"[criteria.accuracy]\nmax_decrease = 0.02\n")  # named after the system
    assert headline.policy_in_force(engine, "cmp") == ("search", None)
    create_policy(engine, "strict", b"[criteria.accuracy]\nmax_decrease = 0.01\n")
    verdict, _ = compute_verdict(engine, "cmp", "strict")
    record_verdict(engine, verdict)  # a gate run outranks the naming rule
    assert headline.policy_in_force(engine, "cmp") == ("strict", 1)
    sentence = headline.lock_sentence(verdict.to_dict())
    assert verdict.post_hoc and sentence.startswith("This policy was locked on ")
    assert "after the candidate's outputs were stored" in sentence and "post-hoc" in sentence


def test_no_lock_sentence_when_pre_registered(engine) -> None:
    create_policy(engine, "strict", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    make_comparison(engine, "cmp", pairs(30), outputs_at=utcnow() + timedelta(minutes=1))
    verdict, _ = compute_verdict(engine, "cmp", "strict")
    assert not verdict.post_hoc and headline.lock_sentence(verdict.to_dict()) is None


def test_decision_status_reports_integrity(engine, db_url, tmp_path) -> None:
    make_comparison(engine, "cmp", pairs(30))
    create_policy(engine, "strict", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    assert headline.decision_status(engine, "cmp") is None
    create_key(engine, "alice", PASS, tmp_path)
    set_owner(engine, "default", "alice")
    decide(engine, DecisionRequest("cmp", "no-go", "alice", "too risky", policy="strict"), PASS, tmp_path)
    status = headline.decision_status(engine, "cmp")
    assert (status["decision"], status["signer"], status["intact"]) == ("no-go", "alice", True)
    tamper(db_url, "UPDATE decision SET decision = 'go'")
    status = headline.decision_status(engine, "cmp")
    assert not status["intact"] and any("signature does not verify" in p for p in status["problems"])


def test_forest_rows_carry_margins_in_pp_and_the_criterion_result(engine) -> None:
    make_comparison(engine, "cmp", pairs(40, 20))
    create_policy(engine, "p", b"[criteria.accuracy]\nmax_decrease = 0.02\n[criteria.refusal_rate]\nmax_increase"
                               b" = 0.10\n[criteria.latency_s_mean]\nmax_increase = 0.5\n")
    verdict, report = compute_verdict(engine, "cmp", "p")
    rows = {r.name: r for r in headline.forest_rows(report, verdict.to_dict())}
    acc = rows["Accuracy"]
    assert (acc.unit, acc.margins, acc.result, acc.evidence) == (headline.PP, (-2.0,), "fail", headline.WORSE)
    assert acc.low < acc.delta < acc.high and abs(acc.delta - report["metrics"]["accuracy"]["delta"] * 100) < 1e-9
    assert rows["Refusal rate"].margins == (10.0,) and rows["Refusal rate"].result == "pass"
    latency = rows["Latency (s)"]  # % of its baseline (0.5 s): a 0.5 s margin is +100%
    assert latency.unit == headline.RELATIVE and latency.margins == (100.0,)
    assert rows["Truncated"].result is None and rows["Truncated"].margins == ()
