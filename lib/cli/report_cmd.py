"""`report COMPARISON [--json]`: paired metrics with CIs, significance and flips."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from lib.cli.app import app, engine, print_json, progress
from lib.review import fmt
from lib.review.constants import ALPHA


def _num(metric: str, value: float | None) -> str:
    from lib.review.report import is_rate  # the report pulls in scipy: not at CLI start

    return fmt.metric_value(value, is_rate(metric))


def _delta(metric: str, m: dict[str, Any]) -> str:
    from lib.review.report import is_rate

    if m.get("delta") is None:
        return f"[{_num(metric, m['ci_low'])}, {_num(metric, m['ci_high'])}]"
    return fmt.metric_delta(m["delta"], m["ci_low"], m["ci_high"], is_rate(metric))


def _row(metric: str, m: dict[str, Any], width: int) -> str:
    from lib.review.report import BINARY_METRICS, METRIC_LABELS

    p = m.get("p_value_adj")
    sig = "*" if p is not None and p < ALPHA else " "
    flips = f"+{m['flips']['to_true']}/-{m['flips']['to_false']}" if metric in BINARY_METRICS else ""
    p_text = fmt.p_value(p)
    return (f"{METRIC_LABELS.get(metric, metric):<{width}} {_num(metric, m['baseline']):>10} "
            f"{_num(metric, m['candidate']):>10}  {_delta(metric, m):<30} {p_text:>8}{sig} {m['n']:>7} {flips:>9}")


def print_table(report: dict[str, Any]) -> None:
    from lib.review.report import METRIC_LABELS

    typer.echo(f"{report['comparison']}: {report['n_pairs']} paired cases "
               f"(delta = candidate - baseline, {1 - report['alpha']:.0%} CI; p Holm-adjusted, * < 0.05)")
    width = max([22] + [len(METRIC_LABELS.get(k, k)) for k, m in report["metrics"].items() if m])
    typer.echo(f"{'metric':<{width}} {'baseline':>10} {'candidate':>10}  {'delta [CI]':<30} {'p_adj':>9} {'n':>7} "
               f"{'flips +/-':>9}")
    for metric, m in report["metrics"].items():
        typer.echo(_row(metric, m, width))
    contract = report.get("contract")
    if contract and contract["changes"]:
        typer.echo("\nJSON contract changes (cases):")
        for change in contract["changes"][:10]:
            typer.echo(f"  {change['kind']:<12} {change['path']:<40} {change['count']}")
    if report.get("judge"):
        print_judge(report["judge"])


def print_judge(block: dict[str, Any]) -> None:
    """The judge block: mean scores per dimension, pairwise outcomes, and whether the judge moved."""
    typer.echo(f"\nJudge {block['config']['model']} ({block['n_pairs_judged']} pairs judged; "
               f"unparseable {block['unparseable']['total']}):")
    for dim, m in block["dimensions"].items():
        if m is not None:
            typer.echo(f"  {dim:<20} {m['baseline']:>6.2f} {m['candidate']:>6.2f}  "
                       f"{m['delta']:+.2f} [{m['ci_low']:+.2f}, {m['ci_high']:+.2f}]  n={m['n']}")
    pairwise = block.get("pairwise")
    if pairwise and pairwise["n"]:
        outcomes = "  ".join(
            f"{k} {pairwise[k]['rate']:.0%} [{pairwise[k]['ci_low']:.0%}, {pairwise[k]['ci_high']:.0%}]"
            for k in ("win", "tie", "loss"))
        typer.echo(f"  pairwise (candidate, both orders): {outcomes}  n={pairwise['n']}")
        consistency = pairwise["position_consistency"]
        typer.echo(f"  position consistency {consistency['rate']:.0%} [{consistency['ci_low']:.0%}, "
                   f"{consistency['ci_high']:.0%}]  n={consistency['n']}")
    drift = block.get("drift") or {}
    if drift.get("flagged"):
        typer.echo(f"  WARNING the judge itself changed: {drift.get('message')}")


SCHEMA_HELP = "A JSON Schema file every case without one must satisfy (traffic logs carry none)."
LIMIT_HELP = ("The system's prompt budget in tokens: counts prompts over it under each model's tokenizer "
              "(input_over_limit_rate).")


@app.command("report")
def report_cmd(
    comparison: str = typer.Argument(..., help="Comparison name (see `list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report JSON."),
    match: Optional[str] = typer.Option(None, "--match", help="Apply one match rule to every case."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="Regex for --match regex."),
    refusal_pattern: list[str] = typer.Option([], "--refusal-pattern", help="Extra refusal regex (repeatable)."),
    schema: Optional[Path] = typer.Option(None, "--schema", help=SCHEMA_HELP),
    input_token_limit: Optional[int] = typer.Option(None, "--input-token-limit", min=1, help=LIMIT_HELP),
) -> None:
    """Paired metrics of a comparison with confidence intervals, p-values and flips."""
    from lib.review.report import build_report
    from lib.review.settings import ReviewSettings, read_schema_file

    overrides = ReviewSettings(schema=read_schema_file(schema) if schema else None,
                               input_token_limit=input_token_limit)
    report = build_report(engine(), comparison, match=match, pattern=pattern,
                          refusal_patterns=tuple(refusal_pattern), overrides=overrides)
    if as_json:
        print_json(report)
    else:
        print_table(report)
    if report.get("settings_note"):
        progress(f"note: {report['settings_note']}")
