"""Live-runner throughput: N cases x 2 models against the local test server.

The server runs in its own process (so it does not share the client's GIL) and answers every
request after L seconds. With C requests in flight the ideal wall time is 2*N*L/C; efficiency is
ideal / achieved. Each repetition is a new comparison in a temporary SQLite store.

    .venv/bin/python bench/run_throughput.py [--cases 1000] [--latency 0.2] [--concurrency 32]
        [--runs 3] [--workers auto|in-process|per-side|compare] [--profile] [--litellm-callback]
        [--reference]

Each run prints its mode (in-process, or per-side: one worker process per side), wall time,
efficiency, client CPU per call (this process plus its workers: robust to a busy machine, unlike
wall time) and the load average. --workers compare alternates the two modes run by run, so both
see the same machine. --profile adds one in-process run under cProfile and prints where the
event-loop thread's time goes. --reference sends the same traffic with a bare aiohttp client after
each run: what the machine allowed at that moment, apart from litellm and the runner.
--litellm-callback registers a no-op litellm callback, which turns litellm's own per-call pricing
and success logging back on (what a default litellm setup pays per call).

Where the time goes (2 cores, shared; py-spy and cProfile): litellm + the openai SDK + httpx/aiohttp
~80% of the client's CPU (~3.5-4 ms per call), asyncio ~10%, the runner with its SQLite writes ~4%.
In one event loop, a wave of 32 responses arriving together queues ~120 ms of CPU before the last
of them can send its next request: that, not the provider, is what keeps efficiency below 1.
Fixes kept (lib/run/llm.py, lib/run/runner.py, lib/run/executor.py):
- one worker process per side (auto from 400 pending calls and concurrency 8): each side gets its
  own loop, client and core, forked from a fork server that imported litellm and made one local
  call once, so a worker starts in ~20 ms and its first calls are not slower than later ones.
- litellm's per-response pricing and success-log payload skipped unless a litellm callback is
  registered: raw acompletion calls went from 3.96 to 2.61 ms CPU each.
- gc.freeze() after importing litellm (a full collection rescanned ~200 MB of its objects).
- SQLite writes on one writer thread per loop, so a commit waiting on the disk stalls no request.
Tried and dropped: uvloop (-10% CPU, same wall time), running litellm's sync set-up inline instead
of in executor threads (no gain), litellm's httpx transport instead of aiohttp (6.3 ms per call).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.engine import Engine  # noqa: E402

from bench.harness import ROOT, bare_client_wall, make_dataset  # noqa: E402
from lib.run import llm  # noqa: E402
from lib.run.executor import warm_up  # noqa: E402
from lib.run.runner import ModelSpec, RunOptions, RunResult, run_comparison  # noqa: E402
from lib.store.engine import get_engine  # noqa: E402
from tests.llm_server import serve_subprocess  # noqa: E402

# Where profiled time goes: the first category whose fragment is in "file:function". Builtins that
# release the GIL also count the wait to get it back, so sockets/sqlite3 include GIL waits.
WAITING = "waiting (epoll, locks, queues)"
CATEGORIES = ((WAITING, "'poll' of 'select.epoll'"), (WAITING, "'acquire' of '_thread."),
              (WAITING, "'get' of '_queue."), (WAITING, "time.sleep"),
              ("sockets, urandom (+ GIL waits)", "_socket.socket"), ("sockets, urandom (+ GIL waits)", "urandom"),
              ("sqlalchemy + sqlite3", "/sqlalchemy/"), ("sqlalchemy + sqlite3", "sqlite3"),
              ("litellm", "/litellm/"), ("openai SDK", "/openai/"), ("httpx", "/httpx"), ("aiohttp", "/aiohttp/"),
              ("pydantic", "pydantic"), ("runner (lib/)", f"{ROOT}/lib/"), ("asyncio", "/asyncio/"),
              ("threads, executors", "/threading.py"), ("threads, executors", "/concurrent/"))


def run_once(engine: Engine, dataset: str, url: str, concurrency: int, label: str, workers: str) -> RunResult:
    options = RunOptions(concurrency=concurrency, timeout=30.0, workers=workers)
    result = run_comparison(engine, dataset=dataset, baseline=ModelSpec("openai/bench-a", api_base=url),
                            candidate=ModelSpec("openai/bench-b", api_base=url), name=label, options=options)
    if result.status != "complete":
        raise SystemExit(f"run {label} ended {result.status} with {result.errors} errors")
    return result


def print_profile(stats: pstats.Stats, n_calls: int) -> None:
    by_category: dict[str, float] = defaultdict(float)
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{filename}:{func}"
        category = next((c for c, frag in CATEGORIES if frag in where), "other (stdlib, builtins)")
        by_category[category] += tottime
    waiting = by_category.pop(WAITING, 0.0)
    busy = sum(by_category.values())
    print(f"event-loop thread, profiled, by package (excluding {waiting:.1f}s {WAITING}; cProfile "
          f"inflates the time, the shares matter): {busy:.2f}s, {1000 * busy / n_calls:.2f} ms per call")
    for category, seconds in sorted(by_category.items(), key=lambda kv: -kv[1]):
        print(f"  {category:<30} {100 * seconds / busy:5.1f}%  {1000 * seconds / n_calls:6.3f} ms/call")


def timed_runs(engine: Engine, dataset: str, url: str, args: argparse.Namespace, modes: list[str],
               ideal: float, n_calls: int) -> dict[str, list[float]]:
    walls: dict[str, list[float]] = defaultdict(list)
    for i in range(args.runs):
        for mode in modes:  # alternating, so both modes see the same machine
            result = run_once(engine, dataset, url, args.concurrency, f"run-{i}-{mode}", mode)
            walls[result.workers].append(result.wall_s)
            print(f"  run {i + 1} [{result.workers}]: {result.wall_s:.2f}s, efficiency {ideal / result.wall_s:.3f}, "
                  f"client CPU {result.client_cpu_s:.2f}s ({1000 * result.client_cpu_s / n_calls:.2f} ms per call), "
                  f"load {os.getloadavg()[0]:.2f}")
            if args.reference:
                bare = bare_client_wall(url, n_calls, args.concurrency)
                print(f"    bare aiohttp client, same traffic: {bare:.2f}s, efficiency {ideal / bare:.3f}")
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", choices=("auto", "in-process", "per-side", "compare"), default="auto",
                        help="compare: alternate in-process and per-side runs")
    parser.add_argument("--profile", action="store_true", help="one more in-process run under cProfile")
    parser.add_argument("--litellm-callback", action="store_true")
    parser.add_argument("--reference", action="store_true",
                        help="after each run, send the same traffic with a bare aiohttp client")
    args = parser.parse_args()

    started = time.perf_counter()
    warm_up()  # the workers' fork server imports litellm in the background, as the CLI and the Run page do
    litellm = llm.litellm_module()  # import once, outside the timed runs
    print(f"litellm import in this process: {time.perf_counter() - started:.2f}s")
    if args.litellm_callback:
        from litellm.integrations.custom_logger import CustomLogger

        litellm.callbacks = [CustomLogger()]
    modes = ["in-process", "per-side"] if args.workers == "compare" else [args.workers]
    n_calls = 2 * args.cases
    ideal = n_calls * args.latency / args.concurrency
    with tempfile.TemporaryDirectory() as tmp, serve_subprocess(args.latency) as url:
        engine = get_engine(f"sqlite:///{tmp}/bench.db")
        dataset = make_dataset(engine, "bench", args.cases)
        warm = make_dataset(engine, "warm-up", 2 * args.concurrency)
        # The first run of each mode pays set-up (client, lazy imports; for per-side, waiting for the
        # fork server): on a small dataset, untimed by the efficiency figures but shown.
        for mode in ("in-process", "per-side"):
            result = run_once(engine, warm, url, args.concurrency, f"warm-up-{mode}", mode)
            print(f"first (warm-up) run, {mode}, {4 * args.concurrency} calls: {result.wall_s:.2f}s")
        print(f"{args.cases} cases x 2 models, latency {args.latency}s, concurrency {args.concurrency}: "
              f"ideal {ideal:.2f}s, load {os.getloadavg()[0]:.2f}")
        walls = timed_runs(engine, dataset, url, args, modes, ideal, n_calls)
        for mode, values in walls.items():
            median = statistics.median(values)
            print(f"median [{mode}] of {len(values)}: {median:.2f}s, efficiency {ideal / median:.3f}")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            run_once(engine, dataset, url, args.concurrency, "profiled", "in-process")
            profile.disable()
            print_profile(pstats.Stats(profile), n_calls)


if __name__ == "__main__":
    main()
