"""Reviewer refusal labels (stored, audited, applied in every count) and the per-case export."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from lib.data.loaders import LoadMapping, load_recorded
from lib.review.checked import checked_frame
from lib.review.labels import LabelInputError, agreement, label_history, set_label
from lib.review.report import build_report
from lib.store.audit import check_chain, event_payload, list_events

ROOT = Path(__file__).resolve().parent.parent
REFUSAL = "I'm sorry, but I can't help with that request."
# A refusal the rule misses on purpose (a reviewer would label it) and an answer it would wrongly flag.
MISSED = "That is something our team does not do for anyone, whatever the reason."
RULE_WRONG = "I can't help with that request? Actually I can: run `kill -9 PID`."


def _csv() -> bytes:
    rows = [{"id": f"q{i}", "input": f"How do I stop process {i}?", "base": f"Run kill {i}.",
             "cand": REFUSAL if i < 4 else MISSED if i == 4 else RULE_WRONG if i == 5 else f"Use kill {i}.",
             "category": "ops"} for i in range(10)]
    rows.append({"id": "e0", "input": "Say nothing", "base": "   ", "cand": "ok", "category": "ops"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["id", "input", "base", "cand", "category"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


@pytest.fixture
def comparison(engine) -> str:
    mapping = LoadMapping(id_col="id", input_col="input", baseline_col="base", candidate_col="cand",
                          category_col="category")
    load_recorded(engine, _csv(), "ops.csv", "ops", "wide", mapping)
    return "ops"


def _candidate_output(engine, case_key: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(
            'SELECT o.id FROM output o JOIN "case" c ON c.id = o.case_id JOIN comparison m '
            "ON m.candidate_run_id = o.run_id WHERE c.case_key = :k"), {"k": case_key}).scalar_one()


def test_labels_override_the_rule_in_the_report_and_are_audited(engine, comparison: str) -> None:
    before = build_report(engine, comparison)
    assert before["labelled_outputs"] == 0
    assert before["metrics"]["refusal_rate"]["candidate"] == pytest.approx(5 / 11)  # 4 refusals + RULE_WRONG
    set_label(engine, _candidate_output(engine, "q4"), True, "ana")
    set_label(engine, _candidate_output(engine, "q5"), False, "ana")
    after = build_report(engine, comparison)
    assert after["labelled_outputs"] == 2
    assert after["metrics"]["refusal_rate"]["candidate"] == pytest.approx(5 / 11)  # +1 -1
    assert after["metrics"]["refusal_rate"]["flips"]["to_true"] == 5
    frame = checked_frame(engine, comparison)
    q4 = frame[frame["case_key"] == "q4"].iloc[0]
    assert bool(q4["c_refused"]) and not bool(q4["c_refused_rule"]) and q4["c_refused_source"] == "label"
    # the agreement panel: the rule said yes once (q5, wrong) and no once (q4, wrong)
    assert agreement(frame) == {"n": 2, "labelled_refusals": 1, "rule_refusals": 1, "precision": 0.0,
                                "recall": 0.0, "agreement": 0.0}
    with engine.connect() as conn:
        events = [event_payload(e) | {"actor": e["actor"]} for e in list_events(conn, "refusal_labelled")]
        assert not check_chain(conn)
    assert [(e["refused"], e["actor"]) for e in events] == [(True, "ana"), (False, "ana")]


def test_latest_label_wins_and_clearing_restores_the_rule(engine, comparison: str) -> None:
    output = _candidate_output(engine, "q4")
    set_label(engine, output, True, "ana")
    set_label(engine, output, False, "bo")
    assert [h["by"] for h in label_history(engine, output)] == ["ana", "bo"]
    frame = checked_frame(engine, comparison)
    assert not bool(frame[frame["case_key"] == "q4"].iloc[0]["c_refused"])
    set_label(engine, output, None, "bo")
    frame = checked_frame(engine, comparison)
    assert frame[frame["case_key"] == "q4"].iloc[0]["c_refused_source"] == "rule"
    assert build_report(engine, comparison)["labelled_outputs"] == 0


def test_bad_labels_are_named_input_errors(engine, comparison: str) -> None:
    with pytest.raises(LabelInputError, match="no output with id 99999"):
        set_label(engine, 99999, True, "ana")
    with pytest.raises(LabelInputError, match="reviewer"):
        set_label(engine, _candidate_output(engine, "q4"), True, "  ")


def test_the_gate_counts_labels(engine, comparison: str) -> None:
    from lib.governance.gate import compute_verdict
    from lib.governance.policy import create_policy

    create_policy(engine, "refusals", "alpha = 0.05\n[criteria.refusal_rate]\nmax = 0.99\n", source="test")
    before = compute_verdict(engine, comparison, "refusals")[0].criteria[0].candidate
    set_label(engine, _candidate_output(engine, "q0"), False, "ana")
    after = compute_verdict(engine, comparison, "refusals")[0].criteria[0].candidate
    assert after == pytest.approx(before - 1 / 11)


# ---- export ----------------------------------------------------------------------------------------------

def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


CHECK_KEYS = {"text", "refused", "refused_source", "correct", "json_valid", "json_valid_lenient", "empty",
              "truncated", "error", "length_chars", "length_tokens"}


@pytest.mark.slow
def test_cli_exports_every_format_with_labels_applied(engine, comparison: str, db_url: str, tmp_path) -> None:
    set_label(engine, _candidate_output(engine, "q4"), True, "ana")
    out = _cli(db_url, "cases", comparison, "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(records) == 11
    first = records[0]
    assert {"case_id", "repeat", "category", "input", "expected", "baseline", "candidate"} <= set(first)
    assert CHECK_KEYS <= set(first["baseline"]) and CHECK_KEYS <= set(first["candidate"])
    by_id = {r["case_id"]: r for r in records}
    assert by_id["q0"]["candidate"]["refused"] is True and by_id["q0"]["candidate"]["refused_source"] == "rule"
    assert by_id["q4"]["candidate"]["refused"] is True and by_id["q4"]["candidate"]["refused_source"] == "label"
    assert by_id["q4"]["candidate"]["refused_rule"] is False
    assert by_id["e0"]["baseline"]["empty"] is True and by_id["e0"]["candidate"]["empty"] is False
    assert by_id["q1"]["baseline"]["length_chars"] == len("Run kill 1.")

    csv_path, parquet_path = tmp_path / "c.csv", tmp_path / "c.parquet"
    assert _cli(db_url, "cases", comparison, "--format", "csv", "--output", str(csv_path)).returncode == 0
    frame = pd.read_csv(csv_path)
    assert len(frame) == 11 and frame.loc[frame["case_id"] == "q4", "candidate.refused_source"].item() == "label"
    assert _cli(db_url, "cases", comparison, "--format", "parquet", "--output", str(parquet_path)).returncode == 0
    table = pq.read_table(parquet_path).to_pylist()
    assert table == records  # the same records, nested, typed

    bad = _cli(db_url, "cases", comparison, "--format", "parquet")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: parquet is binary: give a file with --output"
    assert _cli(db_url, "cases", comparison, "--format", "xml").returncode == 2
    assert _cli(db_url, "cases", "missing").returncode == 2


def test_drift_refusal_descriptor_takes_labels() -> None:
    from lib.drift.analysis import _sample
    from lib.review.checks.refusal import RefusalDetector

    texts = pd.Series([REFUSAL, MISSED, "Fine."])
    labels = pd.Series([False, True, pd.NA], dtype="boolean")
    flags = _sample(texts, {}, RefusalDetector(), pd.Series([None] * 3), labels).extra["refusal"]
    assert flags.tolist() == [0, 1, 0]
