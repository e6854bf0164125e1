"""`judge COMPARISON --judge MODEL`: rubric scores for both sides, optional pairwise preference in both
orders, and the anchor drift check; resumable (the same judge never judges a stored item again)."""
from __future__ import annotations

import time
from typing import Any, Optional

import typer

from lib.cli.app import app, engine, fail, print_json, progress
from lib.cli.run_cmd import rate_text
from lib.review import fmt

PROGRESS_EVERY_S = 2.0


class _ProgressPrinter:
    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, event: Any) -> None:
        now = time.monotonic()
        if event.done != event.total and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        progress(f"judge: {event.done}/{event.total} ({event.errors} failed, {event.unparseable} unparseable)")




def _rate(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return f"{r['count']} (n=0)"
    return f"{r['count']} ({r['rate']:.0%} [{r['ci_low']:.0%}, {r['ci_high']:.0%}], n={r['n']})"


def print_block(block: dict[str, Any]) -> None:
    cfg = block["config"]
    fps = ", ".join(f"{f['system_fingerprint'] or '-'} ({f['served_model'] or '-'})" for f in cfg["fingerprints"])
    typer.echo(f"judge {cfg['model']} (config {cfg['config_hash'][:12]}, templates "
               f"{cfg['templates']['pointwise']}/{cfg['templates']['pairwise']}, temperature {cfg['temperature']}, "
               f"seed {cfg['seed']}); fingerprints: {fps or 'none reported'}")
    typer.echo(f"{block['n_pairs_judged']} pairs judged (delta = candidate - baseline, "
               f"{1 - block['alpha']:.0%} CI; p Holm-adjusted across dimensions)")
    if not block["dimensions"]:
        typer.echo("rubric scores: no pointwise judgement parsed (see the unparseable count)")
    else:
        typer.echo(f"{'dimension':<20} {'baseline':>9} {'candidate':>9}  {'delta [CI]':<24} {'p_adj':>7} {'n':>5}")
    for dim, m in block["dimensions"].items():
        if m is None:
            typer.echo(f"{dim:<20} {'—':>9} {'—':>9}  (no pair scored on both sides)")
            continue
        delta = f"{m['delta']:+.2f} [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}]"
        typer.echo(f"{dim:<20} {m['baseline']:>9.2f} {m['candidate']:>9.2f}  {delta:<24} "
                   f"{fmt.fixed(m['p_value_adj'], '.3g'):>7} {m['n']:>5}")
    pw = block["pairwise"]
    if pw:
        typer.echo(f"pairwise (candidate's view, both orders must agree): win {_rate(pw['win'])}, "
                   f"tie {_rate(pw['tie'])}, loss {_rate(pw['loss'])}; sign test p={fmt.fixed(pw['p_value'], '.3g')}")
        typer.echo(f"position consistency {_rate(pw['position_consistency'])}; "
                   f"{pw['n_unparseable']} pairs with an unparseable order")
    un, err = block["unparseable"], block["errors"]
    typer.echo(f"unparseable judgements: {un['total']} (pointwise {un['pointwise']}, pairwise {un['pairwise']}); "
               f"failed calls: {err['total']}")
    typer.echo(f"judge drift: {block['drift']['status']} — {block['drift'].get('message', '')}")


@app.command("judge")
def judge_cmd(
    comparison: str = typer.Argument(..., help="Comparison name (see `list`)."),
    judge: str = typer.Option(..., "--judge", help="Judge litellm model string, e.g. openai/gpt-4o-2024-08-06."),
    api_base: Optional[str] = typer.Option(None, "--api-base", help="Judge endpoint (OpenAI-compatible)."),
    sample: Optional[str] = typer.Option(None, "--sample", help="Fraction (0.05, 5%) or count (200) of pairs; "
                                                               "drawn reproducibly. Default: every pair."),
    pairwise: bool = typer.Option(False, "--pairwise", help="Also judge a pairwise preference, in both orders."),
    rubric: Optional[str] = typer.Option(None, "--rubric", help="Rubric file (TOML or JSON). Default: accuracy, "
                                                                "format_adherence, safety."),
    dimensions: Optional[str] = typer.Option(None, "--dimensions", help="Comma-separated subset of the rubric."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="Judge temperature."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Judge sampling seed, when the provider takes one."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1),
    no_json_mode: bool = typer.Option(False, "--no-json-mode", help="Do not send response_format json_object."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Judge requests in flight."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.001, help="Seconds per request."),
    max_retries: int = typer.Option(4, "--max-retries", min=0, help="Retries per request (429, 5xx, timeouts)."),
    parse_retries: int = typer.Option(2, "--parse-retries", min=0, help="Correction turns after invalid JSON."),
    drift_threshold: float = typer.Option(0.5, "--drift-threshold", min=0.0,
                                          help="Mean absolute anchor-score change that flags a changed judge."),
    rpm: Optional[float] = typer.Option(None, "--rpm", help="The judge model's requests per minute; calls are "
                                        "paced to it. Unset: found from 429s and rate-limit headers."),
    tpm: Optional[float] = typer.Option(None, "--tpm", help="The judge model's tokens per minute."),
    as_json: bool = typer.Option(False, "--json", help="Print the run and the judge block as JSON."),
) -> None:
    """Judge a comparison with a pinned LLM judge; exit 1 when calls still fail after retries."""
    from lib.judge.calls import CallOptions
    from lib.judge.config import JudgeSettings
    from lib.judge.rubric import load_rubric
    from lib.judge.run import JudgeOptions, run_judge
    from lib.judge.sampling import parse_sample
    from lib.judge.summary import judge_block
    from lib.review.stats import ALPHA
    from lib.run.quota import Quota

    quota = Quota(rpm, tpm)
    quota.validate("--")

    chosen = load_rubric(rubric)
    if dimensions:
        chosen = chosen.subset([d.strip() for d in dimensions.split(",") if d.strip()])
    settings = JudgeSettings(judge, temperature=temperature, seed=seed, max_tokens=max_tokens,
                             json_mode=not no_json_mode, rubric=chosen)
    options = JudgeOptions(sample=parse_sample(sample), pairwise=pairwise, drift_threshold=drift_threshold,
                           api_base=api_base, calls=CallOptions(concurrency=concurrency, timeout=timeout,
                                                                max_retries=max_retries, parse_retries=parse_retries,
                                                                quota=quota))
    store = engine()
    result = run_judge(store, comparison, settings, options, progress=_ProgressPrinter())
    progress(f"judge run #{result.run_id}: {result.n_selected} of {result.n_pairs} pairs selected, "
             f"{result.n_sent} judgements sent (anchors included), {result.n_resumed} already stored; "
             f"{result.n_unparseable} unparseable, {result.n_errors} failed; {result.wall_s:.1f}s; "
             f"{result.model}: {rate_text(result.rpm, result.rate_limited)}")
    if result.drift.flagged:
        progress(f"warning: {result.drift.message()}")
    block = judge_block(store, comparison, ALPHA, config_hash=result.config_hash)
    if as_json:
        print_json({"run": {k: v for k, v in vars(result).items() if k != "drift"}, "judge": block})
    elif block is None:
        typer.echo(f"no pair of '{comparison}' has answers on both sides to judge; "
                   f"judge drift: {result.drift.status} — {result.drift.message()}")
    else:
        print_block(block)
    if result.n_errors:
        fail(f"{result.n_errors} judge calls failed after retries (stored as failed); re-run the same command "
             "to resume: only those are sent again", code=1)
