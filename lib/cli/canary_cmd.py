"""CLI: `canary check` — a policy's pre-declared rollback triggers on a canary's live-traffic log.

Exit 0 continue, 1 rollback, 3 not enough data yet, 2 bad input: a scheduler can roll back unattended.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lib.cli.app import app, engine, print_json

canary_app = typer.Typer(help="Canary: rollback triggers declared in a policy's [canary] section.",
                         no_args_is_help=True)
app.add_typer(canary_app, name="canary")


def _print(check) -> None:  # type: ignore[no-untyped-def]  (lib.release.canary.CanaryCheck, imported lazily)
    n = check.n
    typer.echo(f"Canary: {check.decision.upper()}  (policy {check.policy_name} v{check.policy_version} "
               f"sha256 {check.policy_hash[:16]}; control {n['control']}, canary {n['canary']} rows; "
               f"min_samples {check.min_samples}; {1 - check.alpha:.0%} intervals)")
    if check.post_hoc:
        typer.echo(f"POST-HOC: the policy was locked at {check.policy_locked_at}, after the window's first call "
                   f"at {check.window_first}")
    typer.echo(f"{'TRIGGER':<18} {'THRESHOLD':<13} {'MARGIN':>8} {'OBSERVED':>10}  {'CI':<24} STATUS")
    for t in check.triggers:
        ci = f"[{t.ci[0]:.4g}, {t.ci[1]:.4g}]" if t.ci else "-"
        observed = "-" if t.observed is None else f"{t.observed:.4g}"
        typer.echo(f"{t.metric:<18} {t.threshold:<13} {t.margin:>8g} {observed:>10}  {ci:<24} {t.status}")
        if t.status != "clear":
            typer.echo(f"    {t.reason}")
    for note in check.notes:
        typer.echo(f"note: {note}")


@canary_app.command("check")
def canary_check(
    policy: str = typer.Option(..., "--policy", help="Policy name (its latest version) with a [canary] section."),
    log: Path = typer.Option(..., "--log", help="The canary log: .csv or .jsonl, .gz too (streamed)."),
    since: Optional[str] = typer.Option(None, "--since", help="Only calls logged from then on (ISO 8601, UTC)."),
    as_json: bool = typer.Option(False, "--json", help="Print the check as JSON."),
    version: Optional[int] = typer.Option(None, "--policy-version", help="A policy version (default: latest)."),
    arm_col: Optional[str] = typer.Option(None, "--arm-col", help="Arm column [arm, variant, group, cohort]."),
    control: Optional[str] = typer.Option(None, "--control", help="The control's arm (or model) value."),
    canary: Optional[str] = typer.Option(None, "--canary", help="The canary's arm (or model) value."),
    model_col: Optional[str] = typer.Option(None, "--model-col", help="Model column naming the arms."),
    output_col: Optional[str] = typer.Option(None, "--output-col", help="Output column [output, response]."),
    latency_col: Optional[str] = typer.Option(None, "--latency-col", help="Latency column (*_ms converted)."),
    error_col: Optional[str] = typer.Option(None, "--error-col", help="Error column [error]."),
    judge_col: Optional[str] = typer.Option(None, "--judge-col", help="Judge score column [judge_score, score]."),
    schema_col: Optional[str] = typer.Option(None, "--schema-col", help="Per-row JSON Schema column [schema]."),
    timestamp_col: Optional[str] = typer.Option(None, "--timestamp-col", help="Timestamp column [timestamp]."),
    schema: Optional[Path] = typer.Option(None, "--schema", help="A JSON Schema file for rows without one."),
    refusal_pattern: list[str] = typer.Option([], "--refusal-pattern", help="Extra refusal regex (repeatable)."),
) -> None:
    """Evaluate the canary window. Exit 0 continue, 1 rollback, 3 not enough data yet, 2 bad input."""
    from lib.data.tables import open_input
    from lib.release.canary import CanaryInputError, CanaryLogError, CanaryMapping, check_canary

    schema_text = None
    if schema is not None:
        try:
            schema_text = schema.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CanaryInputError(f"--schema {schema}: cannot read ({exc})") from None
    mapping = CanaryMapping(arm_col=arm_col, control=control, canary=canary, model_col=model_col,
                            output_col=output_col, latency_col=latency_col, error_col=error_col,
                            judge_col=judge_col, schema_col=schema_col, timestamp_col=timestamp_col,
                            schema=schema_text, refusal_patterns=tuple(refusal_pattern))
    with open_input(log, CanaryLogError) as raw:
        check = check_canary(engine(), raw, log.name, policy, mapping, since=since, version=version)
    if as_json:
        print_json(check.to_dict())
    else:
        _print(check)
    if check.exit_code:
        raise SystemExit(check.exit_code)  # see governance_cmds._exit: typer.Exit's code would be lost
