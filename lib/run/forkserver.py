"""The run workers' fork server: when a run uses one worker process per side, and starting the server early.

Light on purpose (multiprocessing and lib/run/resident.py only): the CLI asks for a server before it imports
SQLAlchemy, so a cold server's ~2-3 s of importing litellm (lib/run/worker_preload.py) starts as early as it
can. Workers come from the resident host when it can be used (it outlives the command, so only the first run
pays that import), else from this command's own fork server.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.context
from multiprocessing import forkserver
from typing import Any

# `auto` uses a worker per side only when it pays. Measured (L=0.2 s, C=8 and 32, warm fork server):
# per side costs +0.04-0.12 s at 50 calls, breaks even at 200 and is faster from 400; below C=8 one
# loop is far from CPU-bound. A cold fork server adds ~3 s: the CLI and Run page start it early.
AUTO_MIN_CALLS = 400  # pending calls across sides
AUTO_MIN_CONCURRENCY = 8
HAS_FORKSERVER = "forkserver" in multiprocessing.get_all_start_methods()  # not on Windows


def choose_workers(options: Any, pending: dict[str, int], resident_ready: bool = False) -> str:
    """`in-process` or `per-side` for these pending calls per side (`auto` decides). `options`: a
    `lib.run.executor.RunOptions` (its `workers` and `concurrency`). `resident_ready`: the resident worker
    host can serve this run (lib/run/resident.py): then `auto` always uses workers, since a warm host forks
    them in milliseconds and this process never imports litellm (~2 s), and a cold one imports it no slower
    than this process would (and stays for the next run)."""
    busy = [n for n in pending.values() if n > 0]
    if not HAS_FORKSERVER or not busy or options.workers == "in-process" or options.concurrency < len(busy):
        return "in-process"  # one slot cannot be split across workers
    if resident_ready:
        return "per-side"
    if len(busy) < 2:
        return "in-process"  # one side: its own fork server would only add its start-up
    if options.workers == "per-side":
        return "per-side"
    big = sum(busy) >= AUTO_MIN_CALLS and options.concurrency >= AUTO_MIN_CONCURRENCY
    return "per-side" if big else "in-process"


def should_warm_up(options: Any, calls_per_side: int) -> bool:
    """Whether a run of this size would use workers (when nothing is stored yet)."""
    from lib.run import resident

    pending = {"baseline": calls_per_side, "candidate": calls_per_side}
    return choose_workers(options, pending, resident.usable()) == "per-side"


def context() -> multiprocessing.context.ForkServerContext:
    """Fork server, not fork: Streamlit and the writer run threads, and forking a threaded process is
    unsafe. The server imports litellm once (lib.run.worker_preload); workers fork from it in ~20 ms.
    As with any start method but fork, a worker imports the caller's main module: a script calling
    the runner needs an `if __name__ == "__main__":` guard (`./review` and bench/ have one)."""
    from lib.run.resident import PRELOAD

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([PRELOAD])
    return ctx


def warm_up() -> None:
    """Have a worker host ready soon, so a big run started now does not wait for litellm's import (~2-3 s):
    the resident host (lib/run/resident.py, started unless one is alive), else this process's fork server.
    Idempotent, returns at once."""
    if not HAS_FORKSERVER:
        return
    from lib.run import resident

    if resident.enabled():
        try:
            resident.ensure_started()
            return
        except resident.ResidentUnavailable:
            pass
    context()
    forkserver.ensure_running()
