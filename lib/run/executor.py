"""Sending a run's calls: bounded concurrency, retries, and one short write per output.

`_Executor` is one asyncio loop; its `lib.run.llm.RetryingCaller` (shared with the judge) bounds the
requests in flight, gives each attempt its own deadline, and retries failed calls with exponential backoff
and jitter (honouring `Retry-After`) when they are rate limits, 5xx, timeouts or malformed responses. Each result is
written in its own transaction the moment it returns, so a killed process leaves a consistent store.

It runs either in the calling thread (`in-process`) or as one worker process per side
(`per-side`): litellm, the openai SDK and httpx cost ~3.5-5 ms of CPU per call, all on one event
loop, so at high concurrency with short latencies one core is the bottleneck; a worker per side
gives each side its own loop, client and core. Workers are forked from a fork server that imported
litellm and made one local call once (`warm_up`, lib/run/worker_preload.py), because importing it takes
~2-3 s: the resident host that outlives one command (lib/run/resident.py), else this command's own.
They write their own outputs and send progress to the parent, which forwards it to the caller's
`progress` callback in the caller's thread. A parent that stops (Ctrl-C, an exception in `progress`)
tells them to stop, and kills them after STOP_GRACE_S; a parent that dies (kill -9) closes their
connection, and they stop by themselves.

Each side's attempts are paced to its model's quota by a `lib.run.quota.Pacer` (declared rpm/tpm, the
provider's rate-limit headers, or found from 429s); a worker paces its own side.

Concurrency is the bound on requests in flight across all sides, in both modes. Per side, each
worker gets a share proportional to its pending calls (at least 1); when one finishes, its share
goes to the others, so the tail of a run still has the whole budget.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy.engine import Engine

from lib.errors import ReviewInputError
from lib.run import llm, resident, stoppable
from lib.run.forkserver import choose_workers, context, should_warm_up, warm_up  # noqa: F401  (re-exported)
from lib.run.modes import WORKER_MODES
from lib.run.quota import Pacer, Quota, quota_for
from lib.store.columns import utcnow
from lib.store.engine import get_engine, write_engine
from lib.store.entities import Output, Run

PROGRESS_EVERY_S = 0.05  # a worker sends at most one progress message this often (and its last)
STOP_GRACE_S = 5.0  # a stopped worker gets this long to finish its writes before it is killed


@dataclass
class RunOptions:
    concurrency: int = 8  # requests in flight across both sides (in every worker mode)
    timeout: float = 60.0  # seconds per request
    max_retries: int = 4  # retries after the first attempt
    repeats: int = 1  # samples per case
    backoff_base: float = 0.5  # seconds before the first retry (doubling, with jitter)
    backoff_cap: float = 30.0
    workers: str = "auto"  # auto | in-process | per-side (one worker process per side)
    quota: Quota = field(default_factory=Quota)  # every side's (per model: each side has all of it)
    side_quotas: dict[str, Quota] = field(default_factory=dict)  # per side name, overriding `quota`

    def quota_for(self, side: str) -> Quota:
        return quota_for(self.quota, self.side_quotas.get(side, Quota()))

    def validate(self) -> None:
        if self.concurrency < 1 or self.repeats < 1 or self.max_retries < 0 or self.timeout <= 0:
            raise ReviewInputError("concurrency and repeats must be >= 1, max retries >= 0, timeout > 0")
        self.quota.validate("--")
        for side, quota in self.side_quotas.items():
            quota.validate(f"--{side}-")
        if self.workers not in WORKER_MODES:
            raise ReviewInputError(f"workers must be one of {', '.join(WORKER_MODES)}, not '{self.workers}'")


@dataclass(frozen=True)
class ProgressEvent:
    side: str
    done: int  # (case, repeat) pairs finished, including those skipped as already done
    total: int
    errors: int  # error outputs written by this invocation
    skipped: int  # already had a successful output before this invocation


@dataclass
class Side:
    """One run being filled: what it holds already, and what this invocation did."""

    name: str
    model: str
    run_id: int
    total: int
    done_keys: set[tuple[int, int]]  # (case_id, repeat) with a successful output
    error_keys: set[tuple[int, int]]  # (case_id, repeat) with an error output, to replace
    price: llm.Price | None  # the model's USD per token (None: unknown), resolved once, not in each worker
    fingerprint: str | None = None
    served_model: str | None = None
    sent: int = 0
    errors: int = 0
    pace: dict[str, Any] | None = None  # lib.run.quota.PaceStats.as_dict() once the side has run

    def event(self) -> ProgressEvent:
        skipped = len(self.done_keys)
        return ProgressEvent(self.name, skipped + self.sent, self.total, self.errors, skipped)


@dataclass(frozen=True)
class Job:
    side: Side
    case_id: int
    repeat: int
    kwargs: dict[str, Any]  # litellm.acompletion arguments, messages included


@dataclass(frozen=True)
class ExecStats:
    workers: str  # in-process | per-side
    cpu_s: float  # client CPU: this process in-process; the workers' and this process's per side


Progress = Callable[[ProgressEvent], None]


# ---- one loop -------------------------------------------------------------------------------------
class _Executor:
    """Runs jobs under one semaphore and writes each result as it arrives."""

    def __init__(self, engine: Engine, options: RunOptions, progress: Progress | None, concurrency: int):
        self.engine, self.options, self.progress = write_engine(engine), options, progress
        self.concurrency = concurrency
        self.pacers: dict[str, tuple[Side, Pacer]] = {}  # per side name, made on the loop that uses them
        self.caller = llm.RetryingCaller(llm.RetryPolicy(options.timeout, options.max_retries, options.backoff_base,
                                                         options.backoff_cap), concurrency)
        # One writer thread: a commit that waits on the disk (WAL checkpoint) or on another writer's
        # lock (busy_timeout) must not stall the event loop and every request in flight with it.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="output-writer")

    def grow(self, slots: int) -> None:
        """More requests in flight from now on (a finished worker's share)."""
        self.caller.grow(slots)
        for _side, pacer in self.pacers.values():
            pacer.grow(slots)

    def _pacer(self, side: Side) -> Pacer:
        if side.name not in self.pacers:
            self.pacers[side.name] = (side, Pacer(self.options.quota_for(side.name), self.concurrency))
        return self.pacers[side.name][1]

    async def run(self, jobs: list[Job]) -> BaseException | None:
        """Run every job; returns what the progress callback raised to stop the run (lib.run.stoppable)."""
        try:
            return await stoppable.gather_stoppable(self._job(job) for job in jobs)
        finally:
            self.writer.shutdown(wait=True)
            for side, pacer in self.pacers.values():
                side.pace = pacer.stats.as_dict()

    async def _job(self, job: Job) -> None:
        row = await self._call_with_retries(job)
        await asyncio.get_running_loop().run_in_executor(self.writer, self._store, job, row)
        side = job.side
        side.sent += 1
        side.errors += row["error"] is not None
        stoppable.report(self.progress, side.event())

    async def _call_with_retries(self, job: Job) -> dict[str, Any]:
        out = await self.caller.complete(job.kwargs, self._pacer(job.side))
        if out.completion is not None:
            return _success_row(job, out.completion, out.latency_s, out.attempts)
        return _error_row(job, out.error, out.latency_s, out.attempts)

    def _store(self, job: Job, row: dict[str, Any]) -> None:
        """One short transaction per output; replaces an earlier error output for the same pair."""
        side, key = job.side, (job.case_id, job.repeat)
        with self.engine.begin() as conn:
            if key in side.error_keys:
                conn.execute(delete(Output).where(Output.run_id == side.run_id, Output.case_id == job.case_id,
                                                  Output.repeat == job.repeat))
            conn.execute(insert(Output), row)
            fingerprint, served = row["system_fingerprint"], row["served_model"]
            if row["error"] is None and (fingerprint, served) != (side.fingerprint, side.served_model):
                conn.execute(update(Run).where(Run.id == side.run_id)
                             .values(system_fingerprint=fingerprint, served_model=served))
                side.fingerprint, side.served_model = fingerprint, served


def _base_row(job: Job, latency: float, attempts: int) -> dict[str, Any]:
    return {"run_id": job.side.run_id, "case_id": job.case_id, "repeat": job.repeat,
            "latency_s": round(latency, 4), "attempts": attempts, "created_at": utcnow()}


def _success_row(job: Job, c: llm.Completion, latency: float, attempts: int) -> dict[str, Any]:
    cost = llm.cost_usd(job.side.price, c.prompt_tokens, c.completion_tokens)
    return {**_base_row(job, latency, attempts), "text": c.text, "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "cost_usd": cost,
            "system_fingerprint": c.system_fingerprint, "served_model": c.served_model,
            "raw_json": c.raw_json, "error": None, "error_kind": None}


def _error_row(job: Job, error: llm.CallError, latency: float, attempts: int) -> dict[str, Any]:
    return {**_base_row(job, latency, attempts), "text": None, "finish_reason": None, "prompt_tokens": None,
            "completion_tokens": None, "cost_usd": None, "system_fingerprint": None, "served_model": None,
            "raw_json": None, "error": error.message, "error_kind": error.kind}


# ---- choosing the mode ----------------------------------------------------------------------------
def _shareable_url(engine: Engine) -> str | None:
    """The store's URL as another process can open it (absolute SQLite path); None for in-memory."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            return None
        url = url.set(database=os.path.abspath(url.database))
    return url.render_as_string(hide_password=False)


def execute(engine: Engine, sides: list[Side], jobs: list[Job], options: RunOptions,
            progress: Progress | None, on_workers_calling: Callable[[], None] | None = None) -> ExecStats:
    """Send every job and store every result, in this process or in one worker per side.
    `on_workers_calling` is called once when the first worker reports (this process is idle from then on)."""
    if progress is not None:
        for side in sides:
            progress(side.event())
    pending = {side.name: 0 for side in sides}
    for job in jobs:
        pending[job.side.name] += 1
    url = _shareable_url(engine)
    workers = choose_workers(options, pending, resident.usable()) if url is not None else "in-process"
    cpu = time.process_time()
    if workers == "in-process":
        stoppable.run(_Executor(engine, options, progress, options.concurrency).run(jobs))
        return ExecStats(workers, time.process_time() - cpu)
    worker_cpu = _Workers(url, sides, jobs, options, progress, on_workers_calling).run()
    return ExecStats(workers, time.process_time() - cpu + worker_cpu)


# ---- worker processes -----------------------------------------------------------------------------
@dataclass
class _Task:
    """What one worker needs; pickled to it (the environment carries the provider keys)."""

    db_url: str
    env: dict[str, str]
    cwd: str
    side: Side
    jobs: list[Job]
    options: RunOptions
    concurrency: int


def _shares(concurrency: int, pending: list[int]) -> list[int]:
    """Split the concurrency budget in proportion to pending calls, each at least 1, summing to it."""
    shares = [max(1, concurrency * n // sum(pending)) for n in pending]
    shares[shares.index(max(shares))] += concurrency - sum(shares)
    return shares


class _Workers:
    """The parent's side: start one worker per side, forward progress, rebalance, stop on any exit."""

    def __init__(self, url: str, sides: list[Side], jobs: list[Job], options: RunOptions,
                 progress: Progress | None, on_calling: Callable[[], None] | None = None):
        self.sides = {s.name: s for s in sides}
        by_side = {name: [j for j in jobs if j.side.name == name] for name in self.sides}
        by_side = {name: js for name, js in by_side.items() if js}
        shares = _shares(options.concurrency, [len(js) for js in by_side.values()])
        env = dict(os.environ)
        self.tasks = {name: _Task(url, env, os.getcwd(), self.sides[name], js, options, share)
                      for (name, js), share in zip(by_side.items(), shares)}
        self.progress = progress
        self.on_calling = on_calling
        self.procs: dict[str, multiprocessing.process.BaseProcess | resident.RemoteWorker] = {}
        self.conns: dict[str, Connection] = {}
        self.cpu_s = 0.0

    def run(self) -> float:
        """Run all workers to the end; returns their CPU seconds. Raises if one fails or dies."""
        try:
            self._start()
            while self.conns:
                for conn in wait(list(self.conns.values())):
                    self._drain(conn)  # type: ignore[arg-type]
            return self.cpu_s
        finally:
            self._stop()

    def _start(self) -> None:
        for name, task in self.tasks.items():
            self.procs[name], self.conns[name] = _start_worker(name, task)

    def _drain(self, conn: Connection) -> None:
        name = next(n for n, c in self.conns.items() if c is conn)
        if self.on_calling is not None:
            self.on_calling()
            self.on_calling = None
        latest = None
        try:
            while conn.poll():
                kind, *body = conn.recv()
                if kind == "progress":
                    latest = body[0]
                elif kind == "done":
                    latest = self._finished(name, *body)
                    break
                else:
                    raise RuntimeError(f"the {name} worker failed: {body[0]}")
        except EOFError:
            self.procs[name].join(STOP_GRACE_S)
            code = self.procs[name].exitcode
            how = f" ({code})" if code is not None else ""
            raise RuntimeError(f"the {name} worker exited{how} before finishing") from None
        if latest is not None and self.progress is not None:
            self.progress(latest)

    def _finished(self, name: str, sent: int, errors: int, cpu_s: float, pace: dict[str, Any] | None) -> ProgressEvent:
        side = self.sides[name]
        side.sent, side.errors, side.pace = sent, errors, pace
        self.cpu_s += cpu_s
        self.conns.pop(name).close()
        self.procs[name].join(STOP_GRACE_S)
        freed = self.tasks[name].concurrency
        for i, conn in enumerate(self.conns.values()):  # hand the finished worker's slots on
            try:
                conn.send(("grow", freed // len(self.conns) + (i < freed % len(self.conns))))
            except OSError:
                pass  # that worker has finished too; its "done" is waiting to be read
        return side.event()

    def _stop(self) -> None:
        """Ask unfinished workers to stop (they finish their writes), then make sure they are gone."""
        for conn in self.conns.values():
            try:
                conn.send(("stop",))
            except OSError:
                pass  # already gone
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns.values():
            conn.close()


def _start_worker(name: str, task: _Task) -> tuple[multiprocessing.process.BaseProcess | resident.RemoteWorker,
                                                  Connection]:
    """A worker forked by the resident host (litellm already imported, lib/run/resident.py), else by this
    command's own fork server."""
    if resident.enabled():
        try:
            return resident.start_worker(worker_main, task)
        except resident.ResidentUnavailable:
            pass  # e.g. a runtime directory others can enter: the per-command fork server still works
    mine, theirs = multiprocessing.Pipe()
    proc = context().Process(target=worker_main, args=(task, theirs), name=f"run-worker-{name}", daemon=True)
    proc.start()
    theirs.close()  # only the worker holds its end: our exit (even kill -9) is its EOF
    return proc, mine


def worker_main(task: _Task, conn: Connection) -> None:
    """A worker process: its own loop and litellm client over one side's jobs."""
    os.environ.clear()
    os.environ.update(task.env)  # the fork server's environment is from when it started
    os.chdir(task.cwd)
    try:
        asyncio.run(_worker_loop(task, conn))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit(1) from None  # stopped (by the parent, or Ctrl-C to this command's fork server's workers)
    except BaseException:
        conn.send(("failed", traceback.format_exc(limit=8)))
        raise SystemExit(1) from None
    conn.send(("done", task.side.sent, task.side.errors, time.process_time(), task.side.pace))


async def _worker_loop(task: _Task, conn: Connection) -> None:
    loop, main = asyncio.get_running_loop(), asyncio.current_task()
    last_sent = [0.0]

    def progress(event: ProgressEvent) -> None:
        now = time.monotonic()
        if now - last_sent[0] >= PROGRESS_EVERY_S:
            last_sent[0] = now
            try:
                conn.send(("progress", event))
            except OSError:  # the parent is gone
                stop()

    executor = _Executor(get_engine(task.db_url), task.options, progress, task.concurrency)

    def stop() -> None:
        loop.remove_reader(conn.fileno())
        main.cancel()

    def on_message() -> None:
        try:
            kind, *body = conn.recv()
        except (EOFError, OSError):  # the parent is gone (even kill -9): stop, do not orphan the work
            kind, body = "stop", []
        if kind == "grow":
            executor.grow(body[0])
        else:
            stop()

    loop.add_reader(conn.fileno(), on_message)
    await executor.run(task.jobs)
    loop.remove_reader(conn.fileno())
