"""The fixed cost of `./review run` at N cases x 2 models: from process start to the first call, and from
the last response to exit, measured against the local test server (run in this process; its request
log has the arrival times, on the same monotonic clock as the child's start and exit).

    .venv/bin/python bench/run_fixed_cost.py [--cases 1000] [--latency 0.2] [--concurrency 32] [--runs 3]
        [--phases]

--phases times the parts of the fixed cost in this process (CLI import, litellm import, the cost
estimate, preparing the store, the end-of-run checks) on the same store, so the total can be
attributed: measured, not guessed.

Measured (2 shared cores), 1000 x 2, latency 0.2, concurrency 32, per-side workers (auto):
- load average ~2: fixed 6.7 s = 6.0 s to the first call + 0.7 s after the last response (median of 2;
  calls 13.5 s, process 20.1 s). A phase trace of one run: CLI import 0.03 s; SQLAlchemy/SQLModel import
  and the store 0.76 s; the first cost estimate 3.7 s, nearly all of it litellm's import (2.4 s alone,
  slower here because the workers' fork server imports it at the same moment), the second 0.04 s;
  preparing the store and the calls 0.03 s; forking the workers to their first call 0.55 s. After the
  last response: the run's end records 0.01 s, the end-of-run checks 0.08 s, interpreter exit ~0.2 s.
- load average 10-12: fixed 26.1 s (23.5 s + 2.6 s), litellm's import 9.2 s alone.
The fixed cost is litellm's import, paid in this process for the cost estimate (prices, the token
counter) while the fork server pays it again for the workers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench.run_throughput import make_dataset  # noqa: E402
from lib.store.engine import get_engine  # noqa: E402
from tests.llm_server import LLMServer  # noqa: E402


def one_cli_run(db_url: str, server: LLMServer, args: argparse.Namespace, name: str) -> dict[str, float]:
    server.log.clear()
    env = {**os.environ, "DATABASE_URL": db_url}
    started = time.monotonic()
    proc = subprocess.run([str(ROOT / "review"), "run", "--dataset", "bench", "--baseline", "openai/bench-a",
                           "--candidate", "openai/bench-b", "--name", name, "--api-base", server.url,
                           "--concurrency", str(args.concurrency)], cwd=ROOT, env=env, capture_output=True, text=True)
    ended = time.monotonic()
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    arrivals = sorted(r.at for r in server.log)
    head = arrivals[0] - started
    tail = ended - (arrivals[-1] + args.latency)
    return {"total": ended - started, "head": head, "tail": tail, "fixed": head + tail,
            "calls": arrivals[-1] + args.latency - arrivals[0]}


def phases(db_url: str, args: argparse.Namespace) -> None:
    """Where the fixed time goes, each part timed in this process (a fresh interpreter per import figure)."""
    def child(code: str) -> float:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "DATABASE_URL": db_url})
        return float(out.stdout.strip().splitlines()[-1])

    t = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"
    print(f"  import lib.cli + register commands: {child(t.format('from lib.cli import _register; _register()')):.2f}s")
    print(f"  import lib.run.runner (sqlalchemy, sqlmodel): {child(t.format('import lib.run.runner')):.2f}s")
    print(f"  import litellm (configured): {child(t.format('from lib.run import llm; llm.litellm_module()')):.2f}s")
    from lib.run import llm
    from lib.run.runner import ModelSpec, estimate_cost

    llm.litellm_module()
    engine = get_engine(db_url)
    for model in ("openai/bench-a", "gpt-4o-mini"):
        started = time.perf_counter()
        estimate_cost(engine, "bench", ModelSpec(model))
        print(f"  cost estimate, one side, {args.cases} cases, {model}: {time.perf_counter() - started:.2f}s")
    from lib.review.checked import ensure_checked

    started = time.perf_counter()
    ensure_checked(engine, "run-0")
    print(f"  end-of-run checks (already stored: a no-op re-check): {time.perf_counter() - started:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--phases", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LLMServer(latency=args.latency) as server:
        db_url = f"sqlite:///{tmp}/bench.db"
        make_dataset(get_engine(db_url), "bench", args.cases)
        figures = []
        for i in range(args.runs):
            fig = one_cli_run(db_url, server, args, f"run-{i}")
            figures.append(fig)
            print(f"run {i + 1}: process {fig['total']:.2f}s = start to first call {fig['head']:.2f}s + calls "
                  f"{fig['calls']:.2f}s + last response to exit {fig['tail']:.2f}s; load {os.getloadavg()[0]:.2f}")
        med = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
        print(f"median of {args.runs}: fixed {med['fixed']:.2f}s (head {med['head']:.2f}s, tail {med['tail']:.2f}s), "
              f"calls {med['calls']:.2f}s, process {med['total']:.2f}s")
        if args.phases:
            phases(db_url, args)


if __name__ == "__main__":
    main()
