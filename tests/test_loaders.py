"""Recorded comparisons: promptfoo (v3, v2, JSONL), wide and long files, pairing and bad input."""
from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from conftest import FIXTURES
from sqlalchemy import func
from sqlmodel import Session, select

from lib.data.golden import import_dataset
from lib.data.loaders import LoadMapping, detect_format, load_recorded
from lib.errors import RecordedLoadError
from lib.review.comparisons import list_comparisons, load_pairs
from lib.run.runner import ModelSpec, config_id
from lib.store.columns import from_json
from lib.store.entities import Case, Comparison, Dataset, ModelConfig, Output, Run

SECRET = "sk-test-FAKE-9f8e7d6c5b4a3e2d1c0b"  # the fake key in the promptfoo fixtures' config
TABLES = (Dataset, Case, ModelConfig, Run, Output, Comparison)
LONG_SIDES = LoadMapping(baseline="gpt-4o-2024-08-06", candidate="gpt-4.1-2025-04-14")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def load(engine, name: str, mapping: LoadMapping | None = None, fmt: str | None = None, as_name: str = "cmp"):
    return load_recorded(engine, fixture(name), name, as_name, fmt, mapping)


def counts(engine) -> dict[str, int]:
    with Session(engine) as s:
        return {t.__name__: s.exec(select(func.count(t.id))).one() for t in TABLES}


def pairs(engine, name: str = "cmp") -> pd.DataFrame:
    return load_pairs(engine, name).set_index(["case_key", "repeat"])


# ---------------------------------------------------------------- promptfoo

def test_promptfoo_v3_pairs_on_test_and_prompt_and_splits_by_provider(engine) -> None:
    res = load(engine, "promptfoo_v3.json")
    assert (res.fmt, res.baseline, res.candidate) == ("promptfoo", "openai:gpt-4o-mini", "openai:gpt-4.1-mini")
    assert "order of first appearance" in res.warnings[0]
    assert (res.n_pairs, res.baseline_only, res.candidate_only, res.first_unpaired_ids) == (3, 1, 0, ["test-3"])

    df = pairs(engine)
    refund = df.loc[("test-0", 0)]
    assert refund.input_text.startswith("You are Acme's support assistant.")  # prompt.raw, rendered
    assert refund.input_text.endswith("Customer: How many days do I have to request a refund?")
    assert (refund.expected, refund.match, refund.category) == ("30 days", "exact", "billing")
    assert (refund.b_text, refund.b_latency_s, refund.b_prompt_tokens, refund.b_completion_tokens) == (
        "30 days", 0.812, 38, 3)
    assert refund.c_cost_usd == pytest.approx(0.000052)

    french = df.loc[("test-1", 0)]
    assert (french.expected, french.match) == ("Bonjour", "contains")
    # failureReason 1: `error` is the grader's reason, not a model error
    assert french.c_text == "Hello! (In French: salut)" and french.c_error is None

    order = df.loc[("test-2", 0)]
    assert order.b_text is None and "429 Too Many Requests" in order.b_error and order.b_error_kind == "other"
    assert json.loads(order.c_text) == {"order_id": "A-1001", "status": "shipped"}  # non-string output
    assert order.expected is None and order.match is None  # is-json / llm-rubric state no expected value

    unpaired = df.loc[("test-3", 0)]
    assert unpaired.b_text.startswith("We are open") and pd.isna(unpaired.c_text)
    with Session(engine) as s:
        case = s.exec(select(Case).where(Case.case_key == "test-1")).one()
    assert from_json(case.metadata_json) == {"description": "Greets in French"}


def test_promptfoo_config_secrets_never_reach_the_store(engine, tmp_path: Path) -> None:
    assert SECRET.encode() in fixture("promptfoo_v3.json")  # the test can fail
    for name in ("promptfoo_v3.json", "promptfoo_v2.json", "promptfoo.jsonl"):
        load_recorded(engine, fixture(name), name, name, None, None)
    engine.dispose()  # close connections so the WAL is checkpointed into the file
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("review.db*"))
    assert b"openai:gpt-4.1-mini" in stored and SECRET.encode() not in stored
    assert b"sk-test" not in stored


def test_promptfoo_baseline_and_candidate_can_be_chosen(engine) -> None:
    res = load(engine, "promptfoo_v3.json",
               LoadMapping(baseline="openai:gpt-4.1-mini", candidate="openai:gpt-4o-mini"))
    assert (res.baseline, res.candidate, res.warnings) == ("openai:gpt-4.1-mini", "openai:gpt-4o-mini", [])
    assert (res.baseline_only, res.candidate_only) == (0, 1)
    assert pairs(engine).loc[("test-2", 0)].c_error.startswith("API error: 429")


def test_promptfoo_v2_table(engine) -> None:
    res = load(engine, "promptfoo_v2.json")
    assert (res.fmt, res.baseline, res.candidate, res.n_pairs) == (
        "promptfoo", "openai:gpt-4o-mini", "openai:gpt-4.1-mini", 3)
    df = pairs(engine)
    # the cell of a failed assertion carries "reason\n---\noutput": only the output is kept
    assert df.loc[("test-1", 0)].c_text == "Hello! (In French: salut)"
    assert df.loc[("test-1", 0)].expected == "Bonjour"
    assert "429" in df.loc[("test-2", 0)].b_error and df.loc[("test-2", 0)].b_text is None
    assert df.loc[("test-0", 0)].b_latency_s == 0.812 and df.loc[("test-0", 0)].category == "billing"


def test_promptfoo_jsonl_including_results_written_back_to_back(engine) -> None:
    lines = fixture("promptfoo.jsonl").decode().splitlines()
    assert lines[-1].count('"testIdx"') == 2  # older promptfoo: two results on one line
    res = load(engine, "promptfoo.jsonl")
    assert (res.n_pairs, res.baseline_only, res.first_unpaired_ids) == (3, 1, ["test-3"])
    assert pairs(engine).loc[("test-2", 0)].c_text == json.dumps({"order_id": "A-1001", "status": "shipped"})


def test_promptfoo_repeats_and_multiple_prompts(engine) -> None:
    doc = json.loads(fixture("promptfoo_v3.json"))
    first = [r for r in doc["results"]["results"] if r["testIdx"] == 0]
    second_prompt = [{**r, "promptIdx": 1, "response": {"output": "thirty"}} for r in first]
    repeat = [{**r, "response": {"output": "30 days!"}} for r in first]
    doc["results"]["results"] += second_prompt + repeat
    res = load_recorded(engine, json.dumps(doc).encode(), "results.json", "cmp")
    assert res.n_pairs == 3 + 1 + 1
    df = pairs(engine)
    assert df.loc[("test-0-prompt-1", 0)].b_text == "thirty"
    assert df.loc[("test-0-prompt-0", 1)].c_text == "30 days!"


def test_promptfoo_three_providers_need_a_choice(engine) -> None:
    doc = json.loads(fixture("promptfoo_v3.json"))
    extra = {**doc["results"]["results"][0], "provider": {"id": "anthropic:claude-3-5-haiku", "label": ""}}
    doc["results"]["results"].append(extra)
    data = json.dumps(doc).encode()
    with pytest.raises(RecordedLoadError, match="which is the baseline.*'anthropic:claude-3-5-haiku'"):
        load_recorded(engine, data, "results.json", "cmp")
    res = load_recorded(engine, data, "results.json", "cmp",
                        mapping=LoadMapping(baseline="openai:gpt-4o-mini",
                                            candidate="anthropic:claude-3-5-haiku"))
    assert res.n_pairs == 1 and "ignored rows of other providers: openai:gpt-4.1-mini" in res.warnings


# ---------------------------------------------------------------- wide and long

def test_wide_csv_with_per_side_metrics_and_an_unanswered_case(engine) -> None:
    res = load(engine, "wide.csv", LoadMapping(baseline="gpt-4o-mini", candidate="gpt-4.1-mini"))
    assert (res.fmt, res.n_pairs, res.baseline_only, res.candidate_only, res.first_unpaired_ids) == (
        "wide", 3, 1, 0, ["q4"])
    assert res.warnings == []
    df = pairs(engine)
    q1 = df.loc[("q1", 0)]
    assert (q1.input_text, q1.expected, q1.category) == ("What is the capital of France?", "Paris", "geography")
    assert (q1.b_text, q1.c_text) == ("Paris", "Paris is the capital of France.")
    assert (q1.b_latency_s, q1.c_latency_s, q1.b_cost_usd) == (0.812, 0.64, 0.00021)  # *_ms -> seconds
    assert df.loc[("q3", 0)].c_text == "¡Gracias!" and pd.isna(df.loc[("q4", 0)].c_text)


def test_wide_names_models_after_chosen_columns_and_applies_one_rule(engine) -> None:
    data = b"qid,question,gpt-4o,gpt-4.1,gold\n1,2+2?,4,4,4\n2,3+3?,6,six,6\n3,Say hi,hi,hello,\n"
    mapping = LoadMapping(id_col="qid", input_col="question", baseline_col="gpt-4o", candidate_col="gpt-4.1",
                          expected_col="gold", match="numeric")
    res = load_recorded(engine, data, "answers.csv", "cmp", "wide", mapping)
    assert (res.baseline, res.candidate, res.n_pairs) == ("gpt-4o", "gpt-4.1", 3)
    assert res.warnings == ["1 cases have no expected value: match rule 'numeric' not applied to them"]
    df = pairs(engine)
    assert list(df["match"]) == ["numeric", "numeric", None] and df.loc[("2", 0)].c_text == "six"


def test_long_csv_pairs_on_key_with_repeats_and_reports_unpaired_rows(engine) -> None:
    res = load(engine, "long.csv", LONG_SIDES)
    assert (res.fmt, res.n_pairs, res.baseline_only, res.candidate_only) == ("long", 3, 2, 1)
    assert res.first_unpaired_ids == ["r-003", "r-004", "r-005"]
    df = pairs(engine)
    assert df.loc[("r-003", 1)].b_text == "Yes, shipping to Canada takes 5-7 days."  # second row = repeat 1
    assert pd.isna(df.loc[("r-003", 1)].c_text)
    assert pd.isna(df.loc[("r-005", 0)].b_text) and df.loc[("r-005", 0)].c_text == "Yes, until the order ships."
    r1 = df.loc[("r-001", 0)]
    assert (r1.b_latency_s, r1.b_prompt_tokens, r1.c_completion_tokens, r1.c_cost_usd) == (0.91, 42, 13, 0.00019)
    with Session(engine) as s:
        comp = s.exec(select(Comparison)).one()
        base_run = s.get(Run, comp.baseline_run_id)
        out = s.exec(select(Output).where(Output.run_id == comp.candidate_run_id)).first()
        report = from_json(comp.notes_json)
    assert (base_run.source, base_run.status, base_run.repeats) == ("recorded", "recorded", 2)
    assert out.logged_at.replace(tzinfo=UTC) == datetime(2025, 3, 1, 9, 0, 2, tzinfo=UTC)
    assert comp.source == "long" and report["baseline_only"] == 2 and report["file"] == "long.csv"


def test_long_without_sides_asks_which_is_which(engine) -> None:
    with pytest.raises(RecordedLoadError) as info:
        load(engine, "long.csv")
    message = str(info.value)
    assert "which is the baseline" in message
    assert "--baseline" in message
    # each model with its row count and first/last timestamp, never an order guessed
    assert "'gpt-4.1-2025-04-14' (4 rows, 2025-03-01T09:00:02+00:00 .. 2025-03-01T09:04:00+00:00)" in message
    assert "'gpt-4o-2024-08-06' (" in message
    # naming one side is enough when there are two values
    res = load(engine, "long.csv", LoadMapping(candidate="gpt-4o-2024-08-06"))
    assert (res.baseline, res.candidate) == ("gpt-4.1-2025-04-14", "gpt-4o-2024-08-06")


def test_long_without_id_pairs_on_input(engine) -> None:
    data = (b"model,prompt,response\nold,Hi there,Hello!\nnew,Hi there,Hey!\nold,Bye,Goodbye\n")
    res = load_recorded(engine, data, "log.csv", "cmp", mapping=LoadMapping(baseline="old", candidate="new"))
    assert (res.fmt, res.n_pairs, res.baseline_only) == ("long", 1, 1)
    assert any("paired on their input" in w for w in res.warnings)


def test_long_jsonl_with_epoch_timestamps_and_chat_inputs(engine) -> None:
    chat = [{"role": "user", "content": "Where is my order?"}]
    rows = [{"id": 7, "model": m, "input": chat, "output": f"from {m}", "timestamp": 1740819601}
            for m in ("a", "b")]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    load_recorded(engine, data, "log.jsonl", "cmp", mapping=LoadMapping(baseline="a", candidate="b"))
    with Session(engine) as s:
        case = s.exec(select(Case)).one()
        out = s.exec(select(Output)).first()
    assert case.case_key == "7" and json.loads(case.messages_json) == chat
    assert out.logged_at.replace(tzinfo=UTC) == datetime(2025, 3, 1, 9, 0, 1, tzinfo=UTC)


def test_loaded_comparisons_are_listed_and_their_model_configs_shared(engine) -> None:
    load(engine, "long.csv", LONG_SIDES, as_name="shadow-1")
    load(engine, "long.csv", LONG_SIDES, as_name="shadow-2")
    listed = {c["name"]: c for c in list_comparisons(engine)}
    assert set(listed) == {"shadow-1", "shadow-2"}
    first = listed["shadow-1"]
    assert (first["baseline"], first["candidate"], first["n_cases"], first["status"], first["source"]) == (
        "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14", 5, "recorded", "long")
    with Session(engine) as s:
        configs = s.exec(select(ModelConfig)).all()
    assert sorted(c.model for c in configs) == ["gpt-4.1-2025-04-14", "gpt-4o-2024-08-06"]
    cfg = next(c for c in configs if c.model == "gpt-4o-2024-08-06")
    # One hashing scheme: a recorded side is a live run of that model with every parameter at its default.
    assert cfg.config_hash == ModelSpec(cfg.model).config_hash()
    assert config_id(engine, ModelSpec("gpt-4o-2024-08-06")) == cfg.id


def test_a_load_stores_its_checks(engine) -> None:
    from lib.review.checked import CheckCounts, ensure_checked

    load(engine, "wide.csv", as_name="w")
    assert ensure_checked(engine, "w") == CheckCounts(0, 0)  # the load stored every check already


def test_recorded_dataset_is_versioned_like_golden_ones(engine) -> None:
    load(engine, "wide.csv", as_name="w")
    with Session(engine) as s:
        ds = s.exec(select(Dataset)).one()
    assert (ds.name, ds.version, ds.source, ds.n_cases) == ("w (recorded)", 1, "wide.csv", 4)


@pytest.mark.parametrize("name,expected", [
    ("promptfoo_v3.json", "promptfoo"), ("promptfoo_v2.json", "promptfoo"), ("promptfoo.jsonl", "promptfoo"),
    ("wide.csv", "wide"), ("long.csv", "long")])
def test_detect_format(name: str, expected: str) -> None:
    assert detect_format(fixture(name), name) == expected


# ---------------------------------------------------------------- bad input writes nothing

def _v3_with_version(version: object) -> bytes:
    doc = json.loads(fixture("promptfoo_v3.json"))
    doc["results"]["version"] = version
    return json.dumps(doc).encode()


BAD_LOADS = [
    # (filename, data, mapping, fmt, line, field, message fragment)
    ("long.csv", fixture("long.csv"), LoadMapping(model_col="engine", baseline="a", candidate="b"), None, 1,
     "model", "names column 'engine', which is not in the file; available columns: request_id, timestamp, model"),
    ("long.csv", fixture("long.csv"), LoadMapping(baseline="gpt-5", candidate="gpt-4o-2024-08-06"), None, None,
     "baseline", "is 'gpt-5', which is not among the model values"),
    ("log.csv", b"id,model,input,output,latency_ms\n1,a,q,x,12\n1,b,q,y,fast\n",
     LoadMapping(baseline="a", candidate="b"), None, 3, "latency_ms", "is 'fast', not a number"),
    ("log.csv", b"id,model,input,output,timestamp\n1,a,q,x,yesterday\n1,b,q,y,2025-01-01\n",
     LoadMapping(baseline="a", candidate="b", timestamp_col="timestamp"), None, 2, "timestamp",
     "is 'yesterday', not ISO 8601 or epoch"),
    ("log.csv", b"id,model,input,output,ts\n1,a,q,x,07/02/2023\n1,b,q,y,07/03/2023\n",
     LoadMapping(baseline="a", candidate="b", timestamp_col="ts", timestamp_format="%d/%m/%Y %H"), None, 2, "ts",
     "not a timestamp in the format '%d/%m/%Y %H'"),
    ("log.csv", b"id,model,input,output\n1,a,q,x\n2,b,q,y\n", LoadMapping(baseline="a", candidate="b"), None,
     None, None, "no pairs"),
    ("log.csv", b"id,model,input,output\n1,a,q,x\n1,,q,y\n", LoadMapping(baseline="a", candidate="b"), None,
     3, "model", "is empty"),
    ("log.csv", b"id,model,input,output\n1,a,,x\n1,b,,y\n", LoadMapping(baseline="a", candidate="b"), None,
     2, "input", "is missing"),
    ("log.csv", b"id,engine,input,output\n1,a,q,x\n", None, "long", 1, "model", "has no column"),
    ("log.csv", b"id,input,output\n1,q,x\n", None, None, None, None, "cannot tell the format"),
    ("answers.csv", b"id,input,old\n1,q,x\n", LoadMapping(baseline_col="old"), None, 1, "candidate_output",
     "pass --candidate-col"),
    ("log.jsonl", b'{"id": 1, "model": "a", "input": "q", "output": "x"}\n{"id": 1, "model": \n', None, "long",
     2, None, "invalid JSON"),
    ("results.json", _v3_with_version(4), None, None, None, "results.version",
     "is 4: only promptfoo results versions 2 and 3 are supported"),
    ("results.json", b'{"evalId": "x", "results": []}', None, "promptfoo", None, "results",
     "is missing: this is not a promptfoo results file"),
    ("results.jsonl", b'{"provider": {"id": "a"}, "testIdx": 0}\n{"testIdx": 1}\n', None, "promptfoo", 2, None,
     "is not a promptfoo result"),
    ("wide.csv", fixture("wide.csv"), LoadMapping(match="fuzzy"), None, None, "match", "unknown rule 'fuzzy'"),
    ("wide.csv", fixture("wide.csv"), LoadMapping(match="regex"), None, None, "pattern", "is required"),
    ("wide.csv", fixture("wide.csv"), None, "tall", None, "format", "unknown format 'tall'"),
    ("wide.txt", b"a,b\n", None, None, None, None, "unsupported file type '.txt'"),
]


@pytest.mark.parametrize("filename,data,mapping,fmt,line,field,fragment", BAD_LOADS)
def test_bad_load_names_file_line_field_and_writes_nothing(engine, filename, data, mapping, fmt, line, field,
                                                           fragment) -> None:
    load(engine, "promptfoo_v3.json", as_name="existing")
    import_dataset(engine, fixture("golden_support.json"), "golden_support.json", "golden")
    before = counts(engine)
    with pytest.raises(RecordedLoadError) as info:
        load_recorded(engine, data, filename, "new", fmt, mapping)
    err = info.value
    assert (err.source, err.line, err.field) == (filename, line, field)
    assert str(err).startswith(filename) and fragment in str(err)
    if line is not None:
        assert f", line {line}:" in str(err)
    assert counts(engine) == before


def test_existing_comparison_name_is_refused(engine) -> None:
    load(engine, "wide.csv", as_name="taken")
    before = counts(engine)
    with pytest.raises(RecordedLoadError, match="'taken' already exists; pick another name"):
        load(engine, "long.csv", LONG_SIDES, as_name="taken")
    assert counts(engine) == before


def test_failure_while_writing_rolls_everything_back(engine, monkeypatch) -> None:
    import lib.data.loaders.store as store

    def broken_rows(*args) -> list[dict]:
        raise RuntimeError("disk full")

    load(engine, "wide.csv", as_name="existing")
    before = counts(engine)
    monkeypatch.setattr(store, "_output_rows", broken_rows)
    with pytest.raises(RuntimeError, match="disk full"):
        load(engine, "long.csv", LONG_SIDES)
    assert counts(engine) == before


def test_100k_row_long_csv_loads_every_pair(engine) -> None:
    """Scale, not speed (bench/shadow_bench.py measures that)."""
    rng = random.Random(7)
    rows = ["request_id,timestamp,model,input,output,latency_ms,prompt_tokens,completion_tokens,cost_usd"]
    for i in range(50_000):
        for model in ("gpt-4o", "gpt-4.1"):
            rows.append(f"r{i},2025-03-01T09:{i % 60:02d}:00Z,{model},Where is order {i}?,"
                        f"Order {i} ships soon ({model}),{rng.randint(100, 900)},40,12,0.0001")
    data = "\n".join(rows).encode()
    res = load_recorded(engine, data, "shadow.csv", "big",
                        mapping=LoadMapping(baseline="gpt-4o", candidate="gpt-4.1"))
    assert res.n_pairs == 50_000 and counts(engine)["Output"] == 100_000
