"""Live runs: a baseline and a candidate over one golden dataset, through litellm.

`run_comparison` is a sync wrapper over asyncio: one semaphore bounds the requests in flight across
both sides, each request has its own deadline, and failed calls are retried with exponential backoff
and jitter (honouring `Retry-After`) when they are rate limits, 5xx, timeouts or malformed responses.
Each output is written in its own short transaction the moment it returns, so a killed process
leaves a consistent store; running the same named comparison again resumes it: (case, repeat)
pairs with a successful output are never sent again, error outputs are re-sent and replaced.
"""
from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import delete, func, insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from lib import llm
from lib.audit import record_event
from lib.db import session_scope, utcnow
from lib.errors import ConfigMismatchError, DatasetNotFound, ReviewInputError
from lib.models import (SOURCE_LIVE, STATUS_COMPLETE, STATUS_PARTIAL, STATUS_RUNNING, Case,
                        Comparison, Dataset, ModelConfig, Output, Run, from_json, to_json)

SIDES = ("baseline", "candidate")
INPUT_PLACEHOLDER = "{{input}}"
ASSUMED_COMPLETION_TOKENS = 256  # per call, for estimates when max_tokens is not set
MAX_RETRY_AFTER_S = 300.0  # honour Retry-After up to this; a longer ask would stall the run
CONFIG_FIELDS = ("model", "api_base", "temperature", "top_p", "max_tokens", "seed", "response_format_json",
                 "tools_json", "system_prompt", "prompt_template")  # ModelConfig columns a spec sets


@dataclass
class ModelSpec:
    """One side's exact configuration. Keys are not part of it: they come from the environment."""

    model: str
    api_base: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    response_format: dict | None = None
    tools: list | None = None
    system_prompt: str | None = None
    prompt_template: str | None = None  # "{{input}}" is replaced by the case input

    def params(self) -> dict[str, Any]:
        """Sampling and output parameters as litellm takes them (unset ones are dropped later)."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "seed": self.seed, "response_format": self.response_format, "tools": self.tools}

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of every field: identical configurations share a row."""
        return hashlib.sha256(to_json(asdict(self)).encode()).hexdigest()

    def validate(self) -> None:
        if not self.model or not self.model.strip():
            raise ReviewInputError("a model name is required")
        if self.prompt_template is not None and INPUT_PLACEHOLDER not in self.prompt_template:
            raise ReviewInputError(f"prompt template must contain {INPUT_PLACEHOLDER}")


@dataclass
class RunOptions:
    concurrency: int = 8  # requests in flight across both sides
    timeout: float = 60.0  # seconds per request
    max_retries: int = 4  # retries after the first attempt
    repeats: int = 1  # samples per case
    backoff_base: float = 0.5  # seconds before the first retry (doubling, with jitter)
    backoff_cap: float = 30.0

    def validate(self) -> None:
        if self.concurrency < 1 or self.repeats < 1 or self.max_retries < 0 or self.timeout <= 0:
            raise ReviewInputError("concurrency and repeats must be >= 1, max retries >= 0, timeout > 0")


@dataclass
class CostEstimate:
    model: str
    n_calls: int
    prompt_tokens: int
    completion_tokens: int  # assumed: max_tokens per call, else ASSUMED_COMPLETION_TOKENS
    usd: float | None  # None when the model's price is unknown
    note: str


@dataclass(frozen=True)
class ProgressEvent:
    side: str
    done: int  # (case, repeat) pairs finished, including those skipped as already done
    total: int
    errors: int  # error outputs written by this invocation
    skipped: int  # already had a successful output before this invocation


@dataclass
class SideResult:
    side: str
    run_id: int
    model: str
    total: int  # cases x repeats
    succeeded: int  # successful outputs in the store
    errors: int  # error outputs in the store
    skipped: int  # already done before this invocation
    sent: int  # (case, repeat) pairs sent by this invocation
    status: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when any successful output's cost is unknown
    system_fingerprint: str | None
    served_model: str | None


@dataclass
class RunResult:
    comparison: str
    comparison_id: int
    dataset: str
    dataset_version: int
    status: str  # complete | partial
    wall_s: float
    baseline: SideResult
    candidate: SideResult

    @property
    def errors(self) -> int:
        return self.baseline.errors + self.candidate.errors

    @property
    def missing(self) -> int:
        """(case, repeat) pairs without a successful output, on both sides."""
        return sum(s.total - s.succeeded for s in (self.baseline, self.candidate))

    @property
    def cost_usd(self) -> float | None:
        costs = (self.baseline.cost_usd, self.candidate.cost_usd)
        return None if None in costs else sum(costs)  # type: ignore[arg-type]


# ---- messages ------------------------------------------------------------------------------------
def build_messages(spec: ModelSpec, input_text: str, messages_json: str | None) -> list[dict[str, Any]]:
    """The chat a case sends: system prompt first (unless the case's chat has one), then the input."""
    system = [{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []
    if messages_json:
        chat = list(from_json(messages_json))
        has_system = any(m.get("role") == "system" for m in chat)
        return chat if has_system else system + chat
    text = spec.prompt_template.replace(INPUT_PLACEHOLDER, input_text) if spec.prompt_template else input_text
    return system + [{"role": "user", "content": text}]


# ---- store setup ---------------------------------------------------------------------------------
def latest_dataset(session: Session, name: str) -> Dataset:
    ds = session.exec(select(Dataset).where(Dataset.name == name).order_by(Dataset.version.desc())).first()
    if ds is None:
        raise DatasetNotFound(f"no dataset named '{name}' (import one with `python -m lib dataset import`)")
    return ds


def _dataset_cases(session: Session, dataset_id: int) -> list[Case]:
    return list(session.exec(select(Case).where(Case.dataset_id == dataset_id).order_by(Case.position, Case.id)))


def _config_row(spec: ModelSpec) -> dict[str, Any]:
    return {"config_hash": spec.config_hash(), "model": spec.model, "api_base": spec.api_base,
            "temperature": spec.temperature, "top_p": spec.top_p, "max_tokens": spec.max_tokens,
            "seed": spec.seed, "response_format_json": to_json(spec.response_format),
            "tools_json": to_json(spec.tools), "system_prompt": spec.system_prompt,
            "prompt_template": spec.prompt_template}


def _find_or_add_config(engine: Engine, digest: str, spec: ModelSpec) -> int:
    with session_scope(engine) as session:
        found = session.exec(select(ModelConfig).where(ModelConfig.config_hash == digest)).first()
        if found is not None:
            return found.id
        cfg = ModelConfig(**_config_row(spec))
        session.add(cfg)
        session.flush()
        return cfg.id


def config_id(engine: Engine, spec: ModelSpec) -> int:
    """The ModelConfig row for a spec, created if new; identical specs share one row (config_hash)."""
    digest = spec.config_hash()
    try:
        return _find_or_add_config(engine, digest, spec)
    except IntegrityError:  # another process created the same config just now: read theirs
        return _find_or_add_config(engine, digest, spec)


def _config_diff(old: ModelConfig, new: ModelConfig) -> str:
    diffs = [f"{k} {getattr(old, k)!r} -> {getattr(new, k)!r}" for k in CONFIG_FIELDS
             if getattr(old, k) != getattr(new, k)]
    return ", ".join(diffs)


def _check_resume(session: Session, comp: Comparison, ds: Dataset, configs: dict[str, ModelConfig],
                  repeats: int, system: str) -> dict[str, Run]:
    """The runs of an existing comparison, if this invocation is the same job; else a clear error."""
    name = comp.name
    if comp.source != "run":
        raise ConfigMismatchError(f"comparison '{name}' was loaded from a {comp.source} file, not run; "
                                  "choose another --name")
    runs = {"baseline": session.get(Run, comp.baseline_run_id), "candidate": session.get(Run, comp.candidate_run_id)}
    old_ds = session.get(Dataset, runs["baseline"].dataset_id)
    if old_ds.id != ds.id:
        raise ConfigMismatchError(f"comparison '{name}' ran on dataset '{old_ds.name}' v{old_ds.version}, "
                                  f"not '{ds.name}' v{ds.version}; choose another --name to start a new one")
    for side in SIDES:
        if runs[side].config_id != configs[side].id:
            old_cfg = session.get(ModelConfig, runs[side].config_id)
            raise ConfigMismatchError(f"comparison '{name}' ran a different {side} configuration "
                                      f"({_config_diff(old_cfg, configs[side])}); use the same flags to "
                                      "resume, or choose another --name")
    if runs["baseline"].repeats != repeats:
        raise ConfigMismatchError(f"comparison '{name}' ran with --repeats {runs['baseline'].repeats}, "
                                  f"not {repeats}; use the same value to resume, or choose another --name")
    if comp.system != system:
        raise ConfigMismatchError(f"comparison '{name}' belongs to system '{comp.system}', not '{system}'")
    return runs


def _create_comparison(session: Session, name: str, ds: Dataset, configs: dict[str, ModelConfig],
                       repeats: int, system: str) -> tuple[Comparison, dict[str, Run]]:
    runs = {side: Run(config_id=configs[side].id, dataset_id=ds.id, source=SOURCE_LIVE, repeats=repeats)
            for side in SIDES}
    session.add_all(runs.values())
    session.flush()
    comp = Comparison(name=name, baseline_run_id=runs["baseline"].id, candidate_run_id=runs["candidate"].id,
                      system=system, source="run")
    session.add(comp)
    session.flush()
    return comp, runs


@dataclass
class _Side:
    name: str
    spec: ModelSpec
    run_id: int
    total: int
    done_keys: set[tuple[int, int]]  # (case_id, repeat) with a successful output
    error_keys: set[tuple[int, int]]  # (case_id, repeat) with an error output, to replace
    fingerprint: str | None = None
    served_model: str | None = None
    sent: int = 0
    errors: int = 0


@dataclass
class _Plan:
    comparison: Comparison
    dataset: Dataset
    cases: list[Case]
    sides: dict[str, _Side] = field(default_factory=dict)


def _output_keys(session: Session, run_id: int) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    rows = session.exec(select(Output.case_id, Output.repeat, Output.error).where(Output.run_id == run_id)).all()
    done = {(c, r) for c, r, err in rows if err is None}
    return done, {(c, r) for c, r, err in rows if err is not None}


def _prepare(engine: Engine, dataset: str, specs: dict[str, ModelSpec], name: str, options: RunOptions,
             system: str) -> _Plan:
    """Create (or find and check) the comparison and its runs; mark the runs running."""
    config_ids = {side: config_id(engine, specs[side]) for side in SIDES}
    with session_scope(engine) as session:
        ds = latest_dataset(session, dataset)
        cases = _dataset_cases(session, ds.id)
        if not cases:
            raise ReviewInputError(f"dataset '{dataset}' v{ds.version} has no cases")
        configs = {side: session.get(ModelConfig, config_ids[side]) for side in SIDES}
        comp = session.exec(select(Comparison).where(Comparison.name == name)).first()
        if comp is None:
            comp, runs = _create_comparison(session, name, ds, configs, options.repeats, system)
        else:
            runs = _check_resume(session, comp, ds, configs, options.repeats, system)
        plan = _Plan(comp, ds, cases)
        for side in SIDES:
            run = runs[side]
            run.status = STATUS_RUNNING
            run.started_at = run.started_at or utcnow()
            done, errors = _output_keys(session, run.id)
            plan.sides[side] = _Side(side, specs[side], run.id, len(cases) * options.repeats, done, errors,
                                     run.system_fingerprint, run.served_model)
            record_event(session, "run_started", {"run_id": run.id, "comparison": name, "side": side,
                                                  "config_hash": configs[side].config_hash,
                                                  "already_stored": len(done)})
        return plan


# ---- one call, with retries ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Job:
    side: _Side
    case_id: int
    repeat: int
    kwargs: dict[str, Any]  # litellm.acompletion arguments, messages included


class _Executor:
    """Runs jobs under one semaphore and writes each result as it arrives."""

    def __init__(self, engine: Engine, options: RunOptions, progress: Callable[[ProgressEvent], None] | None):
        self.engine, self.options, self.progress = engine, options, progress
        self.litellm = llm.litellm_module()
        self.semaphore = asyncio.Semaphore(options.concurrency)
        self.random = random.Random()
        # One writer thread: a commit that waits on the disk (WAL checkpoint) or on another writer's
        # lock (busy_timeout) must not stall the event loop and every request in flight with it.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="output-writer")

    async def run(self, jobs: list[_Job]) -> None:
        try:
            await asyncio.gather(*(self._job(job) for job in jobs))
        finally:
            self.writer.shutdown(wait=True)

    async def _job(self, job: _Job) -> None:
        row = await self._call_with_retries(job)
        await asyncio.get_running_loop().run_in_executor(self.writer, self._store, job, row)
        side = job.side
        side.sent += 1
        side.errors += row["error"] is not None
        if self.progress is not None:
            self.report(side)

    def report(self, side: _Side) -> None:
        skipped = len(side.done_keys)
        self.progress(ProgressEvent(side.name, skipped + side.sent, side.total, side.errors, skipped))

    async def _attempt(self, job: _Job) -> tuple[llm.Completion | None, llm.CallError | None, float]:
        started = time.monotonic()
        try:
            # One deadline for the whole attempt, whatever the HTTP client's own timeouts do.
            async with asyncio.timeout(self.options.timeout):
                response = await self.litellm.acompletion(**job.kwargs)
            return llm.parse_completion(response), None, time.monotonic() - started
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  - every provider failure becomes a classified error
            return None, llm.classify_error(exc), time.monotonic() - started

    def _delay(self, error: llm.CallError, attempt: int) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, MAX_RETRY_AFTER_S) * self.random.uniform(1.0, 1.1)
        backoff = min(self.options.backoff_cap, self.options.backoff_base * 2 ** (attempt - 1))
        return backoff * self.random.uniform(0.5, 1.0)

    async def _call_with_retries(self, job: _Job) -> dict[str, Any]:
        attempt = 0
        while True:
            attempt += 1
            async with self.semaphore:  # released while backing off: others keep the slots busy
                completion, error, latency = await self._attempt(job)
            if completion is not None:
                return _success_row(job, completion, latency, attempt)
            if not error.retryable or attempt > self.options.max_retries:
                return _error_row(job, error, latency, attempt)
            await asyncio.sleep(self._delay(error, attempt))

    def _store(self, job: _Job, row: dict[str, Any]) -> None:
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


def _base_row(job: _Job, latency: float, attempts: int) -> dict[str, Any]:
    return {"run_id": job.side.run_id, "case_id": job.case_id, "repeat": job.repeat,
            "latency_s": round(latency, 4), "attempts": attempts, "created_at": utcnow()}


def _success_row(job: _Job, c: llm.Completion, latency: float, attempts: int) -> dict[str, Any]:
    cost = llm.response_cost(job.side.spec.model, c.prompt_tokens, c.completion_tokens)
    return {**_base_row(job, latency, attempts), "text": c.text, "finish_reason": c.finish_reason,
            "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "cost_usd": cost,
            "system_fingerprint": c.system_fingerprint, "served_model": c.served_model,
            "raw_json": c.raw_json, "error": None, "error_kind": None}


def _error_row(job: _Job, error: llm.CallError, latency: float, attempts: int) -> dict[str, Any]:
    return {**_base_row(job, latency, attempts), "text": None, "finish_reason": None, "prompt_tokens": None,
            "completion_tokens": None, "cost_usd": None, "system_fingerprint": None, "served_model": None,
            "raw_json": None, "error": error.message, "error_kind": error.kind}


def _jobs(plan: _Plan, options: RunOptions) -> list[_Job]:
    """Pending (case, repeat) pairs, interleaved across sides so both advance together."""
    jobs = []
    for case in plan.cases:
        side_kwargs = {}
        for side in plan.sides.values():
            messages = build_messages(side.spec, case.input_text, case.messages_json)
            side_kwargs[side.name] = llm.call_kwargs(side.spec.model, side.spec.api_base,
                                                     {**side.spec.params(), "messages": messages},
                                                     options.timeout)
        for repeat in range(options.repeats):
            for side in plan.sides.values():
                if (case.id, repeat) not in side.done_keys:
                    jobs.append(_Job(side, case.id, repeat, side_kwargs[side.name]))
    return jobs


# ---- finishing -----------------------------------------------------------------------------------
def _finish_side(session: Session, side: _Side) -> SideResult:
    ok_filter = (Output.run_id == side.run_id, Output.error.is_(None))
    succeeded, p_tok, c_tok, cost, n_cost = session.exec(
        select(func.count(Output.id), func.sum(Output.prompt_tokens), func.sum(Output.completion_tokens),
               func.sum(Output.cost_usd), func.count(Output.cost_usd)).where(*ok_filter)).one()
    errors = session.exec(select(func.count(Output.id)).where(Output.run_id == side.run_id,
                                                              Output.error.is_not(None))).one()
    run = session.get(Run, side.run_id)
    run.status = STATUS_COMPLETE if succeeded == side.total else STATUS_PARTIAL
    run.finished_at = utcnow()
    return SideResult(side.name, side.run_id, side.spec.model, side.total, succeeded, errors, len(side.done_keys),
                      side.sent, run.status, p_tok or 0, c_tok or 0,
                      (cost or 0.0) if n_cost == succeeded else None, run.system_fingerprint, run.served_model)


def _finish(engine: Engine, plan: _Plan, wall_s: float) -> RunResult:
    with session_scope(engine) as session:
        sides = {name: _finish_side(session, side) for name, side in plan.sides.items()}
        for res in sides.values():
            record_event(session, "run_finished", {"run_id": res.run_id, "comparison": plan.comparison.name,
                                                   "status": res.status, "n_outputs": res.succeeded,
                                                   "n_errors": res.errors})
    status = STATUS_COMPLETE if all(s.status == STATUS_COMPLETE for s in sides.values()) else STATUS_PARTIAL
    return RunResult(plan.comparison.name, plan.comparison.id, plan.dataset.name, plan.dataset.version,
                     status, round(wall_s, 3), sides["baseline"], sides["candidate"])


# ---- public API ----------------------------------------------------------------------------------
def estimate_cost(engine: Engine, dataset: str, spec: ModelSpec, repeats: int = 1) -> CostEstimate:
    """Calls, prompt tokens and USD for one side over the latest dataset version (usd None = unknown)."""
    spec.validate()
    with Session(engine) as session:
        ds = latest_dataset(session, dataset)
        cases = _dataset_cases(session, ds.id)
    counts = [llm.count_tokens(spec.model, build_messages(spec, c.input_text, c.messages_json)) for c in cases]
    n_calls = len(cases) * repeats
    prompt_tokens = sum(c.tokens for c in counts) * repeats
    per_call = spec.max_tokens or ASSUMED_COMPLETION_TOKENS
    completion_tokens = per_call * n_calls
    notes = [f"completion assumed {per_call} tokens per call"
             + (" (max_tokens)" if spec.max_tokens else " (set max_tokens for an upper bound)")]
    if counts and not counts[0].exact:
        notes.insert(0, counts[0].note)
    usd = llm.response_cost(spec.model, prompt_tokens, completion_tokens)
    if usd is None:
        notes.append(f"no price known for {spec.model}")
    return CostEstimate(spec.model, n_calls, prompt_tokens, completion_tokens, usd, "; ".join(notes))


def run_comparison(engine: Engine, *, dataset: str, baseline: ModelSpec, candidate: ModelSpec, name: str,
                   options: RunOptions, system: str = "default",
                   progress: Callable[[ProgressEvent], None] | None = None) -> RunResult:
    """Run (or resume) the named comparison; returns counts, status, wall time, tokens and cost.

    Raises DatasetNotFound, ConfigMismatchError (resume with other dataset, configs, repeats or
    system) or ReviewInputError for bad specs/options. Call errors are stored, never raised.
    """
    for spec in (baseline, candidate):
        spec.validate()
    options.validate()
    if not name or not name.strip():
        raise ReviewInputError("a comparison name is required")
    started = time.monotonic()
    plan = _prepare(engine, dataset, {"baseline": baseline, "candidate": candidate}, name, options, system)
    jobs = _jobs(plan, options)
    executor = _Executor(engine, options, progress)
    if progress is not None:
        for side in plan.sides.values():
            executor.report(side)
    asyncio.run(executor.run(jobs))
    return _finish(engine, plan, time.monotonic() - started)
