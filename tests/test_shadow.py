"""Shadow-traffic logs: streamed CSV/JSONL(.gz) loads, pairing per request, timestamps, bad lines."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ROOT
from sqlalchemy import func
from sqlmodel import Session, select

from lib.data.golden import CaseRecord, content_hash
from lib.data.loaders import LoadMapping, load_recorded, load_recorded_file
from lib.data.loaders.stream import iter_tables
from lib.errors import RecordedLoadError
from lib.release.shadow import load_shadow
from lib.review.comparisons import list_comparisons, load_pairs
from lib.review.report import build_report
from lib.store.columns import from_json
from lib.store.entities import AuditEvent, Case, Comparison, Dataset, ModelConfig, Output, Run

SERVING, SHADOW = "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14"
SIDES = LoadMapping(baseline=SERVING, candidate=SHADOW)
TABLES = (Dataset, Case, ModelConfig, Run, Output, Comparison, AuditEvent)
FIELDS = ("request_id", "timestamp", "model", "role", "input", "output", "latency_ms", "error")


def log_rows(n: int, *, drop: tuple[int, ...] = (), refusals: int = 0) -> list[dict]:
    """n requests answered by both models (the shadow refuses the first `refusals`); `drop`: requests
    whose shadow row is missing."""
    rows = []
    for i in range(n):
        at = f"2025-03-01T09:{i // 60:02d}:{i % 60:02d}Z"
        rows.append({"request_id": f"r{i}", "timestamp": at, "model": SERVING, "role": "serving",
                     "input": f"question {i}", "output": f"answer {i}", "latency_ms": 500 + i, "error": ""})
        if i not in drop:
            text = "I'm sorry, but I can't help with that." if i < refusals else f"answer {i}, shorter"
            rows.append({"request_id": f"r{i}", "timestamp": at, "model": SHADOW, "role": "shadow",
                         "input": f"question {i}", "output": text, "latency_ms": 400 + i, "error": ""})
    return rows


def csv_bytes(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def counts(engine) -> dict[str, int]:
    with Session(engine) as s:
        return {t.__name__: s.exec(select(func.count()).select_from(t)).one() for t in TABLES}


def load(engine, data: bytes, filename: str, mapping: LoadMapping = SIDES, chunk_rows: int = 7, name: str = "shadow"):
    return load_shadow(engine, io.BytesIO(data), filename, name, mapping, chunk_rows=chunk_rows)


def test_csv_pairs_requests_across_chunks_and_keeps_timestamps(engine) -> None:
    data = csv_bytes(log_rows(20, drop=(3, 17), refusals=5))
    report = load(engine, data, "traffic.csv")
    assert report["sha256"] == hashlib.sha256(data).hexdigest()  # the load cites the file it read
    assert (report["n_pairs"], report["baseline_only"], report["candidate_only"]) == (18, 2, 0)
    assert report["first_unpaired_ids"] == ["r3", "r17"] and report["rows"] == 38 and report["traffic"] is True
    assert report["first_logged_at"].startswith("2025-03-01T09:00:00")
    pairs = load_pairs(engine, "shadow").set_index("case_key")
    assert len(pairs) == 20 and pairs.loc["r3", "c_text"] is None
    assert pairs.loc["r12", ["b_text", "c_text"]].tolist() == ["answer 12", "answer 12, shorter"]
    assert pairs.loc["r12", "b_latency_s"] == pytest.approx(0.512)
    assert pairs.loc["r12", "c_latency_s"] == pytest.approx(0.412)
    with Session(engine) as s:
        comp = s.exec(select(Comparison)).one()
        stamp = s.exec(select(Output.logged_at).where(Output.run_id == comp.candidate_run_id)
                       .order_by(Output.case_id)).first()
        ds = s.exec(select(Dataset)).one()
        cases = s.exec(select(Case).order_by(Case.position)).all()
    assert comp.source == "shadow" and from_json(comp.notes_json)["traffic"] is True
    assert stamp.replace(tzinfo=UTC) == datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
    records = [CaseRecord(key=c.case_key, input_text=c.input_text) for c in cases]
    assert (ds.n_cases, ds.content_hash) == (20, content_hash(records))  # the streamed hash is the usual one


def test_traffic_report_has_no_accuracy_and_shows_refusals(engine) -> None:
    load(engine, csv_bytes(log_rows(40, refusals=10)), "traffic.csv")
    report = build_report(engine, "shadow")
    assert "accuracy" not in report["metrics"]  # no expected answers: absent, not false
    refusal = report["metrics"]["refusal_rate"]
    assert (refusal["baseline"], refusal["candidate"], refusal["n"]) == (0.0, 0.25, 40)


def test_jsonl_gz_and_role_column_pick_the_sides(engine, tmp_path: Path) -> None:
    path = tmp_path / "traffic.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_bytes(log_rows(9))))
    result = load_recorded_file(engine, path, "by-role", mapping=LoadMapping())  # .gz: shadow, sides by role
    assert (result.fmt, result.n_pairs, result.baseline, result.candidate) == ("shadow", 9, SERVING, SHADOW)
    pairs = load_pairs(engine, "by-role")
    assert pairs["b_error"].isna().all() and pairs["c_error"].isna().all()  # "error": "" is no error


def test_a_log_without_a_model_column_names_its_sides_by_role_or_as_given(engine) -> None:
    rows = [{k: v for k, v in r.items() if k != "model"} for r in log_rows(4)]
    unnamed = load_recorded(engine, csv_bytes(rows), "traffic.csv", "unnamed", "shadow", LoadMapping())
    assert (unnamed.baseline, unnamed.candidate) == ("serving", "shadow")
    named = load_recorded(engine, csv_bytes(rows), "traffic.csv", "named", "shadow",
                          LoadMapping(baseline="gpt-4o", candidate="gpt-4.1", role_col="role"))
    assert (named.baseline, named.candidate, named.n_pairs) == ("gpt-4o", "gpt-4.1", 4)
    assert {c["name"]: (c["baseline"], c["candidate"]) for c in list_comparisons(engine)}["named"] == (
        "gpt-4o", "gpt-4.1")


def test_errors_are_outputs_not_answers(engine) -> None:
    rows = log_rows(6)
    rows[3] = {**rows[3], "output": "", "error": "upstream timeout"}  # r1's shadow row
    load(engine, csv_bytes(rows), "traffic.csv")
    pairs = load_pairs(engine, "shadow").set_index("case_key")
    assert (pairs.loc["r1", "c_error"], pairs.loc["r1", "c_error_kind"], pairs.loc["r1", "c_text"]) == (
        "upstream timeout", "other", None)


def test_load_recorded_routes_the_shadow_format(engine) -> None:
    result = load_recorded(engine, csv_bytes(log_rows(5)), "traffic.csv", "via-bytes", "shadow", SIDES)
    assert (result.fmt, result.n_pairs) == ("shadow", 5)


@pytest.mark.parametrize("mutate, filename, line, fragment", [
    (lambda b: b.replace(b"2025-03-01T09:00:11Z", b"yesterday", 1), "t.csv", 24, "not ISO 8601"),
    (lambda b: b.replace(b",511,", b",fast,", 1), "t.csv", 24, "not a number"),
    (lambda b: b + b"r99,2025-03-01T10:00:00Z,m,serving,q,a,1,,extra\n", "t.csv", 42, "cells but the header"),
    (lambda b: b.replace(b'"r15"', b'"r15', 1), "t.jsonl", 31, "invalid JSON"),
    (lambda b: b.replace(b"\n", b"\n[1]\n", 1), "t.jsonl", 2, "expected a JSON object"),
])
def test_a_malformed_line_in_a_later_chunk_names_it_and_writes_nothing(engine, mutate, filename: str, line: int,
                                                                      fragment: str) -> None:
    rows = log_rows(20)
    data = mutate(csv_bytes(rows) if filename.endswith(".csv") else jsonl_bytes(rows))
    before = counts(engine)
    with pytest.raises(RecordedLoadError) as err:
        load(engine, data, filename, chunk_rows=5)
    assert err.value.line == line and fragment in str(err.value)
    assert counts(engine) == before


@pytest.mark.parametrize("data, mapping, fragment", [
    (csv_bytes(log_rows(3)).replace(b"request_id", b"req"), SIDES, "pass --id-col"),
    (csv_bytes(log_rows(3)).replace(b",role,", b",kind,"), LoadMapping(), "pass --baseline and --candidate"),
    (csv_bytes(log_rows(3)).replace(b",shadow,", b",dark,"), LoadMapping(), "use serving or shadow"),
    (csv_bytes(log_rows(3, drop=(0, 1, 2))), SIDES, "has no rows of the candidate"),
    (csv_bytes(log_rows(3)), LoadMapping(baseline=SERVING, candidate="nope"), "has no rows of the candidate"),
    (csv_bytes(log_rows(3)), LoadMapping(baseline=SERVING, candidate=SHADOW, match="exact"), "no expected"),
    (b"", SIDES, "no header row"),
])
def test_bad_logs_are_named_errors_and_write_nothing(engine, data: bytes, mapping: LoadMapping,
                                                      fragment: str) -> None:
    before = counts(engine)
    with pytest.raises(RecordedLoadError, match=fragment):
        load(engine, data, "t.csv", mapping)
    assert counts(engine) == before


def test_truncated_gzip_is_a_named_error(engine) -> None:
    data = gzip.compress(jsonl_bytes(log_rows(50)))[:-40]
    with pytest.raises(RecordedLoadError, match="not a complete gzip file"):
        load(engine, data, "t.jsonl.gz")


def test_the_reader_streams(tmp_path: Path) -> None:
    """The first chunk arrives after reading a small part of the file, never the whole of it."""
    data = csv_bytes(log_rows(5000))
    raw = io.BytesIO(data)
    tables = iter_tables(io.BufferedReader(raw, buffer_size=8192), "t.csv", RecordedLoadError, chunk_rows=100)
    first = next(tables)
    assert len(first.records) == 100 and first.locs[0] == 2
    assert raw.tell() < len(data) / 10
    assert sum(len(t.records) for t in tables) == 2 * 5000 - 100


@pytest.mark.slow
def test_cli_load_shadow_gz(db_url: str, engine, tmp_path: Path) -> None:
    path = tmp_path / "traffic.csv.gz"
    path.write_bytes(gzip.compress(csv_bytes(log_rows(12, drop=(4,)))))
    env = {**os.environ, "DATABASE_URL": db_url}
    proc = subprocess.run([sys.executable, "-m", "lib", "load", str(path), "--name", "week-47", "--format", "shadow",
                           "--baseline", SERVING, "--candidate", SHADOW, "--latency-col", "latency_ms"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "loaded comparison 'week-47' (shadow): 11 pairs" in proc.stdout
    assert "1 baseline-only and 0 candidate-only outputs (first ids: r4)" in proc.stdout


def test_load_page_loads_a_gzipped_shadow_log_by_role(engine) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    at.switch_page("pages/load.py").run()
    at.radio(key="load_format").set_value("shadow").run()
    data = gzip.compress(jsonl_bytes(log_rows(30, drop=(7,))))
    at.file_uploader(key="load_upload").set_value(("traffic.jsonl.gz", data, "application/gzip")).run()
    assert not at.exception, at.exception
    assert not [s for s in at.selectbox if s.key == "load_expected_col"]  # traffic: no expected column
    at.selectbox(key="load_role_col").set_value("role").run()
    at.text_input(key="load_name").set_value("from-page").run()
    at.button(key="load_submit").click().run()
    assert not at.exception, at.exception
    assert at.success and "29 pairs" in at.success[0].value, [e.value for e in at.error]
    assert at.warning and "1 baseline only" in at.warning[0].value
    with Session(engine) as s:
        comp = s.exec(select(Comparison).where(Comparison.name == "from-page")).one()
    assert comp.source == "shadow"
