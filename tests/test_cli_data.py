"""`./review dataset import|list` and `load`: exit codes, summaries, one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import FIXTURES, ROOT
from sqlalchemy import func
from sqlmodel import Session, select

from lib.store.entities import Comparison, Dataset


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    env.pop("REVIEW_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "lib", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.slow
def test_dataset_import_then_unchanged_then_list(db_url: str, engine) -> None:
    path = FIXTURES / "golden_support.jsonl"
    first = cli(db_url, "dataset", "import", path, "--name", "support")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "imported dataset 'support' version 1 (8 cases)"
    again = cli(db_url, "dataset", "import", path, "--name", "support")
    assert again.stdout.strip() == "unchanged: dataset 'support' version 1 (8 cases)"
    listed = cli(db_url, "dataset", "list")
    assert listed.returncode == 0 and "support" in listed.stdout and "golden_support.jsonl" in listed.stdout


@pytest.mark.slow
def test_dataset_import_with_column_flags_warns_about_ignored_columns(db_url: str) -> None:
    proc = cli(db_url, "dataset", "import", FIXTURES / "golden_custom_columns.csv", "--name", "quiz",
               "--input-col", "question", "--expected-col", "answer", "--category-col", "topic")
    assert proc.returncode == 0, proc.stderr
    assert "version 1 (3 cases)" in proc.stdout
    assert proc.stderr.strip() == "warning: ignored columns not in the mapping: notes"


@pytest.mark.slow
def test_dataset_import_bad_file_exits_2_with_one_line_and_writes_nothing(db_url: str, engine, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "input": "ok"}\n{"id": "b", "input": "x", "match": "fuzzy"}\n')
    proc = cli(db_url, "dataset", "import", bad, "--name", "bad")
    assert_one_line_error(proc, "bad.jsonl, line 2:", "field 'match'", "unknown rule 'fuzzy'")
    with Session(engine) as s:
        assert s.exec(select(func.count(Dataset.id))).one() == 0


@pytest.mark.slow
def test_missing_file_exits_2(db_url: str) -> None:
    assert_one_line_error(cli(db_url, "dataset", "import", "nope.jsonl", "--name", "x"),
                          "nope.jsonl", "no such file")
    assert_one_line_error(cli(db_url, "load", "nope.csv", "--name", "x"), "nope.csv", "no such file")


@pytest.mark.slow
def test_load_promptfoo_prints_summary_unpaired_report_and_warnings(db_url: str, engine) -> None:
    proc = cli(db_url, "load", FIXTURES / "promptfoo_v3.json", "--name", "pf")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "loaded comparison 'pf' (promptfoo): 3 pairs, "
        "baseline openai:gpt-4o-mini vs candidate openai:gpt-4.1-mini",
        "unpaired: 1 baseline-only and 0 candidate-only outputs (first ids: test-3)"]
    assert proc.stderr.startswith("warning: baseline = 'openai:gpt-4o-mini'")
    listed = cli(db_url, "list")
    assert "pf" in listed.stdout and "recorded" in listed.stdout


@pytest.mark.slow
def test_load_long_with_flags(db_url: str) -> None:
    proc = cli(db_url, "load", FIXTURES / "long.csv", "--name", "shadow", "--format", "long",
               "--id-col", "request_id", "--model-col", "model", "--baseline", "gpt-4o-2024-08-06",
               "--candidate", "gpt-4.1-2025-04-14", "--latency-col", "latency_ms", "--timestamp-col", "timestamp",
               "--system", "support-bot")
    assert proc.returncode == 0, proc.stderr
    assert "3 pairs" in proc.stdout and "first ids: r-003, r-004, r-005" in proc.stdout


@pytest.mark.slow
def test_load_errors_exit_2_with_one_line(db_url: str, engine) -> None:
    long_csv = FIXTURES / "long.csv"
    assert_one_line_error(cli(db_url, "load", long_csv, "--name", "shadow"), "long.csv:", "which is the baseline",
                          "'gpt-4.1-2025-04-14' (4 rows, 2025-03-01T09:00:02+00:00 .. ")
    assert_one_line_error(cli(db_url, "load", long_csv, "--name", "s", "--format", "tall"),
                          "unknown format 'tall'")
    assert_one_line_error(cli(db_url, "load", FIXTURES / "wide.csv", "--name", "w", "--match", "regex"),
                          "field 'pattern'")
    assert cli(db_url, "load", FIXTURES / "wide.csv", "--name", "w").returncode == 0
    assert_one_line_error(cli(db_url, "load", FIXTURES / "wide.csv", "--name", "w"), "already exists")
    with Session(engine) as s:
        assert s.exec(select(func.count(Comparison.id))).one() == 1
