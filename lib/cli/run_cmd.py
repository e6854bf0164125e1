"""`run`: a live comparison of a baseline and a candidate model over a golden dataset (resumable)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from lib.cli.app import app, engine, fail, progress
from lib.run.modes import WORKER_MODES
from lib.run.tools_spec import load_tools

if TYPE_CHECKING:  # the runner loads SQLAlchemy and pandas: imported when a run starts, not for --help
    from lib.run.runner import CostEstimate, ModelSpec, ProgressEvent, RunOptions, RunResult

PROGRESS_EVERY_S = 2.0  # at most one progress line per side this often (and one when a side ends)


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.4f}"


def _estimate_line(side: str, est: CostEstimate) -> str:
    return (f"estimate {side} {est.model}: {est.n_calls} calls, ~{est.prompt_tokens} prompt tokens, "
            f"cost {_usd(est.usd)} ({est.note})")


class _ProgressPrinter:
    """Throttled progress lines on stderr."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        finished = event.done == event.total
        if not finished and now - self.last.get(event.side, 0.0) < PROGRESS_EVERY_S:
            return
        self.last[event.side] = now if not finished else float("inf")
        skipped = f", {event.skipped} already done" if event.skipped else ""
        progress(f"{event.side}: {event.done}/{event.total} ({event.errors} errors{skipped})")


def rate_text(rpm: float | None, rate_limited: int) -> str:
    """A model's achieved pace as the summaries print it (`run`, `judge`): successful calls per minute, 429s."""
    achieved = "-" if rpm is None else f"{rpm:.0f}"
    return f"{achieved} rpm achieved, {rate_limited} 429s"


def _summary(result: RunResult) -> None:
    typer.echo(f"comparison '{result.comparison}' on {result.dataset} v{result.dataset_version}: "
               f"{result.status} in {result.wall_s:.1f}s ({result.workers})")
    for s in (result.baseline, result.candidate):
        typer.echo(f"  {s.side:<9} {s.model}: {s.succeeded}/{s.total} ok, {s.errors} errors, {s.sent} sent "
                   f"now, {s.skipped} resumed; {rate_text(s.rpm, s.rate_limited)}; tokens {s.prompt_tokens} in / "
                   f"{s.completion_tokens} out; cost {_usd(s.cost_usd)}; served {s.served_model or '-'} "
                   f"({s.system_fingerprint or '-'})")


def model_spec(model: str, api_base: str | None, flags: dict[str, Any]) -> ModelSpec:
    """A model's configuration from `run`'s flags (the prompt stack, parameters and tools)."""
    from lib.run.runner import ModelSpec

    return ModelSpec(model, api_base=api_base, system_prompt=flags["system_prompt"],
                     prompt_template=flags["prompt_template"], temperature=flags["temperature"],
                     top_p=flags["top_p"], max_tokens=flags["max_tokens"], seed=flags["seed"],
                     response_format=_response_format(flags["response_format_json"]),
                     tools=_tools(flags.get("tools")))


def run_options(flags: dict[str, Any]) -> RunOptions:
    """How calls are sent, from `run`'s flags."""
    from lib.run.quota import Quota
    from lib.run.runner import RunOptions

    sides = {side: Quota(flags.get(f"{side}_rpm"), flags.get(f"{side}_tpm")) for side in ("baseline", "candidate")}
    return RunOptions(concurrency=flags["concurrency"], timeout=flags["timeout"], max_retries=flags["max_retries"],
                      repeats=flags["repeats"], workers=flags.get("workers", "auto"),
                      quota=Quota(flags.get("rpm"), flags.get("tpm")),
                      side_quotas={side: q for side, q in sides.items() if q != Quota()})


def _quota_lines(store: Any, specs: dict[str, ModelSpec], options: RunOptions) -> list[str]:
    """Each side's pace, and a warning when its concurrency cannot reach its declared rpm."""
    from lib.run.quota import feasibility, recent_latency

    in_flight = max(1, options.concurrency // len(specs))
    lines = []
    for side, spec in specs.items():
        quota = options.quota_for(side)
        if quota.rpm is None and quota.tpm is None:
            lines.append(f"quota {side} {spec.model}: not declared; paced from 429s and rate-limit headers")
            continue
        declared = ", ".join(f"{v:g} {k}" for k, v in (("rpm", quota.rpm), ("tpm", quota.tpm)) if v is not None)
        lines.append(f"quota {side} {spec.model}: {declared}")
        warning = feasibility(quota, in_flight, recent_latency(store, spec.model))
        if warning:
            lines.append(f"warning: {side} {warning}")
    return lines


def _warm_up_early(dataset: str, workers: str, concurrency: int, repeats: int) -> None:
    """Start the workers' fork server before this process imports SQLAlchemy and prices the run, when the
    store says (read without SQLAlchemy) the run will use it: its ~2-3 s of importing litellm is most of a
    big run's wait for its first call. Otherwise the check after the store is opened decides (warm_up is
    idempotent)."""
    from types import SimpleNamespace

    from lib.run.forkserver import should_warm_up, warm_up
    from lib.store.peek import database_url, dataset_size

    size = dataset_size(database_url(), dataset)
    if workers in WORKER_MODES and size is not None and \
            should_warm_up(SimpleNamespace(workers=workers, concurrency=concurrency), size * repeats):
        warm_up()


def _response_format(as_json: bool) -> dict | None:
    return {"type": "json_object"} if as_json else None


def _tools(path: Path | None) -> list | None:
    return None if path is None else load_tools(path)  # ToolsFileError: exit 2, one line


@app.command("run")
def run_cmd(
    dataset: str = typer.Option(..., "--dataset", help="Golden dataset name (its latest version)."),
    baseline: str = typer.Option(..., "--baseline", help="Baseline litellm model, e.g. openai/gpt-4o-mini."),
    candidate: str = typer.Option(..., "--candidate", help="Candidate litellm model."),
    name: str = typer.Option(..., "--name", help="Comparison name; the same name resumes it."),
    api_base: Optional[str] = typer.Option(None, "--api-base", help="Endpoint (every model, unless set per side)."),
    baseline_api_base: Optional[str] = typer.Option(None, "--baseline-api-base", help="Baseline endpoint."),
    candidate_api_base: Optional[str] = typer.Option(None, "--candidate-api-base", help="Candidate endpoint."),
    system_prompt: Optional[str] = typer.Option(None, "--system-prompt", help="System prompt (every model)."),
    prompt_template: Optional[str] = typer.Option(
        None, "--prompt-template", help="User message template; {{input}} is replaced by the case input."),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0),
    top_p: Optional[float] = typer.Option(None, "--top-p", min=0.0, max=1.0),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1),
    seed: Optional[int] = typer.Option(None, "--seed"),
    response_format_json: bool = typer.Option(False, "--response-format-json",
                                              help="Ask for a JSON object (every model)."),
    tools: Optional[Path] = typer.Option(
        None, "--tools", help="JSON file: a list of OpenAI-style tool definitions "
        '([{"type": "function", "function": {name, description, parameters}}]) sent with every request '
        "(every model). A reply made of tool calls is stored as {\"tool_calls\": [{name, arguments}]}."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="Requests in flight, in total."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.001, help="Seconds per request."),
    max_retries: int = typer.Option(4, "--max-retries", min=0, help="Retries per request."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Samples per case."),
    system: str = typer.Option("default", "--system", help="System (product) the comparison belongs to."),
    workers: str = typer.Option("auto", "--workers", help=f"{' | '.join(WORKER_MODES)}: per-side runs each "
                                "side in its own worker process (faster at high concurrency); auto: workers "
                                "when the resident worker host can run (`workers status`), else by size."),
    rpm: Optional[float] = typer.Option(None, "--rpm", help="Requests per minute allowed per model (each side); "
                                        "calls are paced to it. Unset: found from 429s and rate-limit headers."),
    tpm: Optional[float] = typer.Option(None, "--tpm", help="Tokens per minute allowed per model (each side)."),
    baseline_rpm: Optional[float] = typer.Option(None, "--baseline-rpm", help="Baseline model's rpm (over --rpm)."),
    candidate_rpm: Optional[float] = typer.Option(None, "--candidate-rpm", help="Candidate model's rpm (over --rpm)."),
    baseline_tpm: Optional[float] = typer.Option(None, "--baseline-tpm", help="Baseline model's tpm (over --tpm)."),
    candidate_tpm: Optional[float] = typer.Option(None, "--candidate-tpm", help="Candidate model's tpm (over --tpm)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the cost estimate and stop."),
) -> None:
    """Run (or resume) a live comparison; exit 1 when errors remain after retries."""
    flags = dict(locals())
    if not dry_run:
        _warm_up_early(dataset, workers, concurrency, repeats)
    from lib.run.forkserver import should_warm_up, warm_up
    from lib.run.runner import calls_per_side, estimate_cost, run_comparison

    specs = {"baseline": model_spec(baseline, baseline_api_base or api_base, flags),
             "candidate": model_spec(candidate, candidate_api_base or api_base, flags)}
    store = engine()
    options = run_options(flags)
    options.validate()
    if not dry_run and should_warm_up(options, calls_per_side(store, dataset, repeats)):
        warm_up()  # the workers' fork server imports litellm while this process prices the run
    for side, spec in specs.items():
        progress(_estimate_line(side, estimate_cost(store, dataset, spec, repeats)))
    for line in _quota_lines(store, specs, options):
        progress(line)
    if dry_run:
        return
    from lib.catalog.keys import require_keys
    from lib.run.resident import key_statuses

    require_keys([(spec.model, spec.api_base) for spec in specs.values()], key_statuses)  # else all calls fail
    result = run_comparison(store, dataset=dataset, baseline=specs["baseline"], candidate=specs["candidate"],
                            name=name, options=options, system=system, progress=_ProgressPrinter())
    _summary(result)
    if result.missing:
        fail(f"{result.missing} of {result.baseline.total + result.candidate.total} outputs failed after "
             f"retries ({result.errors} stored as errors); re-run the same command to resume: only those "
             "are sent again", code=1)

