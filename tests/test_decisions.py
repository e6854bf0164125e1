"""Signed decisions end to end through lib/review/report.py: gate exit codes, decide/verify/export, drift,
tampering, concurrent reviewers. CLI calls are few: each pays the CLI's start-up."""
from __future__ import annotations

import json
import multiprocessing
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from lib.governance.decisions import DecisionRequest, add_comment, decide, set_owner, signed_message
from lib.governance.entities import Decision, ReviewComment, SigningKey
from lib.governance.export import change_record
from lib.governance.gate import compute_verdict
from lib.governance.policy import create_policy
from lib.governance.signing import create_key, verify_signature
from lib.governance.verify import verify_store
from lib.store.columns import utcnow
from lib.store.entities import AuditEvent, Output
from tests.gov_helpers import cli, concurrent_worker, make_comparison, pairs, perturb_sql, tamper

POLICY = ("alpha = 0.05\n[criteria.accuracy]\nmax_decrease = 0.02\n"
          "[criteria.json_valid_rate]\nmin = 0.9\nblocking = false\n")
PASSPHRASE = "correct horse"  # what tests.gov_helpers.cli sets as REVIEW_PASSPHRASE


@pytest.fixture
def keys(engine, tmp_path) -> Path:
    """A locked policy, alice's key and alice owning `default`; returns the key directory."""
    create_policy(engine, "strict", POLICY)
    create_key(engine, "alice", PASSPHRASE, tmp_path / "keys")
    set_owner(engine, "default", "alice")
    return tmp_path / "keys"


def _later() -> dict:
    return {"outputs_at": utcnow() + timedelta(minutes=1)}  # outputs after the policy: pre-registered


def _count(engine, model, *where) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model).where(*where)).one()


@pytest.mark.slow
def test_gate_exit_codes_and_json(engine, db_url, keys) -> None:
    cases = {"go": (pairs(300), 0, 0.0),                             # identical and right: CI within ±0.013
             "no-go": (pairs(100, n_worse=100), 1, -0.5),             # half the answers break
             "inconclusive": (pairs(12, n_worse=2, n_better=1), 3, -1 / 15)}  # too few cases to tell
    for verdict, (rows, code, delta) in cases.items():
        make_comparison(engine, verdict, rows, **_later())
        done = cli(db_url, keys, "gate", verdict, "--policy", "strict", "--json")
        assert done.returncode == code, done.stdout + done.stderr
        data = json.loads(done.stdout)
        assert data["verdict"] == verdict and data["post_hoc"] is False and data["n"] == len(rows)
        assert (data["policy_name"], data["policy_version"], len(data["policy_hash"])) == ("strict", 1, 64)
        acc, json_valid = data["criteria"]
        assert (acc["criterion"], acc["threshold"], acc["margin"]) == ("accuracy", "max_decrease", 0.02)
        assert acc["observed"] == pytest.approx(delta)
        assert len(acc["ci"]) == 2 and acc["result"] == {"go": "pass", "no-go": "fail"}.get(verdict, "inconclusive")
        assert json_valid["result"] == "inconclusive" and not json_valid["blocking"]  # no JSON cases here
        assert "no applicable cases" in json_valid["reason"]
    human = cli(db_url, keys, "gate", "no-go", "--policy", "strict")
    assert human.returncode == 1 and "Verdict: NO-GO" in human.stdout and "accuracy" in human.stdout
    assert _count(engine, AuditEvent, AuditEvent.kind == "verdict_computed") == 4


@pytest.mark.slow
def test_gate_bad_input_exits_2(engine, db_url, keys) -> None:
    make_comparison(engine, "cmp", pairs(5))
    unknown_policy = cli(db_url, keys, "gate", "cmp", "--policy", "nope")
    assert unknown_policy.returncode == 2 and unknown_policy.stderr.startswith("error: no policy 'nope'")
    assert cli(db_url, keys, "gate", "nope", "--policy", "strict").returncode == 2


@pytest.mark.slow
def test_decide_verify_export_round_trip(engine, db_url, keys) -> None:
    make_comparison(engine, "cmp", pairs(300), **_later())
    assert cli(db_url, keys, "gate", "cmp", "--policy", "strict").returncode == 0
    conditions = "canary 5% for 48h; roll back if refusal_rate rises above 3%"
    done = cli(db_url, keys, "decide", "cmp", "--decision", "go", "--signer", "alice",  # policy: the last gate's
               "--rationale", "non-inferior on accuracy", "--conditions", conditions)
    assert done.returncode == 0, done.stderr
    add_comment(engine, "cmp", "bob", "agree")
    verified = cli(db_url, keys, "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("INTACT"), verified.stdout

    with Session(engine) as s:
        row = s.exec(select(Decision)).one()
        key = s.exec(select(SigningKey)).one()
    assert verify_signature(key.public_key, row.signature, signed_message(row.model_dump()))
    assert (row.decision, row.verdict, row.post_hoc, row.conditions, row.policy_name) == (
        "go", "go", False, conditions, "strict")
    assert json.loads(row.report_json)["metrics"]["accuracy"]["n"] == 300

    record = json.loads(cli(db_url, keys, "export", "cmp", "--format", "json").stdout)
    decision = record["decision"]
    assert (decision["signer"], decision["integrity"], decision["conditions"]) == ("alice", "intact", conditions)
    assert decision["key_fingerprint"] == key.fingerprint and decision["signature"] == row.signature
    assert record["post_hoc"] is False and record["policy"]["lock"] == "intact"
    assert record["policy"]["hash"] == row.policy_hash and record["verdict"]["verdict"] == "go"
    assert record["dataset"] == {"name": "cmp-golden", "version": 1, "n_cases": 300}
    assert record["candidate"]["system_fingerprint"] == "fp-candidate"
    assert record["candidate"]["served_model"] == "candidate-2025"
    assert record["comments"][0]["text"] == "agree" and record["owner"] == "alice"
    md = cli(db_url, keys, "export", "cmp", "--format", "md").stdout
    for expected in ("# Change record: cmp", key.fingerprint, row.signature, "Verdict: **GO**", "canary 5%",
                     "| candidate | acme/candidate-model | candidate-2025 | fp-candidate |", row.signed_at):
        assert expected in md
    assert "POST-HOC" not in md


@pytest.mark.slow
def test_post_hoc_decision_is_marked_in_record_and_export(engine, db_url, keys) -> None:
    make_comparison(engine, "cmp", pairs(50), outputs_at=utcnow() - timedelta(days=1))
    row = decide(engine, DecisionRequest("cmp", "no-go", "alice", "policy came late", policy="strict"),
                 PASSPHRASE, keys)
    assert row.post_hoc is True and json.loads(row.verdict_json)["post_hoc"] is True
    record = change_record(engine, "cmp")
    assert record["post_hoc"] is True and record["decision"]["post_hoc"] is True
    md = cli(db_url, keys, "export", "cmp", "--format", "md")
    assert md.returncode == 0 and "POST-HOC" in md.stdout


@pytest.mark.slow
def test_decide_without_policy_or_prior_gate_exits_2_and_bad_format(engine, db_url, keys) -> None:
    make_comparison(engine, "cmp", pairs(5))
    done = cli(db_url, keys, "decide", "cmp", "--decision", "go", "--signer", "alice", "--rationale", "x")
    assert done.returncode == 2 and "--policy" in done.stderr
    assert _count(engine, Decision) == 0
    assert cli(db_url, keys, "export", "cmp", "--format", "pdf").returncode == 2


def _store_drift(engine, comparison: str, share: float) -> None:
    from lib.drift.analysis import DriftOptions, store_drift
    from lib.drift.evidently_report import DriftRun

    store_drift(engine, comparison, DriftOptions(),
                DriftRun({"drifted_share": share, "columns": {"length": {"drifted": share > 0}}}, {}, "<html/>"))


def test_drift_criterion_uses_the_latest_stored_drift(engine, keys) -> None:
    create_policy(engine, "drift", "[criteria.drift]\nmax = 0.3\n")
    make_comparison(engine, "cmp", pairs(20), **_later())
    verdict, _ = compute_verdict(engine, "cmp", "drift")
    assert verdict.verdict == "inconclusive" and "drift analysis has not been run" in verdict.criteria[0].reason
    _store_drift(engine, "cmp", 0.5)
    verdict, report = compute_verdict(engine, "cmp", "drift")
    assert verdict.verdict == "no-go" and verdict.criteria[0].observed == 0.5 and report["drift"]["digest"]


def test_a_decision_cites_its_drift_result_and_verify_checks_it(engine, db_url, keys) -> None:
    make_comparison(engine, "cmp", pairs(20), **_later())
    _store_drift(engine, "cmp", 0.1)
    row = decide(engine, DecisionRequest("cmp", "go", "alice", "ok", policy="strict"), PASSPHRASE, keys)
    assert json.loads(row.report_json)["drift"]["drifted_share"] == 0.1
    assert verify_store(engine).ok
    tamper(db_url, "UPDATE driftresult SET summary_json = replace(summary_json, '0.1', '0.0')")
    assert any(p.record == "decision 1 (comparison 'cmp')" and "drift result" in p.message
               for p in verify_store(engine).problems)


# ---- tampering: every field of a decision, and every field of an output behind it ----

@pytest.fixture
def decided(engine, keys):
    make_comparison(engine, "cmp", pairs(30, n_worse=1), **_later())
    row = decide(engine, DecisionRequest("cmp", "go", "alice", "fine", "canary 10%", "strict"), PASSPHRASE, keys)
    assert verify_store(engine).ok
    return row


def _problems(engine) -> list[str]:
    return [str(p) for p in verify_store(engine).problems]


@pytest.mark.parametrize("column", list(Decision.__table__.columns.keys()))
def test_editing_any_decision_field_is_detected(engine, db_url, decided, column: str) -> None:
    assert tamper(db_url, perturb_sql("decision", column, "WHERE id = 1")) == 1
    names = _problems(engine)
    assert any(n.startswith("decision 1") for n in names), names


def test_deleting_a_decision_is_detected(engine, db_url, decided) -> None:
    tamper(db_url, "DELETE FROM decision WHERE id = 1")
    assert "decision 1: deleted (recorded by audit event seq 4)" in _problems(engine)


@pytest.mark.parametrize("column", list(Output.__table__.columns.keys()))
def test_editing_any_output_field_behind_a_decision_is_detected(engine, db_url, decided, column: str) -> None:
    assert tamper(db_url, perturb_sql("output", column, "WHERE id = (SELECT max(id) FROM output)")) == 1
    names = _problems(engine)
    assert any(n.startswith("decision 1 (comparison 'cmp'): evidence changed") for n in names), names


@pytest.mark.parametrize("sql", ["DELETE FROM output WHERE id = 1",
                                 "INSERT INTO output (run_id, case_id, repeat, attempts, created_at) "
                                 "VALUES (2, 1, 1, 1, '2030-01-01 00:00:00')",
                                 "UPDATE \"case\" SET expected = 'other' WHERE id = 1",
                                 "UPDATE modelconfig SET temperature = 1.0 WHERE id = 2"])
def test_deleting_or_adding_evidence_behind_a_decision_is_detected(engine, db_url, decided, sql: str) -> None:
    tamper(db_url, sql)
    assert any(n.startswith("decision 1 (comparison 'cmp'): evidence changed") for n in _problems(engine))


@pytest.mark.slow
def test_cli_verify_names_the_tampered_decision(engine, db_url, decided, keys) -> None:
    tamper(db_url, "UPDATE decision SET decision = 'no-go'")
    done = cli(db_url, keys, "verify")
    assert done.returncode == 1
    assert "broken: decision 1 (comparison 'cmp'): signature does not verify" in done.stdout


# ---- concurrency: reviewers in separate processes at the same moment ----

def test_concurrent_reviewers_lose_nothing_and_keep_the_chain(engine, db_url, keys) -> None:
    make_comparison(engine, "cmp", pairs(40), **_later())
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=concurrent_worker, args=(db_url, str(keys), w, 25, 5)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    result = verify_store(engine)
    assert result.ok, result.problems
    assert _count(engine, ReviewComment) == 4 * 20 and _count(engine, Decision) == 4 * 5
    with Session(engine) as s:
        seqs = s.exec(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
    assert seqs == list(range(1, 3 + 100 + 1))  # policy, key, owner, then every action
