"""`./review models search|show|test|discover|deprecations`: output, JSON keys and exit codes."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from test_catalog import load_long

from lib.cli import main

SEARCH_KEYS = {"model", "provider", "input_cost_per_token", "output_cost_per_token", "max_input_tokens",
               "deprecation_date"}


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def test_search_json_rows_have_the_issues_keys(capsys, db_url) -> None:
    code, out, _ = run(capsys, "models", "search", "gpt-4o-2024", "--json")
    rows = json.loads(out)
    assert code == 0 and rows and all(set(r) == SEARCH_KEYS for r in rows)
    row = next(r for r in rows if r["model"] == "gpt-4o-2024-08-06")
    assert row["provider"] == "openai" and row["deprecation_date"] == "2027-01-14" and row["max_input_tokens"] == 128000


def test_search_table_and_a_bad_provider(capsys, db_url) -> None:
    code, out, _ = run(capsys, "models", "search", "gpt-4o", "--provider", "openai", "--limit", "3")
    assert code == 0 and out.splitlines()[0].startswith("MODEL") and "$2.50/1M" in out and len(out.splitlines()) == 4
    code, _, err = run(capsys, "models", "search", "gpt", "--provider", "nosuchprovider")
    assert code == 2 and err.startswith("error: unknown provider 'nosuchprovider'") and len(err.splitlines()) == 1


def test_show_json_names_versions_candidates_and_key_status(capsys, db_url, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-print")
    code, out, _ = run(capsys, "models", "show", "gpt-4o-2024-08-06", "--json")
    data = json.loads(out)
    assert code == 0 and data["deprecation_date"] == "2027-01-14" and data["known"]
    assert "gpt-4o-2024-11-20" in data["candidates"] and data["versions"][0] == "gpt-4o-2024-05-13"
    assert data["key"]["present"] and "sk-do-not-print" not in out


def test_show_an_unknown_model_says_prices_are_unknown(capsys, db_url) -> None:
    code, out, _ = run(capsys, "models", "show", "openai/my-local-model")
    assert code == 0 and "not in the map" in out and "(unknown, not free)" in out


def test_show_with_a_bad_override_file_exits_2(capsys, db_url, tmp_path: Path) -> None:
    bad = tmp_path / "o.toml"
    bad.write_text('["gpt-4o"]\ncolour = "red"\n')
    code, _, err = run(capsys, "models", "show", "gpt-4o", "--overrides", str(bad))
    assert code == 2 and str(bad) in err and "field 'colour'" in err and len(err.splitlines()) == 1


def test_test_reports_each_side_and_exits_1_when_one_fails(capsys, db_url, llm_server) -> None:
    llm_server.add_fault("404", model="gone-model")
    code, out, _ = run(capsys, "models", "test", "openai/local-small", "openai/gone-model",
                       "--api-base", llm_server.url)
    lines = out.splitlines()
    assert code == 1 and lines[0].startswith("ok    openai/local-small:") and "served local-small" in lines[0]
    assert lines[1].startswith("FAIL  openai/gone-model: this key cannot use this model")


def test_test_exits_0_when_every_side_answers(capsys, db_url, llm_server) -> None:
    code, out, _ = run(capsys, "models", "test", "openai/local-small", "--api-base", llm_server.url, "--json")
    [result] = json.loads(out)
    assert code == 0 and result["ok"] and result["fingerprint"].startswith("fp_")


def test_discover_lists_openai_prefixed_ids_and_fails_with_one_line(capsys, db_url, llm_server) -> None:
    code, out, _ = run(capsys, "models", "discover", "--api-base", llm_server.url)
    assert code == 0 and out.split() == ["openai/local-large", "openai/local-small"]
    code, _, err = run(capsys, "models", "discover", "--api-base", "http://127.0.0.1:9/v1")
    assert code == 2 and "cannot connect" in err and len(err.splitlines()) == 1


def test_deprecations_exit_codes(capsys, engine, tmp_path: Path) -> None:
    load_long(engine, tmp_path)
    code, out, err = run(capsys, "models", "deprecations", "--within", "60", "--today", "2026-12-06")
    assert code == 1 and "gpt-4o-2024-08-06" in out and "deprecated within 60 days" in err
    code, out, _ = run(capsys, "models", "deprecations", "--within", "30", "--today", "2026-12-06", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["model"]: r["days_left"] for r in rows}["gpt-4o-2024-08-06"] == 39
    assert {r["model"]: r["roles"] for r in rows}["gpt-4o-2024-08-06"] == ["baseline"]
    assert run(capsys, "models", "deprecations", "--today", "2026-12-06")[0] == 0  # no threshold: a listing


@pytest.mark.parametrize("args", [("--within", "-1"), ("--within", "soon"), ("--today", "06/12/2026")])
def test_deprecations_bad_input_exits_2(capsys, db_url, args: tuple[str, ...]) -> None:
    code, _, err = run(capsys, "models", "deprecations", *args)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_deprecations_on_an_empty_store(capsys, db_url) -> None:
    code, out, _ = run(capsys, "models", "deprecations", "--within", "60")
    assert code == 0 and out.strip() == "No model in use yet."


@pytest.mark.slow
def test_deprecations_within_60_exits_1_as_printed(engine, db_url: str, tmp_path: Path) -> None:
    """The issue's acceptance check through the real entry point (today is 2026-12-06 on this machine)."""
    load_long(engine, tmp_path)
    env = {**os.environ, "DATABASE_URL": db_url}
    proc = subprocess.run(["./review", "models", "deprecations", "--within", "60", "--today", "2026-12-06"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "gpt-4o-2024-08-06" in proc.stdout and "Traceback" not in proc.stderr


def test_cost_prints_per_1k_and_the_monthly_projection(capsys, engine, tmp_path: Path) -> None:
    from test_cost_projection import TOKENS_CSV

    load_long(engine, tmp_path, text=TOKENS_CSV)
    code, out, _ = run(capsys, "models", "cost", "upgrade", "--requests-per-day", "1000")
    assert code == 0 and "per 1,000 requests (n=3 cases): $0.858 -> $0.873, +$0.015" in out
    assert "per month at 1,000 requests/day: $25.8 -> $26.2, +$0.45" in out  # 0.015 x 1 x 30 by hand
    code, out, _ = run(capsys, "models", "cost", "upgrade", "--json")
    assert code == 0 and json.loads(out)["delta_per_1k"] == pytest.approx(0.015)
    code, _, err = run(capsys, "models", "cost", "nope")
    assert code == 2 and err.startswith("error: no comparison named 'nope'")
