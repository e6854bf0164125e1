"""Tools in a model configuration: the --tools file (CLI, monitor, redteam) and the Run page send them
with every request, the stored configuration keeps them, and tool-call replies are stored as stable JSON.
Real HTTP through litellm to tests/llm_server.py, a real SQLite file, AppTest for the page."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from lib.errors import ReviewInputError
from lib.review.checks.structured import pair_changes
from lib.run.runner import ModelSpec, RunOptions, run_comparison
from lib.run.tools_spec import ToolsFileError, load_tools, parse_tools
from lib.store.columns import from_json, to_json
from lib.store.engine import session_scope
from lib.store.entities import Case, Comparison, Dataset, ModelConfig, Output, Run
from tests.llm_server import LLMServer

ROOT = Path(__file__).resolve().parent.parent
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                   "required": ["city"]}}}
NOW = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
TOOLS = [WEATHER, NOW]


def make_dataset(engine: Engine, n: int = 3) -> list[str]:
    prompts = [f"tools question {i}" for i in range(n)]
    with session_scope(engine) as session:
        ds = Dataset(name="golden", version=1, content_hash=f"golden-{n}", n_cases=n)
        session.add(ds)
        session.flush()
        session.add_all(Case(dataset_id=ds.id, case_key=f"c{i}", position=i, input_text=p)
                        for i, p in enumerate(prompts))
    return prompts


def write_tools(tmp_path: Path, content: Any, name: str = "tools.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def cli(db_url: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    env.pop("REVIEW_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "lib", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


def run_args(server: LLMServer, tools: Path, name: str = "tooled") -> list[object]:
    return ["run", "--dataset", "golden", "--baseline", "openai/base", "--candidate", "openai/cand",
            "--name", name, "--api-base", server.url, "--max-retries", "0", "--tools", tools]


def stored(engine: Engine, comparison: str) -> dict[str, tuple[ModelConfig, dict[str, Output]]]:
    """Per side: its configuration and its outputs by prompt."""
    with Session(engine) as session:
        comp = session.exec(select(Comparison).where(Comparison.name == comparison)).one()
        sides = {}
        for side, run_id in (("baseline", comp.baseline_run_id), ("candidate", comp.candidate_run_id)):
            cfg = session.get(ModelConfig, session.get(Run, run_id).config_id)
            rows = session.exec(select(Output, Case.input_text).join(Case, Case.id == Output.case_id)
                                .where(Output.run_id == run_id)).all()
            sides[side] = (cfg, {prompt: out for out, prompt in rows})
        return sides


# ---- the file -------------------------------------------------------------------------------------
BAD_TOOLS = [
    ("not json", '[{"type": "function",', "line 1: is not JSON"),
    ("not a list", {"tools": TOOLS}, "must be a JSON list of tool definitions, not an object"),
    ("empty", [], "is an empty list"),
    ("entry not an object", [WEATHER, "now"], "field '[1]' must be an object, not a string"),
    ("no type", [WEATHER, {"function": NOW["function"]}], "field '[1].type' must be \"function\" (it is missing)"),
    ("other type", [{**WEATHER, "type": "web_search"}], "field '[0].type' must be \"function\" (it is \"web_search\")"),
    ("flat format", [{"type": "function", "name": "now"}], "field '[0].function' must be an object"),
    ("no name", [WEATHER, {"type": "function", "function": {"description": "x"}}],
     "field '[1].function.name' is required"),
    ("bad name", [{"type": "function", "function": {"name": "get weather"}}],
     "field '[0].function.name' must be 1-64 letters"),
    ("duplicate name", [WEATHER, NOW, WEATHER],
     "field '[2].function.name' repeats 'get_weather', the name of entry [0]"),
    ("typo", [{"type": "function", "function": {"name": "now", "parameter": {}}}],
     "field '[0].function.parameter' is not a known key"),
    ("schema not an object", [{"type": "function", "function": {"name": "now", "parameters": {"type": "string"}}}],
     "field '[0].function.parameters' must describe an object"),
    ("invalid schema", [{"type": "function", "function": {"name": "now", "parameters": {
        "type": "object", "properties": {"x": {"type": "strnig"}}}}}],
     "field '[0].function.parameters.properties.x.type' is not a valid JSON Schema"),
]


@pytest.mark.parametrize("content, expected", [(c, e) for _, c, e in BAD_TOOLS], ids=[i for i, _, _ in BAD_TOOLS])
def test_invalid_tool_definitions_are_refused_naming_the_source_and_entry(content: Any, expected: str) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    with pytest.raises(ToolsFileError) as info:
        parse_tools(text, "my-tools.json")
    assert isinstance(info.value, ReviewInputError)
    assert str(info.value).startswith("my-tools.json") and expected in str(info.value), str(info.value)


def test_valid_tools_are_returned_as_given(tmp_path: Path) -> None:
    assert load_tools(write_tools(tmp_path, TOOLS)) == TOOLS
    assert parse_tools(b"\xef\xbb\xbf" + json.dumps(TOOLS).encode(), "bom.json") == TOOLS  # a BOM is fine
    with pytest.raises(ToolsFileError, match="absent.json: no such file"):
        load_tools(tmp_path / "absent.json")


@pytest.mark.slow
@pytest.mark.parametrize("content, expected", [
    ([WEATHER, {"type": "function", "function": {"description": "x"}}], "field '[1].function.name' is required"),
    ([WEATHER, WEATHER], "field '[1].function.name' repeats 'get_weather'"),
    ('{"a": ', "line 1: is not JSON"),
])
def test_cli_bad_tools_file_exits_2_with_one_line_and_sends_nothing(db_url: str, engine, llm_server: LLMServer,
                                                                    tmp_path: Path, content: Any,
                                                                    expected: str) -> None:
    make_dataset(engine)
    path = write_tools(tmp_path, content)
    proc = cli(db_url, *run_args(llm_server, path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and expected in lines[0], proc.stderr
    assert llm_server.log == []
    with Session(engine) as session:
        assert session.exec(select(Comparison)).all() == []


@pytest.mark.slow
def test_cli_missing_tools_file_exits_2_with_one_line(db_url: str, tmp_path: Path) -> None:
    proc = cli(db_url, "run", "--dataset", "golden", "--baseline", "openai/a", "--candidate", "openai/b",
               "--name", "x", "--tools", tmp_path / "nope.json")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope.json'}: no such file"]


# ---- runs -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_run_sends_the_tools_in_every_request_on_both_sides_and_stores_them(
        db_url: str, engine, llm_server: LLMServer, tmp_path: Path) -> None:
    prompts = make_dataset(engine)
    llm_server.script_tool_calls([("get_weather", {"city": "Paris"})], contains=prompts[0], model="base")
    llm_server.script_tool_calls([("get_weather", {"unit": "C", "city": "Paris"})], contains=prompts[0], model="cand")
    path = write_tools(tmp_path, TOOLS)
    proc = cli(db_url, *run_args(llm_server, path))
    assert proc.returncode == 0, proc.stderr

    assert {r.model for r in llm_server.log} == {"base", "cand"} and len(llm_server.log) == 6
    assert all(r.body["tools"] == TOOLS and "tool_choice" not in r.body for r in llm_server.log)
    sides = stored(engine, "tooled")
    for cfg, outs in sides.values():
        assert from_json(cfg.tools_json) == TOOLS and cfg.tools_json == to_json(TOOLS)
        assert set(outs) == set(prompts) and all(o.error is None for o in outs.values())
    base, cand = sides["baseline"][1][prompts[0]], sides["candidate"][1][prompts[0]]
    assert json.loads(base.text) == {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}
    assert base.finish_reason == "tool_calls" and "call_" in base.raw_json  # raw_json keeps the full reply
    assert json.loads(pair_changes(base.text, cand.text)), "the contract diff sees the added argument"
    assert "unit" in pair_changes(base.text, cand.text)
    assert not sides["baseline"][1][prompts[1]].text.startswith("{")  # text replies stay text

    again = cli(db_url, *run_args(llm_server, path))  # same tools: the same configuration, nothing resent
    assert again.returncode == 0 and len(llm_server.log) == 6, again.stderr
    other = write_tools(tmp_path, [WEATHER], "fewer.json")
    changed = cli(db_url, *run_args(llm_server, other))
    errors = [line for line in changed.stderr.splitlines() if line.startswith("error: ")]
    assert changed.returncode == 2 and len(errors) == 1, changed.stderr  # after run's estimate lines
    assert "different baseline configuration (tools_json" in errors[0] and len(llm_server.log) == 6


def test_tool_call_replies_are_stored_as_stable_json(engine, llm_server: LLMServer) -> None:
    prompts = make_dataset(engine)
    for model in ("base", "cand"):  # the same calls on both sides; the server gives them different ids
        llm_server.script_tool_calls([("get_weather", {"city": "Oslo"}), ("now", "")], contains=prompts[0],
                                     model=model)
    llm_server.script_tool_calls([("get_weather", '{"city": "Oslo"')], contains=prompts[1])  # invalid JSON
    specs = {side: ModelSpec(f"openai/{m}", api_base=llm_server.url, tools=TOOLS)
             for side, m in (("baseline", "base"), ("candidate", "cand"))}
    result = run_comparison(engine, dataset="golden", name="calls", options=RunOptions(max_retries=0), **specs)
    assert result.status == "complete"

    sides = stored(engine, "calls")
    base, cand = sides["baseline"][1], sides["candidate"][1]
    assert base[prompts[0]].text == cand[prompts[0]].text == json.dumps(
        {"tool_calls": [{"arguments": {"city": "Oslo"}, "name": "get_weather"}, {"arguments": {}, "name": "now"}]})
    assert base[prompts[0]].raw_json != cand[prompts[0]].raw_json  # the ids differ there, not in the text
    assert pair_changes(base[prompts[0]].text, cand[prompts[0]].text) == "[]"
    invalid = {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Oslo"'}]}
    assert json.loads(base[prompts[1]].text) == invalid
    assert base[prompts[1]].error is None  # invalid arguments are the model's finding, not a failed call


@pytest.mark.slow
def test_monitor_and_redteam_take_tools_from_run(db_url: str, engine, llm_server: LLMServer,
                                                  tmp_path: Path) -> None:
    import typer.main

    from lib.cli import _register
    from lib.cli.app import app

    _register()
    commands = typer.main.get_command(app).commands
    assert "--tools" in {o for p in commands["redteam"].params for o in p.opts}

    make_dataset(engine)
    proc = cli(db_url, "monitor", "run", "--dataset", "golden", "--model", "openai/pinned",
               "--api-base", llm_server.url, "--max-retries", "0", "--tools", write_tools(tmp_path, TOOLS))
    assert proc.returncode == 0, proc.stderr
    assert len(llm_server.log) == 3 and all(r.body["tools"] == TOOLS for r in llm_server.log)
    bad = cli(db_url, "monitor", "run", "--dataset", "golden", "--model", "openai/pinned",
              "--tools", write_tools(tmp_path, [NOW, NOW], "dup.json"))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "[1].function.name" in bad.stderr


# ---- the Run page ---------------------------------------------------------------------------------
def run_page(server: LLMServer) -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    at.switch_page("pages/run.py").run()
    for side, model in (("baseline", "openai/base"), ("candidate", "openai/cand")):
        at.text_input(key=f"run_{side}_model").set_value(model)
        at.text_input(key=f"run_{side}_api_base").set_value(server.url)
    return at.run()


def test_run_page_sends_tools_from_the_text_box(engine, llm_server: LLMServer) -> None:
    make_dataset(engine)
    at = run_page(llm_server)
    at.text_area(key="run_tools_text").set_value(json.dumps([WEATHER, NOW, NOW])).run()
    assert any("[2].function.name" in e and "repeats 'now'" in e for e in _errors(at)), _errors(at)
    assert not _has_button(at, "run_start") and llm_server.log == []

    at.text_area(key="run_tools_text").set_value(json.dumps(TOOLS)).run()
    assert not at.error, [e.value for e in at.error]
    at.text_input(key="run_name").set_value("paged").run()
    assert _has_button(at, "run_start")
    at.button(key="run_start").click().run(timeout=120)
    assert not at.exception, at.exception
    assert len(llm_server.log) == 6 and all(r.body["tools"] == TOOLS for r in llm_server.log)
    assert all(from_json(cfg.tools_json) == TOOLS for cfg, _ in stored(engine, "paged").values())


def test_run_page_takes_a_tools_file_and_refuses_bad_ones(engine, llm_server: LLMServer) -> None:
    make_dataset(engine)
    at = run_page(llm_server)
    bad = json.dumps([{"type": "function", "function": {"name": "now", "parameter": {}}}]).encode()
    at.file_uploader(key="run_tools_upload").set_value(("mine.json", bad, "application/json")).run()
    assert any("mine.json: field '[0].function.parameter'" in e for e in _errors(at)), _errors(at)
    assert not _has_button(at, "run_start")

    at.text_area(key="run_tools_text").set_value(json.dumps(TOOLS)).run()  # text and a file: ambiguous
    assert any("not both" in e for e in _errors(at)) and not _has_button(at, "run_start")
    at.text_area(key="run_tools_text").set_value("").run()

    at.file_uploader(key="run_tools_upload").set_value(("mine.json", json.dumps([NOW]).encode(),
                                                        "application/json")).run()
    assert not at.error, [e.value for e in at.error]
    at.text_input(key="run_name").set_value("uploaded").run()
    assert _has_button(at, "run_start")
    at.button(key="run_start").click().run(timeout=120)
    assert not at.exception, at.exception
    assert len(llm_server.log) == 6 and all(r.body["tools"] == [NOW] for r in llm_server.log)
    assert all(from_json(cfg.tools_json) == [NOW] for cfg, _ in stored(engine, "uploaded").values())


def _errors(at: AppTest) -> list[str]:
    """The page's error messages without their markdown escapes (file names and paths are escaped)."""
    return [e.value.replace("\\", "") for e in at.error]


def _has_button(at: AppTest, key: str) -> bool:
    return any(b.key == key for b in at.button)
