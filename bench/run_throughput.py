"""Live-runner throughput: N cases x 2 models against the local test server.

The server runs in its own process (so it does not share the client's GIL) and answers every
request after L seconds. With C requests in flight the ideal wall time is 2*N*L/C; efficiency is
ideal / achieved. Each repetition is a new comparison in a temporary SQLite store.

    .venv/bin/python bench/run_throughput.py [--cases 1000] [--latency 0.2] [--concurrency 32]
        [--runs 3] [--profile] [--litellm-callback] [--reference]

--profile adds one run under cProfile and prints where the event-loop thread's time goes.
--reference sends the same traffic with a bare aiohttp client after each run: on a shared machine
it tells what the machine allowed at that moment, apart from litellm and the runner.
--litellm-callback registers a no-op litellm callback, which turns litellm's own per-call pricing
and success logging back on (what a default litellm setup pays per call).

What was measured here (2 cores, shared with other work; py-spy, GIL-holding samples, all threads):
litellm + the openai SDK + httpx/aiohttp ~80% of the client's CPU (the SDK's request build, send and
parse ~30%; litellm's sync set-up, which it runs in executor threads, ~12%), asyncio ~10%, the
runner including its SQLite writes ~4%. ~3.4 ms CPU per call on a quiet machine, more under load.
Fixes kept (lib/llm.py, lib/runner.py):
- litellm prices every response and builds a success-log payload per call; skipped unless a litellm
  callback is registered: raw acompletion calls went from 3.96 to 2.61 ms CPU each (pricing an
  unmapped model walks every generalization of its name).
- gc.freeze() after importing litellm: a full collection otherwise rescans ~200 MB of litellm
  objects and stalled the loop 0.33 s per run (0.06 s after).
- SQLite writes on one writer thread: a commit costs ~0.17 ms but stalled up to 0.58 s while other
  processes used the disk; off the loop it delays one output, not every request in flight.
Tried and dropped: uvloop (-10% CPU, same wall time), running litellm's sync set-up inline instead
of in executor threads (no gain), litellm's httpx transport instead of aiohttp (6.3 ms per call).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from lib import llm  # noqa: E402
from lib.db import get_engine, session_scope  # noqa: E402
from lib.models import Case, Dataset  # noqa: E402
from lib.runner import ModelSpec, RunOptions, run_comparison  # noqa: E402
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


def make_dataset(engine: Engine, name: str, n_cases: int) -> str:
    with session_scope(engine) as session:
        ds = Dataset(name=name, version=1, content_hash=f"{name}-{n_cases}", n_cases=n_cases)
        session.add(ds)
        session.flush()
        rows = [{"dataset_id": ds.id, "case_key": f"c{i}", "position": i,
                 "input_text": f"Benchmark question number {i}: what is {i} plus {i}?"} for i in range(n_cases)]
        session.execute(insert(Case), rows)
    return name


def run_once(engine: Engine, dataset: str, url: str, concurrency: int, label: str) -> tuple[float, float]:
    """Wall and process CPU seconds of one full comparison."""
    options = RunOptions(concurrency=concurrency, timeout=30.0)
    wall, cpu = time.perf_counter(), time.process_time()
    result = run_comparison(engine, dataset=dataset, baseline=ModelSpec("openai/bench-a", api_base=url),
                            candidate=ModelSpec("openai/bench-b", api_base=url), name=label, options=options)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if result.status != "complete":
        raise SystemExit(f"run {label} ended {result.status} with {result.errors} errors")
    return wall, cpu


async def _bare_requests(url: str, n_calls: int, concurrency: int) -> None:
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:
            body = {"model": f"bench-{i % 2}", "messages": [{"role": "user", "content": f"question {i}"}]}
            async with semaphore, session.post(f"{url}/chat/completions", json=body) as response:
                await response.json()

        await asyncio.gather(*(one(i) for i in range(n_calls)))


def bare_client_wall(url: str, n_calls: int, concurrency: int) -> float:
    """The same traffic from a bare aiohttp client (no litellm, no store): what the machine allows now."""
    started = time.perf_counter()
    asyncio.run(_bare_requests(url, n_calls, concurrency))
    return time.perf_counter() - started


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--litellm-callback", action="store_true")
    parser.add_argument("--reference", action="store_true",
                        help="after each run, send the same traffic with a bare aiohttp client")
    args = parser.parse_args()

    litellm = llm.litellm_module()  # import once, outside the timed runs
    if args.litellm_callback:
        from litellm.integrations.custom_logger import CustomLogger

        litellm.callbacks = [CustomLogger()]
    n_calls = 2 * args.cases
    ideal = n_calls * args.latency / args.concurrency
    with tempfile.TemporaryDirectory() as tmp, serve_subprocess(args.latency) as url:
        engine = get_engine(f"sqlite:///{tmp}/bench.db")
        dataset = make_dataset(engine, "bench", args.cases)
        # The first run in a process pays client set-up: warm up on a small dataset, untimed.
        run_once(engine, make_dataset(engine, "warm-up", 2 * args.concurrency), url, args.concurrency, "warm-up")
        print(f"{args.cases} cases x 2 models, latency {args.latency}s, concurrency {args.concurrency}: "
              f"ideal {ideal:.2f}s")
        walls = []
        for i in range(args.runs):
            wall, cpu = run_once(engine, dataset, url, args.concurrency, f"run-{i}")
            walls.append(wall)
            print(f"  run {i + 1}: {wall:.2f}s, efficiency {ideal / wall:.3f}, client CPU {cpu:.2f}s "
                  f"({1000 * cpu / n_calls:.2f} ms per call, {100 * cpu / wall:.0f}% of one core)")
            if args.reference:
                bare = bare_client_wall(url, n_calls, args.concurrency)
                print(f"    bare aiohttp client, same traffic: {bare:.2f}s, efficiency {ideal / bare:.3f}")
        median = statistics.median(walls)
        print(f"median: {median:.2f}s, efficiency {ideal / median:.3f}")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            run_once(engine, dataset, url, args.concurrency, "profiled")
            profile.disable()
            print_profile(pstats.Stats(profile), n_calls)


if __name__ == "__main__":
    main()
