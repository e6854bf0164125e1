"""Live runs: a baseline and a candidate over one golden dataset, through litellm.

This module decides what to send and keeps the store's records (configurations, runs, the
comparison, audit events); `lib/run/executor.py` sends the calls, in this process or in one worker
process per side, with bounded concurrency and retries, writing each output the moment it returns,
so a killed process leaves a consistent store. Running the same named comparison again resumes it:
(case, repeat) pairs with a successful output are never sent again, error outputs are re-sent and
replaced. `run_model` runs one model into a new run that belongs to no comparison.
"""
from __future__ import annotations

import fcntl
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from lib.errors import ConfigMismatchError, DatasetNotFound, ReviewInputError
from lib.review.constants import SIDES
from lib.run import llm
from lib.run.executor import ExecStats, Job, ProgressEvent, RunOptions, Side, execute  # noqa: F401  (re-exported)
from lib.run.preload import CheckImports
from lib.run.redact import strip_url_credentials
from lib.store.audit import record_event
from lib.store.columns import from_json, to_json, utcnow
from lib.store.engine import session_scope
from lib.store.entities import (
    INPUT_PLACEHOLDER,
    SOURCE_LIVE,
    STATUS_COMPLETE,
    STATUS_PARTIAL,
    STATUS_RUNNING,
    Case,
    Comparison,
    Dataset,
    ModelConfig,
    Output,
    Run,
)

ASSUMED_COMPLETION_TOKENS = 256  # per call, for estimates when max_tokens is not set
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
        """sha256 of the canonical JSON of every field as stored (the endpoint without credentials):
        identical configurations share a row, whatever key reached them."""
        fields = {**asdict(self), "api_base": strip_url_credentials(self.api_base)}
        return hashlib.sha256(to_json(fields).encode()).hexdigest()

    def validate(self) -> None:
        if not self.model or not self.model.strip():
            raise ReviewInputError("a model name is required")
        if self.prompt_template is not None and INPUT_PLACEHOLDER not in self.prompt_template:
            raise ReviewInputError(f"prompt template must contain {INPUT_PLACEHOLDER}")


@dataclass
class CostEstimate:
    model: str
    n_calls: int
    prompt_tokens: int
    completion_tokens: int  # assumed: max_tokens per call, else ASSUMED_COMPLETION_TOKENS
    usd: float | None  # None when the model's price is unknown
    note: str


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
    rpm: float | None = None  # successful calls per minute this invocation achieved (lib.run.quota)
    rate_limited: int = 0  # attempts answered 429 in this invocation


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
    workers: str = "in-process"  # in-process | per-side (see lib/run/executor.py)
    client_cpu_s: float = 0.0  # CPU seconds spent sending and storing (this process and its workers)

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


@dataclass
class ModelRunResult:
    """One model over one dataset version, into a new Run that belongs to no comparison."""

    run_id: int
    model: str
    dataset: str
    dataset_version: int
    status: str  # complete | partial
    total: int  # cases x repeats
    n_outputs: int  # successful outputs
    n_errors: int  # error outputs (after retries)
    wall_s: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None when any successful output's cost is unknown
    system_fingerprint: str | None  # last seen
    served_model: str | None  # last seen


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
        raise DatasetNotFound(f"no dataset named '{name}' (import one with `./review dataset import`)")
    return ds


def _dataset_cases(session: Session, dataset_id: int) -> list[Case]:
    return list(session.exec(select(Case).where(Case.dataset_id == dataset_id).order_by(Case.position, Case.id)))


def config_row(spec: ModelSpec) -> dict[str, Any]:
    """The ModelConfig columns of a spec (one hashing scheme for live runs and recorded loads)."""
    return {"config_hash": spec.config_hash(), "model": spec.model, "api_base": strip_url_credentials(spec.api_base),
            "temperature": spec.temperature, "top_p": spec.top_p, "max_tokens": spec.max_tokens,
            "seed": spec.seed, "response_format_json": to_json(spec.response_format),
            "tools_json": to_json(spec.tools), "system_prompt": spec.system_prompt,
            "prompt_template": spec.prompt_template}


def _find_or_add_config(engine: Engine, digest: str, spec: ModelSpec) -> int:
    with session_scope(engine) as session:
        found = session.exec(select(ModelConfig).where(ModelConfig.config_hash == digest)).first()
        if found is not None:
            return found.id
        cfg = ModelConfig(**config_row(spec))
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
class _Plan:
    comparison: Comparison
    dataset: Dataset
    cases: list[Case]
    specs: dict[str, ModelSpec]
    sides: dict[str, Side] = field(default_factory=dict)


def _output_keys(session: Session, run_id: int) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    rows = session.exec(select(Output.case_id, Output.repeat, Output.error).where(Output.run_id == run_id)).all()
    done = {(c, r) for c, r, err in rows if err is None}
    return done, {(c, r) for c, r, err in rows if err is not None}


def _start_side(session: Session, run: Run, name: str, spec: ModelSpec, total: int,
                event: dict[str, Any]) -> Side:
    """Mark a run running, read what it already holds, and record `run_started` (with `event`)."""
    run.status = STATUS_RUNNING
    run.started_at = run.started_at or utcnow()
    done, errors = _output_keys(session, run.id)
    cfg = session.get(ModelConfig, run.config_id)
    record_event(session, "run_started", {"run_id": run.id, **event, "config_hash": cfg.config_hash,
                                          "already_stored": len(done)})
    return Side(name, spec.model, run.id, total, done, errors, llm.model_price(spec.model), run.system_fingerprint,
                run.served_model)


def _dataset_and_cases(session: Session, dataset: str) -> tuple[Dataset, list[Case]]:
    ds = latest_dataset(session, dataset)
    cases = _dataset_cases(session, ds.id)
    if not cases:
        raise ReviewInputError(f"dataset '{dataset}' v{ds.version} has no cases")
    return ds, cases


def _prepare(engine: Engine, dataset: str, specs: dict[str, ModelSpec], name: str, options: RunOptions,
             system: str) -> _Plan:
    """Create (or find and check) the comparison and its runs; mark the runs running."""
    config_ids = {side: config_id(engine, specs[side]) for side in SIDES}
    with session_scope(engine) as session:
        ds, cases = _dataset_and_cases(session, dataset)
        configs = {side: session.get(ModelConfig, config_ids[side]) for side in SIDES}
        comp = session.exec(select(Comparison).where(Comparison.name == name)).first()
        if comp is None:
            comp, runs = _create_comparison(session, name, ds, configs, options.repeats, system)
        else:
            runs = _check_resume(session, comp, ds, configs, options.repeats, system)
        plan = _Plan(comp, ds, cases, specs)
        for side in SIDES:
            plan.sides[side] = _start_side(session, runs[side], side, specs[side], len(cases) * options.repeats,
                                           {"comparison": name, "side": side})
        return plan


def _jobs(cases: list[Case], sides: list[Side], specs: dict[str, ModelSpec], options: RunOptions) -> list[Job]:
    """Pending (case, repeat) pairs, interleaved across sides so both advance together."""
    jobs = []
    for case in cases:
        side_kwargs = {}
        for side in sides:
            spec = specs[side.name]
            messages = build_messages(spec, case.input_text, case.messages_json)
            side_kwargs[side.name] = llm.call_kwargs(spec.model, spec.api_base,
                                                     {**spec.params(), "messages": messages}, options.timeout)
        for repeat in range(options.repeats):
            for side in sides:
                if (case.id, repeat) not in side.done_keys:
                    jobs.append(Job(side, case.id, repeat, side_kwargs[side.name]))
    return jobs


def _execute(engine: Engine, cases: list[Case], sides: list[Side], specs: dict[str, ModelSpec],
             options: RunOptions, progress: Callable[[ProgressEvent], None] | None,
             on_workers_calling: Callable[[], None] | None = None) -> ExecStats:
    """Send every pending (case, repeat) of every side and store each result as it returns."""
    return execute(engine, sides, _jobs(cases, sides, specs, options), options, progress, on_workers_calling)


# ---- finishing -----------------------------------------------------------------------------------
def _finish_side(session: Session, side: Side) -> SideResult:
    ok_filter = (Output.run_id == side.run_id, Output.error.is_(None))
    succeeded, p_tok, c_tok, cost, n_cost = session.exec(
        select(func.count(Output.id), func.sum(Output.prompt_tokens), func.sum(Output.completion_tokens),
               func.sum(Output.cost_usd), func.count(Output.cost_usd)).where(*ok_filter)).one()
    errors = session.exec(select(func.count(Output.id)).where(Output.run_id == side.run_id,
                                                              Output.error.is_not(None))).one()
    run = session.get(Run, side.run_id)
    run.status = STATUS_COMPLETE if succeeded == side.total else STATUS_PARTIAL
    run.finished_at = utcnow()
    return SideResult(side.name, side.run_id, side.model, side.total, succeeded, errors, len(side.done_keys),
                      side.sent, run.status, p_tok or 0, c_tok or 0,
                      (cost or 0.0) if n_cost == succeeded else None, run.system_fingerprint, run.served_model,
                      *_pace(side))


def _pace(side: Side) -> tuple[float | None, int]:
    pace = side.pace or {}
    return pace.get("rpm"), pace.get("rate_limited", 0)


def _finish(engine: Engine, plan: _Plan, wall_s: float, stats: ExecStats) -> RunResult:
    with session_scope(engine) as session:
        sides = {name: _finish_side(session, side) for name, side in plan.sides.items()}
        for res in sides.values():
            record_event(session, "run_finished", {"run_id": res.run_id, "comparison": plan.comparison.name,
                                                   "status": res.status, "n_outputs": res.succeeded,
                                                   "n_errors": res.errors})
    status = STATUS_COMPLETE if all(s.status == STATUS_COMPLETE for s in sides.values()) else STATUS_PARTIAL
    return RunResult(plan.comparison.name, plan.comparison.id, plan.dataset.name, plan.dataset.version,
                     status, round(wall_s, 3), sides["baseline"], sides["candidate"], stats.workers,
                     round(stats.cpu_s, 3))


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


def calls_per_side(engine: Engine, dataset: str, repeats: int = 1) -> int:
    """Cases x repeats of the latest dataset version (cheap: no litellm), e.g. to decide `warm_up`."""
    with Session(engine) as session:
        ds = latest_dataset(session, dataset)
        return session.exec(select(func.count(Case.id)).where(Case.dataset_id == ds.id)).one() * repeats


class RunInProgressError(ReviewInputError):
    """Another process is running the comparison of this name: refused before any call is made."""


@contextmanager
def run_lock(engine: Engine, name: str) -> Iterator[None]:
    """Hold an exclusive flock on `<store>.runlocks/<name hash>` while running a comparison. The OS drops it
    when the process dies (even kill -9), so a crashed run never blocks its resume; a second `run` with the
    same name meanwhile (another process or another app session) is refused before it sends anything: it
    would pay for every call twice."""
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    folder = Path(f"{database}.runlocks")
    folder.mkdir(exist_ok=True)
    with open(folder / hashlib.sha256(name.strip().encode()).hexdigest()[:32], "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunInProgressError(f"comparison '{name}' is being run by another process right now; wait for "
                                     "it to finish (a later run with the same command resumes what is left)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    check_imports = CheckImports([baseline.model, candidate.model])  # begun once the workers call
    try:
        with run_lock(engine, name):
            plan = _prepare(engine, dataset, {"baseline": baseline, "candidate": candidate}, name, options, system)
            stats = _execute(engine, plan.cases, list(plan.sides.values()), plan.specs, options, progress,
                             check_imports.start)
            result = _finish(engine, plan, time.monotonic() - started, stats)
    finally:
        check_imports.wait()
    from lib.review.checked import ensure_checked  # pyarrow, jsonschema: not needed by workers or the CLI's start

    ensure_checked(engine, name)  # check and store every output now: the first report reads columns
    return result


def run_model(engine: Engine, *, dataset: str, spec: ModelSpec, options: RunOptions | None = None,
              purpose: str = "run", progress: Callable[[ProgressEvent], None] | None = None) -> ModelRunResult:
    """Run one model over the latest version of `dataset` into a new Run (no comparison, no resume).

    For callers that track one model over time (the pinned-model monitor). `purpose` is recorded in
    the run_started/run_finished audit events. Progress events carry side "model". Same calling,
    retry and storage path as `run_comparison`; call errors are stored, never raised.
    """
    spec.validate()
    options = options or RunOptions()
    options.validate()
    started = time.monotonic()
    cfg_id = config_id(engine, spec)
    with session_scope(engine) as session:
        ds, cases = _dataset_and_cases(session, dataset)
        run = Run(config_id=cfg_id, dataset_id=ds.id, source=SOURCE_LIVE, repeats=options.repeats)
        session.add(run)
        session.flush()
        side = _start_side(session, run, "model", spec, len(cases) * options.repeats,
                           {"comparison": None, "side": "model", "purpose": purpose})
        ds_name, ds_version = ds.name, ds.version
    _execute(engine, cases, [side], {side.name: spec}, options, progress)
    with session_scope(engine) as session:
        res = _finish_side(session, side)
        record_event(session, "run_finished", {"run_id": res.run_id, "comparison": None, "purpose": purpose,
                                               "status": res.status, "n_outputs": res.succeeded,
                                               "n_errors": res.errors})
    return ModelRunResult(res.run_id, spec.model, ds_name, ds_version, res.status, res.total, res.succeeded,
                          res.errors, round(time.monotonic() - started, 3), res.prompt_tokens,
                          res.completion_tokens, res.cost_usd, res.system_fingerprint, res.served_model)
