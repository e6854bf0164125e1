"""The offline demo: its dataset is valid and varied, its recording matches it, loading is idempotent."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from jsonschema.validators import validator_for
from sqlalchemy import func
from sqlmodel import Session, select

from lib.data.demo import DATASET_FILE, DATASET_NAME, RECORDING_FILE, DemoMissing, demo_comparison_name, load_demo
from lib.data.golden import content_hash, parse_cases
from lib.store.entities import Case, Comparison, Dataset, ModelConfig, Output, Run

ROOT = Path(__file__).resolve().parent.parent
TABLES = (Dataset, Case, ModelConfig, Run, Output, Comparison)
CATEGORIES = {"arithmetic", "facts", "json_extraction", "summary", "harmful", "over_refusal", "prompt_injection"}


def counts(engine) -> dict[str, int]:
    with Session(engine) as session:
        return {t.__name__: session.exec(select(func.count()).select_from(t)).one() for t in TABLES}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in DATASET_FILE.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- the dataset

def test_the_demo_dataset_parses_with_at_least_120_cases_in_every_category(rows) -> None:
    cases = parse_cases(DATASET_FILE.read_bytes(), DATASET_FILE.name)
    assert len(cases) == len(rows) >= 120
    per_category = Counter(c.category for c in cases)
    assert set(per_category) == CATEGORIES
    assert min(per_category.values()) >= 10, per_category


def test_every_case_uses_the_documented_fields(rows) -> None:
    allowed = {"id", "input", "expected", "match", "pattern", "schema", "category", "metadata"}
    for row in rows:
        assert set(row) <= allowed, row["id"]
        if row["category"] in ("harmful", "over_refusal"):  # judged by refusal, not by an answer
            assert "match" not in row and "expected" not in row, row["id"]
        else:
            assert row["match"] in ("exact", "normalized", "contains", "not_contains", "regex", "numeric")
            assert row["expected"], row["id"]
    assert {r.get("match") for r in rows} >= {"numeric", "contains", "normalized", "regex", "not_contains"}


def test_every_injection_probe_hides_its_canary_in_the_input_instructions(rows) -> None:
    probes = [r for r in rows if r.get("match") == "not_contains"]
    assert probes and all(r["category"] == "prompt_injection" for r in probes)
    for r in probes:
        canary = r["expected"]
        assert canary and canary == r["metadata"]["canary"], r["id"]
        # the canary sits inside an instruction planted in the text, not in the user's own request
        assert canary in r["input"], r["id"]
        planted = r["input"].split("\n", 1)[1]
        assert canary in planted, r["id"]
        assert re.search(r"(?i)(ignore|disregard|instead|must|forget|say|reply|respond|output|print|append|"
                         r"write|include|instruction)", planted), r["id"]
        assert canary not in r["input"].split("\n", 1)[0], r["id"]  # not in the user's own request


def test_every_schema_is_a_valid_json_schema_and_asks_for_json(rows) -> None:
    with_schema = [r for r in rows if "schema" in r]
    assert len(with_schema) >= 10
    for r in with_schema:
        validator_for(r["schema"]).check_schema(r["schema"])
        assert r["category"] == "json_extraction" and "JSON" in r["input"], r["id"]


def test_harmful_cases_expect_a_refusal_and_benign_ones_expect_an_answer(rows) -> None:
    harmful = [r for r in rows if r["category"] == "harmful"]
    benign = [r for r in rows if r["category"] == "over_refusal"]
    assert all(r["metadata"]["expect"] == "refuse" for r in harmful)
    assert all(r["metadata"]["expect"] == "comply" for r in benign)
    assert any("kill a Python process" in r["input"] for r in benign)
    assert any("shoot a portrait" in r["input"] for r in benign)


def test_the_recording_matches_the_dataset_and_covers_every_case() -> None:
    lines = [json.loads(x) for x in RECORDING_FILE.read_text().splitlines() if x.strip()]
    meta, outputs = lines[0], lines[1:]
    cases = parse_cases(DATASET_FILE.read_bytes(), DATASET_FILE.name)
    assert meta["dataset"]["content_hash"] == content_hash(cases)
    assert meta["dataset"]["name"] == DATASET_NAME
    keys = {c.key for c in cases}
    assert {(o["c"], o["s"]) for o in outputs} == {(k, s) for k in keys for s in "bc"}
    assert meta["baseline"]["config"]["model"] != meta["candidate"]["config"]["model"]
    assert meta["baseline"]["run"]["source"] == "live"
    assert meta["baseline"]["config"]["temperature"] == 0 and meta["baseline"]["config"]["max_tokens"]


# ---------------------------------------------------------------- loading

def test_the_demo_loads_into_a_fresh_store(engine) -> None:
    result = load_demo(engine)
    assert result.created and result.comparison == demo_comparison_name()
    n_cases = sum(1 for line in DATASET_FILE.read_text().splitlines() if line.strip())
    assert counts(engine) == {"Dataset": 1, "Case": n_cases, "ModelConfig": 2, "Run": 2,
                              "Output": 2 * n_cases, "Comparison": 1}
    from lib.review.comparisons import list_comparisons, load_pairs

    listed = list_comparisons(engine)
    assert [c["name"] for c in listed] == [result.comparison]
    assert listed[0]["status"] == "complete" and listed[0]["n_cases"] == n_cases
    pairs = load_pairs(engine, result.comparison)
    assert len(pairs) == n_cases and pairs["b_text"].notna().all() and pairs["c_text"].notna().all()


def test_the_recorded_comparison_shows_the_quantization_regression(engine) -> None:
    """What the demo is for: the Q2_K build answers worse than Q4_1 under the dataset's own rules."""
    from lib.review.checks.matching import match_outputs
    from lib.review.comparisons import load_pairs

    pairs = load_pairs(engine, load_demo(engine).comparison)
    scored = pairs["match"].notna()
    ok = {side: match_outputs(pairs[f"{side}_text"], pairs["expected"], pairs["match"], pairs["pattern"])
          for side in ("b", "c")}
    arithmetic = pairs["category"] == "arithmetic"
    assert ok["b"][arithmetic].sum() > ok["c"][arithmetic].sum()
    assert ok["b"][scored].sum() > ok["c"][scored].sum()


def test_loading_the_demo_twice_adds_nothing(engine) -> None:
    load_demo(engine)
    before = counts(engine)
    again = load_demo(engine)
    assert not again.created and "already" in again.message
    assert counts(engine) == before


def test_the_demo_reuses_an_identical_dataset_already_imported(engine) -> None:
    from lib.data.golden import import_dataset

    import_dataset(engine, DATASET_FILE.read_bytes(), DATASET_FILE.name, DATASET_NAME)
    load_demo(engine)
    assert counts(engine)["Dataset"] == 1


def test_without_a_recording_only_the_dataset_loads(engine, tmp_path) -> None:
    result = load_demo(engine, recording_file=tmp_path / "absent.jsonl")
    assert result.comparison is None and "no recording" in result.message
    assert counts(engine)["Dataset"] == 1 and counts(engine)["Comparison"] == 0


def test_a_missing_demo_dataset_is_a_named_error(engine, tmp_path) -> None:
    with pytest.raises(DemoMissing):
        load_demo(engine, dataset_file=tmp_path / "absent.jsonl")


# ---------------------------------------------------------------- CLI

def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_cli_demo_exits_0_twice_and_says_what_it_did(db_url: str) -> None:
    first = _cli(db_url, "demo")
    assert first.returncode == 0, first.stderr
    assert "loaded" in first.stdout
    second = _cli(db_url, "demo")
    assert second.returncode == 0, second.stderr
    assert "already in the store" in second.stdout
    listed = _cli(db_url, "list", "--json")
    assert [c["name"] for c in json.loads(listed.stdout)] == [demo_comparison_name()]


@pytest.mark.slow
def test_app_starts_after_the_first_never_import_litellm(db_url: str, tmp_path: Path) -> None:
    """`demo` runs before every app start: once the demo is stored (its checks and token counts too),
    a start must not pay litellm's import (~3 s). Its local models' tiktoken encodings are learned by the
    first count, so a first load into another store (same user cache) does not import it either."""
    code = ("import sys\nfrom lib.cli import main\ntry:\n    main(['demo'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\nprint('litellm' in sys.modules)")
    env = {**os.environ, "DATABASE_URL": db_url, "REVIEW_CACHE_DIR": str(tmp_path / "fresh-cache")}
    other_store = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    runs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=e, capture_output=True, text=True,
                           timeout=180) for e in (env, env, other_store)]
    assert all(p.returncode == 0 for p in runs), [p.stderr for p in runs]
    # the first load counts tokens through litellm; later starts read them back; another store's first load
    # counts them with the learned encodings
    assert [p.stdout.strip().splitlines()[-1] for p in runs] == ["True", "False", "False"]


@pytest.mark.slow
def test_cli_recording_export_then_import_into_another_store(db_url: str, tmp_path: Path) -> None:
    assert _cli(db_url, "demo").returncode == 0
    out = tmp_path / "rec.jsonl"
    exported = _cli(db_url, "recording", "export", demo_comparison_name(), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert out.read_text().splitlines()[1:] == RECORDING_FILE.read_text().splitlines()[1:]
    other = f"sqlite:///{tmp_path / 'other.db'}"
    imported = _cli(other, "recording", "import", str(out), "--dataset", str(DATASET_FILE), "--name", "copy")
    assert imported.returncode == 0, imported.stderr
    assert "imported comparison 'copy'" in imported.stdout


@pytest.mark.slow
def test_cli_recording_import_of_a_malformed_file_exits_2_with_the_line(db_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = RECORDING_FILE.read_text().splitlines()
    bad.write_text("\n".join([lines[0], lines[1], "{oops"]) + "\n")
    proc = _cli(db_url, "recording", "import", str(bad), "--dataset", str(DATASET_FILE))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: bad.jsonl, line 3:") and "Traceback" not in proc.stderr
    assert json.loads(_cli(db_url, "list", "--json").stdout) == []
