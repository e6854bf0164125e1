"""Reviewer settings beyond match rules: the input token limit (tokens counted under each side's own
tokenizer through litellm), a JSON Schema for cases without one (traffic logs), refusal patterns at load."""
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
from lib.review.checks.lengths import METHOD_LITELLM
from lib.review.comparisons import list_comparisons
from lib.review.report import build_report
from lib.review.settings import ReviewSettings, ReviewSettingsError, canonical_schema, stored_settings

ROOT = Path(__file__).resolve().parent.parent
JAPANESE = "注文番号 1234 の配送状況を教えてください。明日までに届きますか？" * 2  # 46 tokens (gpt-4o), 64 (gpt-4)
ENGLISH = "Where is my order 1234?"  # 8 tokens under both
SCHEMA = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}


def _wide(rows: list[tuple[str, str, str, str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows([("id", "question", "old", "new"), *rows])
    return out.getvalue().encode()


def _load(engine, name: str, data: bytes, review: ReviewSettings | None = None, **cols: str):
    mapping = LoadMapping(id_col="id", input_col="question", baseline_col="old", candidate_col="new",
                          baseline=cols.get("baseline", "gpt-4o"), candidate=cols.get("candidate", "gpt-4"),
                          review=review)
    return load_recorded(engine, data, "answers.csv", name, "wide", mapping)


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


def test_a_tokenizer_change_pushes_prompts_over_the_input_limit(engine) -> None:
    """The candidate's tokenizer needs more tokens for the same prompt: over a hard-coded budget."""
    rows = [(f"j{i}", JAPANESE, "発送済みです。", "発送済みです。") for i in range(12)]
    rows += [(f"e{i}", ENGLISH, "It shipped.", "It shipped.") for i in range(12)]
    _load(engine, "tok", _wide(rows), ReviewSettings(input_token_limit=50))
    report = build_report(engine, "tok")
    over = report["metrics"]["input_over_limit_rate"]
    assert (over["baseline"], over["candidate"], over["n"]) == (0.0, 0.5, 24)
    assert over["flips"] == {"to_true": 12, "to_false": 0} and over["ci_low"] > 0
    prompt = report["metrics"]["input_tokens_mean"]
    assert (prompt["baseline"], prompt["candidate"]) == ((46 * 12 + 8 * 12) / 24, (64 * 12 + 8 * 12) / 24)
    assert report["metrics"]["length_tokens_mean"]["n"] == 24
    assert report["tokenizers"] == {"baseline": METHOD_LITELLM, "candidate": METHOD_LITELLM}
    assert report["settings"]["input_token_limit"] == 50

    no_limit = build_report(engine, "tok", overrides=ReviewSettings(input_token_limit=100))
    assert no_limit["metrics"]["input_over_limit_rate"]["candidate"] == 0.0


def test_without_a_limit_the_rate_is_absent_not_zero(engine) -> None:
    _load(engine, "plain", _wide([("a", ENGLISH, "x", "y"), ("b", ENGLISH, "x", "z")]))
    report = build_report(engine, "plain")
    assert "input_over_limit_rate" not in report["metrics"] and "length_tokens_mean" in report["metrics"]


def test_the_system_prompt_counts_toward_the_prompt(engine) -> None:
    from lib.review.tokens import RunPrompt
    from lib.run.runner import ModelSpec, RunOptions, run_comparison  # noqa: F401  (config rows of a live run)

    prompt = RunPrompt("gpt-4o", system_prompt="You are ACME's assistant.", prompt_template="Q: {{input}}")
    import pandas as pd

    rendered = prompt.render(pd.Series(["hi", None]))
    assert rendered[0] == "You are ACME's assistant.\n\nQ: hi" and rendered.isna()[1]


def test_a_schema_for_every_case_checks_traffic_structure(engine) -> None:
    rows = [("a", "q", '{"status": "shipped"}', '{"state": "shipped"}'),
            ("b", "q", '{"status": "late"}', "Your order is late."),
            ("c", "q", '{"status": "ok"}', '{"status": "ok"}')]
    _load(engine, "traffic", _wide(rows))
    assert "json_valid_rate" not in build_report(engine, "traffic")["metrics"]  # no schema: absent
    report = build_report(engine, "traffic", overrides=ReviewSettings(schema=json.dumps(SCHEMA)))
    valid = report["metrics"]["json_valid_rate"]
    assert (valid["baseline"], valid["candidate"], valid["n"]) == (1.0, 1 / 3, 3)
    contract = report["contract"]
    assert (contract["n_compared"], contract["unparsed"]["candidate"]) == (2, 1)
    assert [(c["path"], c["kind"], c["details"]) for c in contract["changes"]] == [
        ("status", "renamed", {"status -> state": 1})]


@pytest.mark.parametrize("schema, message", [
    ("{not json", "not JSON"), ("[1, 2]", "a JSON Schema is a JSON object"),
    ('{"type": "no-such-type"}', "not a valid JSON Schema")])
def test_bad_schemas_are_named_errors(schema: str, message: str) -> None:
    with pytest.raises(ReviewSettingsError, match=message):
        canonical_schema(schema, "schema.json")


def test_bad_limits_are_named_errors() -> None:
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ReviewSettingsError, match="input token limit"):
            ReviewSettings(input_token_limit=bad)


@pytest.mark.slow
def test_cli_load_stores_review_settings_and_report_applies_them(engine, db_url: str, tmp_path: Path) -> None:
    data = tmp_path / "answers.csv"
    data.write_bytes(_wide([("a", JAPANESE, '{"status": "x"}', "Sorry, that is above my pay grade."),
                            ("b", ENGLISH, '{"status": "y"}', '{"status": "y"}')]))
    schema = tmp_path / "reply.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    base = ("load", str(data), "--format", "wide", "--id-col", "id", "--input-col", "question",
            "--baseline-col", "old", "--candidate-col", "new", "--baseline", "gpt-4o", "--candidate", "gpt-4")
    bad = _cli(db_url, *base, "--name", "bad", "--refusal-pattern", "(unclosed")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "bad" not in {c["name"] for c in list_comparisons(engine)}  # nothing was written
    ok = _cli(db_url, *base, "--name", "set", "--refusal-pattern", r"above my pay grade",
              "--schema", str(schema), "--input-token-limit", "50")
    assert ok.returncode == 0, ok.stderr
    settings = stored_settings(engine, "set")
    assert settings.input_token_limit == 50 and json.loads(settings.schema) == SCHEMA
    report = json.loads(_cli(db_url, "report", "set", "--json").stdout)
    assert report["metrics"]["refusal_rate"]["candidate"] == 0.5
    assert report["metrics"]["json_valid_rate"]["candidate"] == 0.5
    assert report["metrics"]["input_over_limit_rate"]["candidate"] == 0.5
    missing = _cli(db_url, "report", "set", "--schema", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "cannot read the schema file" in missing.stderr
