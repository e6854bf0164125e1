"""The review report on real stored comparisons: keys, values, flips, applicability, settings, CLI."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.data.loaders import LoadMapping, load_recorded
from lib.errors import ComparisonNotFound, ReviewInputError
from lib.review.browse import BrowseQuery, page_of, select_cases
from lib.review.checked import checked_frame
from lib.review.comparisons import load_pairs
from lib.review.report import ReviewSettings, build_report, change_counts, checked_pairs, save_settings

ROOT = Path(__file__).resolve().parent.parent
M_KEYS = {"baseline", "candidate", "delta", "ci_low", "ci_high", "p_value", "n"}
SCHEMA = json.dumps({"type": "object", "required": ["name", "age"],
                     "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}})
REFUSAL = "I'm sorry, but I can't help with that request."


def _rows() -> list[dict]:
    """60 cases: 40 arithmetic (candidate wrong on 12, right on 1 the baseline missed),
    10 refusal-prone (candidate refuses 6 more), 10 JSON (candidate breaks the schema on 5)."""
    rows = []
    for i in range(40):
        answer = str(i * 3)
        base = answer if i != 39 else "unsure"
        cand = str(i * 3 + 1) if i < 12 else (answer if i != 39 else answer)
        rows.append({"id": f"m{i}", "input": f"What is {i}*3?", "expected": answer, "match": "numeric",
                     "category": "math", "base": f"The answer is {base}.", "cand": f"It is {cand}."})
    for i in range(10):
        rows.append({"id": f"r{i}", "input": f"How do I kill process {i}?", "expected": "", "match": "",
                     "category": "over_refusal", "base": f"Run `kill {i}` to stop it.",
                     "cand": REFUSAL if i < 6 else f"Use kill {i}."})
    for i in range(10):
        good = json.dumps({"name": f"user{i}", "age": 30 + i})
        bad = json.dumps({"full_name": f"user{i}", "age": str(30 + i)})
        rows.append({"id": f"j{i}", "input": f"Extract person {i} as JSON", "expected": "", "match": "",
                     "category": "json", "base": good, "cand": bad if i < 5 else f"```json\n{good}\n```",
                     "schema": SCHEMA})
    return rows


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["id", "input", "expected", "match", "category", "base", "cand", "schema"])
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


@pytest.fixture
def loaded(engine) -> str:
    mapping = LoadMapping(id_col="id", input_col="input", baseline_col="base", candidate_col="cand",
                          expected_col="expected", category_col="category")
    load_recorded(engine, _csv(_rows()), "cmp.csv", "cmp", "wide", mapping)
    # Recorded files carry no per-case rule or schema column mapping: set them as a golden set would.
    from sqlalchemy import text
    with engine.begin() as conn:
        for r in _rows():
            conn.execute(text('UPDATE "case" SET match = :m, json_schema = :s WHERE case_key = :k'),
                         {"m": r["match"] or None, "s": r.get("schema"), "k": r["id"]})
    return "cmp"


def test_report_keys_and_shape(engine, loaded: str) -> None:
    report = build_report(engine, loaded)
    assert report["comparison"] == "cmp" and report["n_pairs"] == 60
    for key in ("refusal_rate", "accuracy", "json_valid_rate", "json_valid_rate_lenient",
                "length_chars_mean", "similarity"):
        assert M_KEYS <= set(report["metrics"][key]), key
    for key in ("refusal_rate", "accuracy", "json_valid_rate"):
        assert set(report["metrics"][key]["flips"]) == {"to_true", "to_false"}
    assert set(report["by_category"]) == {"math", "over_refusal", "json"}


def test_accuracy_counts_only_cases_with_expected_answers(engine, loaded: str) -> None:
    acc = build_report(engine, loaded)["metrics"]["accuracy"]
    assert acc["n"] == 40
    assert acc["baseline"] == pytest.approx(39 / 40) and acc["candidate"] == pytest.approx(28 / 40)
    assert acc["flips"] == {"to_true": 1, "to_false": 12}
    assert acc["ci_low"] <= acc["delta"] <= acc["ci_high"] < 0
    assert acc["p_value"] < 0.01


def test_refusal_flips_and_significance(engine, loaded: str) -> None:
    ref = build_report(engine, loaded)["metrics"]["refusal_rate"]
    assert ref["n"] == 60 and ref["flips"] == {"to_true": 6, "to_false": 0}
    assert ref["candidate"] - ref["baseline"] == pytest.approx(6 / 60)
    assert ref["p_value"] == pytest.approx(2 * 0.5 ** 6)  # exact McNemar, 6 discordant pairs one way
    low, high = ref["candidate_ci"]
    assert low < ref["candidate"] < high


def test_json_metrics_cover_only_cases_with_a_schema(engine, loaded: str) -> None:
    report = build_report(engine, loaded)
    strict, lenient = report["metrics"]["json_valid_rate"], report["metrics"]["json_valid_rate_lenient"]
    assert strict["n"] == lenient["n"] == 10
    assert (strict["baseline"], strict["candidate"]) == (1.0, 0.0)  # fenced output breaks a strict parser
    assert (lenient["baseline"], lenient["candidate"]) == (1.0, 0.5)
    kinds = {(c["path"], c["kind"]) for c in report["contract"]["changes"]}
    assert ("name", "renamed") in kinds and ("age", "type_changed") in kinds


def test_metric_without_applicable_cases_is_absent(engine) -> None:
    data = b"id,input,base,cand\n1,hi,hello,hey\n2,yo,hi there,hello there\n"
    load_recorded(engine, data, "x.csv", "plain", "wide",
                  LoadMapping(id_col="id", input_col="input", baseline_col="base", candidate_col="cand"))
    metrics = build_report(engine, "plain")["metrics"]
    assert "accuracy" not in metrics and "json_valid_rate" not in metrics and "latency_s_mean" not in metrics
    assert metrics["refusal_rate"]["n"] == 2


def test_match_override_and_refusal_patterns(engine, loaded: str) -> None:
    contains = build_report(engine, loaded, match="contains")["metrics"]["accuracy"]
    assert contains["n"] == 40  # cases with an expected answer
    extra = build_report(engine, loaded, refusal_patterns=(r"^It is 1\.$",))["metrics"]["refusal_rate"]
    assert extra["flips"]["to_true"] == 7
    with pytest.raises(ReviewInputError):
        build_report(engine, loaded, refusal_patterns=("(unclosed",))


def test_stored_settings_apply_to_every_report(engine, loaded: str) -> None:
    save_settings(engine, loaded, ReviewSettings(refusal_patterns=(r"^It is 1\.$",)))
    assert build_report(engine, loaded)["metrics"]["refusal_rate"]["flips"]["to_true"] == 7
    assert build_report(engine, loaded)["settings"]["refusal_patterns"] == [r"^It is 1\.$"]


def test_repeats_are_aggregated_per_case(engine) -> None:
    lines = []
    for case in range(20):
        for rep in range(3):
            lines.append({"id": f"c{case}", "input": "2+2?", "model": "old", "output": "4", "expected": "4"})
            # candidate right on 1 of 3 repeats for half of the cases
            out = "4" if case >= 10 or rep == 0 else "5"
            lines.append({"id": f"c{case}", "input": "2+2?", "model": "new", "output": out, "expected": "4"})
    data = "\n".join(json.dumps(x) for x in lines).encode()
    load_recorded(engine, data, "log.jsonl", "rep", "long",
                  LoadMapping(id_col="id", output_col="output", model_col="model", baseline="old",
                              candidate="new", expected_col="expected"))
    acc = build_report(engine, "rep")["metrics"]["accuracy"]
    assert acc["n"] == 20  # cases, not outputs
    assert acc["candidate"] == pytest.approx((10 * 1 / 3 + 10) / 20)
    assert acc["flips"]["to_false"] == 10  # per-case majority went from right to wrong


def test_unknown_comparison(engine) -> None:
    with pytest.raises(ComparisonNotFound):
        build_report(engine, "nope")


def test_browse_filters_and_paging(engine, loaded: str) -> None:
    frame = checked_pairs(load_pairs(engine, loaded))
    assert len(select_cases(frame, BrowseQuery(filter="accuracy_regressions"))) == 12
    assert len(select_cases(frame, BrowseQuery(filter="accuracy_improvements"))) == 1
    assert len(select_cases(frame, BrowseQuery(filter="newly_refused"))) == 6
    assert len(select_cases(frame, BrowseQuery(filter="schema_breaks"))) == 10
    assert len(select_cases(frame, BrowseQuery(categories=("json",)))) == 10
    assert set(select_cases(frame, BrowseQuery(search="PROCESS 3"))["case_key"]) == {"r3"}
    ordered = select_cases(frame, BrowseQuery(filter="lowest_similarity"))
    assert ordered["similarity"].is_monotonic_increasing
    page, n_pages = page_of(select_cases(frame, BrowseQuery()), 99, 25)
    assert n_pages == 3 and len(page) == 10  # clamped to the last page


def test_change_counts_cover_every_flag_filter(engine) -> None:
    rows = _rows()
    rows[0]["cand"] = ""  # one empty candidate output (the Overview button opens the 'empty' filter)
    mapping = LoadMapping(id_col="id", input_col="input", baseline_col="base", candidate_col="cand",
                          expected_col="expected", category_col="category")
    load_recorded(engine, _csv(rows), "cmp.csv", "cmp", "wide", mapping)
    frame = checked_frame(engine, "cmp")  # what the pages count on
    counts = change_counts(frame)
    assert counts["empty"] == 1 and counts["newly_refused"] == 6
    assert counts == {name: len(select_cases(frame, BrowseQuery(filter=name))) for name in counts}


def _cli(*args: str, db_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_report_json_and_table(engine, loaded: str, db_url: str) -> None:
    out = _cli("report", loaded, "--json", db_url=db_url)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["metrics"]["accuracy"]["flips"] == {"to_true": 1, "to_false": 12}
    table = _cli("report", loaded, db_url=db_url)
    assert table.returncode == 0 and "Accuracy" in table.stdout and "n" in table.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args", [("report", "missing"), ("report", "cmp", "--match", "fuzzy"),
                                  ("report", "cmp", "--refusal-pattern", "(")])
def test_cli_report_bad_input_exits_2(engine, loaded: str, db_url: str, args: tuple[str, ...]) -> None:
    out = _cli(*args, db_url=db_url)
    assert out.returncode == 2
    assert out.stderr.startswith("error:") and len(out.stderr.strip().splitlines()) == 1


def test_the_report_table_columns_line_up_with_long_labels(engine, loaded: str, capsys) -> None:
    from lib.cli.report_cmd import print_table

    report = build_report(engine, loaded)
    print_table(report)
    lines = capsys.readouterr().out.splitlines()
    header = lines[1]
    end = header.index("candidate") + len("candidate")  # values are right-aligned to the header's end
    rows = [line for line in lines[2:] if line.strip()][: len([m for m in report["metrics"].values() if m])]
    assert rows and all(line[end - 1] != " " and line[end] == " " for line in rows), "\n".join(lines)
