"""The fixed cost of `./review run` at N cases x 2 models: from process start to the first call, and from
the last response to exit, and where it goes, as medians of several runs.

    .venv/bin/python bench/run_fixed_cost.py [--cases 1000] [--latency 0.2] [--concurrency 32] [--runs 5]

Each run is the real command (`./review run ...`, worker per side at this size) against the local test
server in this process; the server's request log gives the first call's arrival and the last response, on
the same monotonic clock as the child's start and exit. The breakdown comes from the same runs:
bench/fixed_cost_trace/ is put on the child's PYTHONPATH, and records when the CLI's phases start and end
(the functions named there are wrapped as they are imported; lib/ is unchanged). The parts:

- start to first call: process start to the CLI's `main` (interpreter, `./review`'s check, the CLI's
  import) | to the command's body (option parsing; the workers' fork server asked for, from a read of the
  store without SQLAlchemy; the runner's imports) | opening the store (SQLAlchemy, SQLModel, the tables)
  and counting the cases | the cost estimate of both sides | quota lines | preparing the comparison
  (configs, runs, audit events) | from there to the first request arriving (the jobs, waiting for the
  fork server, forking the workers). Meanwhile the fork server imports litellm: when it was asked for,
  began and was ready is shown from process start.
- during the calls: the checks' imports (litellm, pandas, pyarrow) on a thread of the CLI process.
- last response to exit: to the end of the calls (workers finishing) | the run's end records | importing
  the checks (nothing left when the thread finished) | the end-of-run checks (lib/review/checked.py) |
  the summary | interpreter exit.

Workers come from the resident worker host (lib/run/resident.py), in a runtime directory of the bench's
own: the first run starts it (cold: litellm's import is on its path) and is shown on its own line; the
medians are of the later runs, which reuse it (what every run but the first of a session costs). With
--no-resident every run starts its own fork server (REVIEW_RESIDENT=0), as before the host existed.

With --reference, the same calls from a bare aiohttp client follow each run (what the machine allowed at
that moment, apart from litellm and the runner): the run's calls phase is compared with it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import ROOT, bare_client_wall, make_dataset  # noqa: E402
from lib.run import resident  # noqa: E402
from lib.store.engine import get_engine  # noqa: E402
from tests.llm_server import LLMServer  # noqa: E402

TRACE_DIR = ROOT / "bench" / "fixed_cost_trace"
# (label, from, to), contiguous: trace events are "function:start|end" (the estimate's "#0"/"#1": one per
# side); "spawn", "first_call", "last_response" and "exited" are measured here.
HEAD = (("interpreter, ./review's check, CLI import", "spawn", "main:start"),
        ("options; fork server asked for; runner imports", "main:start", "model_spec:start"),
        ("open the store (SQLAlchemy, tables), count cases", "model_spec:start", "estimate_cost:start#0"),
        ("cost estimate (both sides)", "estimate_cost:start#0", "estimate_cost:end#1"),
        ("quota lines, run lock", "estimate_cost:end#1", "_prepare:start"),
        ("prepare the comparison in the store", "_prepare:start", "_prepare:end"),
        ("jobs; wait for the fork server; fork workers", "_prepare:end", "first_call"))
FORK_SERVER = (("fork server asked for (warm_up)", "spawn", "warm_up:start"),
               ("fork server starts its preload", "spawn", "fork_server_preload:start"),
               ("fork server ready (litellm imported, warm)", "spawn", "fork_server_preload:end"))
DURING_CALLS = (("the checks' imports, on a thread (took)", "_import_for_checks:start", "_import_for_checks:end"),
                ("  ... ended before the last response by", "_import_for_checks:end", "last_response"))
TAIL = (("workers finishing", "last_response", "_execute:end"),
        ("run end records", "_execute:end", "_finish:end"),
        ("import the checks", "_finish:end", "ensure_checked:start"),
        ("end-of-run checks (lib/review/checked.py)", "ensure_checked:start", "ensure_checked:end"),
        ("summary", "ensure_checked:end", "_summary:end"),
        ("interpreter exit", "_summary:end", "exited"))


def _events(path: Path) -> dict[str, float]:
    """Every `name:kind` at its first time, and `name:kind#i` at its i-th."""
    seen: dict[str, int] = {}
    out: dict[str, float] = {}
    for line in path.read_text().splitlines():
        name, kind, at = json.loads(line)
        key = f"{name}:{kind}"
        i = seen.get(key, 0)
        seen[key] = i + 1
        out[f"{key}#{i}"] = at
        out.setdefault(key, at)
    return out


def one_run(db_url: str, server: LLMServer, args: argparse.Namespace, name: str, trace: Path,
            skip_check_imports: bool = False) -> dict[str, float]:
    server.log.clear()
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(TRACE_DIR), "REVIEW_TRACE_FILE": str(trace),
           "REVIEW_TRACE_SKIP": "_import_for_checks" if skip_check_imports else "",
           "REVIEW_RUNTIME_DIR": str(Path(db_url.removeprefix("sqlite:///")).parent / "runtime"),
           "REVIEW_CACHE_DIR": str(Path(db_url.removeprefix("sqlite:///")).parent / "cache"),
           "REVIEW_RESIDENT": "0" if args.no_resident else "1"}
    started = time.monotonic()
    proc = subprocess.run([str(ROOT / "review"), "run", "--dataset", "bench", "--baseline", "openai/bench-a",
                           "--candidate", "openai/bench-b", "--name", name, "--api-base", server.url,
                           "--concurrency", str(args.concurrency)], cwd=ROOT, env=env, capture_output=True, text=True)
    ended = time.monotonic()
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    arrivals = sorted(r.at for r in server.log)
    at = {"spawn": started, "first_call": arrivals[0], "last_response": arrivals[-1] + args.latency,
          "exited": ended, **_events(trace)}
    fig = {"process": ended - started, "head": at["first_call"] - started, "tail": ended - at["last_response"],
           "calls": at["last_response"] - at["first_call"]}
    fig["fixed"] = fig["head"] + fig["tail"]
    for label, start, end in HEAD + FORK_SERVER + DURING_CALLS + TAIL:
        fig[label] = at[end] - at[start] if start in at and end in at else math.nan  # nan: that phase did not run
    return fig


def ab_check_imports(args: argparse.Namespace) -> None:
    """What importing the checks during the calls costs the calls and saves the tail: runs alternate."""
    with tempfile.TemporaryDirectory() as tmp, LLMServer(latency=args.latency) as server:
        db_url = f"sqlite:///{tmp}/bench.db"
        make_dataset(get_engine(db_url), "bench", args.cases)
        results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        try:
            for i in range(args.runs):
                for skip in (False, True):
                    fig = one_run(db_url, server, args, f"run-{i}-{skip}", Path(tmp) / f"trace-{i}-{skip}.json", skip)
                    fig["bare client"] = bare_client_wall(server.url, 2 * args.cases, args.concurrency)
                    results[skip].append(fig)
                    print(f"run {i + 1}, check imports {'after' if skip else 'during'} the calls: calls "
                          f"{fig['calls']:.2f}s (bare client {fig['bare client']:.2f}s), tail {fig['tail']:.2f}s; "
                          f"load {os.getloadavg()[0]:.2f}")
        finally:
            _stop_host(Path(tmp) / "runtime")
        for skip, figs in results.items():
            ratio = statistics.median(f["calls"] / f["bare client"] for f in figs)
            print(f"median, check imports {'after' if skip else 'during'} the calls: calls / bare client {ratio:.3f}, "
                  f"tail {statistics.median(f['tail'] for f in figs):.2f}s, "
                  f"process {statistics.median(f['process'] for f in figs):.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reference", action="store_true", help="a bare aiohttp client's wall after each run")
    parser.add_argument("--no-resident", action="store_true",
                        help="every run starts its own fork server (REVIEW_RESIDENT=0), as before the resident host")
    parser.add_argument("--ab-check-imports", action="store_true",
                        help="alternate runs with and without the checks' imports during the calls; medians of each")
    args = parser.parse_args()
    if args.ab_check_imports:
        ab_check_imports(args)
        return
    with tempfile.TemporaryDirectory() as tmp, LLMServer(latency=args.latency) as server:
        db_url = f"sqlite:///{tmp}/bench.db"
        make_dataset(get_engine(db_url), "bench", args.cases)
        try:
            figures = [_run_and_print(db_url, server, args, i, Path(tmp)) for i in range(args.runs)]
        finally:
            _stop_host(Path(tmp) / "runtime")
    if not args.no_resident and len(figures) > 1:
        print(f"run 1 started the resident worker host: fixed {figures[0]['fixed']:.2f}s (start to first call "
              f"{figures[0]['head']:.2f}s); the medians below are of runs 2-{args.runs}, which reused it")
        figures = figures[1:]
    _print_medians(figures, args)


def _run_and_print(db_url: str, server: LLMServer, args: argparse.Namespace, i: int, tmp: Path) -> dict[str, float]:
    fig = one_run(db_url, server, args, f"run-{i}", tmp / f"trace-{i}.json")
    if args.reference:
        fig["bare client"] = bare_client_wall(server.url, 2 * args.cases, args.concurrency)
    print(f"run {i + 1}: process {fig['process']:.2f}s = start to first call {fig['head']:.2f}s + calls "
          f"{fig['calls']:.2f}s + last response to exit {fig['tail']:.2f}s; load {os.getloadavg()[0]:.2f}"
          + (f"; bare client {fig['bare client']:.2f}s" if args.reference else ""))
    return fig


def _stop_host(runtime: Path) -> None:
    os.environ["REVIEW_RUNTIME_DIR"] = str(runtime)  # the host the runs started (same code and settings)
    os.environ["PYTHONPATH"] = str(TRACE_DIR)
    if runtime.is_dir():
        resident.ask("exit")


def _print_medians(figures: list[dict[str, float]], args: argparse.Namespace) -> None:
    med = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
    print(f"median of {len(figures)} ({args.cases} cases x 2, latency {args.latency}s, concurrency "
          f"{args.concurrency}): fixed {med['fixed']:.2f}s = start to first call {med['head']:.2f}s + last "
          f"response to exit {med['tail']:.2f}s; calls {med['calls']:.2f}s; process {med['process']:.2f}s")
    if args.reference:
        print(f"  calls / bare client, same traffic: {med['calls']:.2f}s / {med['bare client']:.2f}s = "
              f"{statistics.median(f['calls'] / f['bare client'] for f in figures):.3f}")
    print("start to first call, medians:")
    for label, *_ in HEAD:
        print(f"  {label:<50} {med[label]:6.2f}s")
    if not all(math.isnan(med[label]) for label, *_ in FORK_SERVER[1:]):
        print("  meanwhile, from process start:")
        for label, *_ in FORK_SERVER:
            print(f"    {label:<48} {med[label]:6.2f}s")
    print("during the calls:")
    for label, *_ in DURING_CALLS:
        print(f"  {label:<50} {med[label]:6.2f}s")
    print("last response to exit, medians:")
    for label, *_ in TAIL:
        print(f"  {label:<50} {med[label]:6.2f}s")


if __name__ == "__main__":
    main()
