"""CLI: `monitor run|baseline|list` — watch a pinned model over time against its baseline snapshot.

`monitor run` exits 0 when every metric stays in its band, 1 on an alert (a metric out of its band, or a
changed fingerprint / served model under the same name), 2 on bad input: cron can notify on 1.
"""
from __future__ import annotations

from typing import Any, Optional

import typer

from lib.cli.app import app, engine, print_json
from lib.cli.run_cmd import _ProgressPrinter, model_spec, run_options
from lib.cli.run_options import with_run_options

monitor_app = typer.Typer(help="Watch a pinned model: re-run the golden set, compare with the baseline snapshot.",
                          no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


def _print_point(p: dict[str, Any]) -> None:
    head = "BASELINE" if p["status"] == "baseline" else p["status"].upper()
    typer.echo(f"point {p['point_id']} of {p['model']} on {p['dataset']} v{p['dataset_version']}: {head}"
               + (f" (compared with baseline point {p['baseline_point_id']} in '{p['comparison']}')"
                  if p["comparison"] else ""))
    run = p["run"]
    typer.echo(f"  run {run['run_id']}: {run['n_outputs']} outputs, {run['n_errors']} errors, {run['wall_s']}s; "
               f"fingerprint {p['system_fingerprint'] or '-'}, served {p['served_model'] or '-'}")
    for key, m in p["metrics"].items():
        ci = f"[{m['ci_low']:.4g}, {m['ci_high']:.4g}]" if m.get("ci_low") is not None else "-"
        typer.echo(f"  {key:<24} {m['baseline']:.4g} -> {m['candidate']:.4g}  delta {m['delta']:+.4g} {ci}  "
                   f"n={m['n']}")
    for a in p["alerts"]:
        typer.echo(f"ALERT {a['metric']} ({a['threshold']} {a['margin']:g}): {a['reason']}")
    for f in p["findings"]:
        typer.echo(f"FINDING {f['kind']}: {f['detail']}")


# `run`'s prompt stack, parameters and call options; not its two models, name, dry run or workers (one model).
_NOT_MONITOR = frozenset({"dataset", "baseline", "candidate", "name", "baseline_api_base", "candidate_api_base",
                          "workers", "dry_run"})


@monitor_app.command("run")
@with_run_options(exclude=_NOT_MONITOR)
def monitor_run_cmd(
    dataset: str = typer.Option(..., "--dataset", help="Golden dataset name (the baseline's version)."),
    model: str = typer.Option(..., "--model", help="The pinned litellm model identifier."),
    policy: Optional[str] = typer.Option(None, "--policy", help="Bands from this policy's criteria (default: "
                                                                "the documented default bands)."),
    policy_version: Optional[int] = typer.Option(None, "--policy-version", help="A policy version."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge each point's comparison with this model "
                                                              "(default rubric); its scores are tracked."),
    judge_api_base: Optional[str] = typer.Option(None, "--judge-api-base", help="The judge's endpoint."),
    judge_sample: Optional[str] = typer.Option(None, "--judge-sample", help="Judge a share (0.2, 20%) or a count "
                                                                            "of the pairs. Default: every pair."),
    baseline: bool = typer.Option(False, "--baseline", help="Make this run the series' new baseline snapshot."),
    as_json: bool = typer.Option(False, "--json", help="Print the point as JSON."),
    *,
    run_kwargs: dict[str, Any],  # run's options, filled by with_run_options
) -> None:
    """Re-run the golden set against the same model; exit 0 in band, 1 alert, 2 bad input."""
    from lib.catalog.keys import require_keys
    from lib.release.monitor import JudgeRequest, monitor_run
    from lib.run.resident import key_statuses

    spec = model_spec(model, run_kwargs["api_base"], run_kwargs)
    require_keys([(spec.model, spec.api_base)], key_statuses)  # else every call fails: a point of errors
    point = monitor_run(engine(), dataset=dataset, spec=spec, options=run_options(run_kwargs), policy=policy,
                        policy_version=policy_version, make_baseline=baseline, system=run_kwargs["system"],
                        judge=JudgeRequest(judge, judge_api_base, judge_sample) if judge else None,
                        progress=_ProgressPrinter())
    if as_json:
        print_json(point.to_dict())
    else:
        _print_point(point.to_dict())
    if point.exit_code:
        raise SystemExit(point.exit_code)  # see governance_cmds._exit: typer.Exit's code would be lost


@monitor_app.command("baseline")
def monitor_baseline_cmd(point: int = typer.Argument(..., help="The point to make its series' baseline."),
                         as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Mark a point as the baseline snapshot of its series."""
    from lib.release.monitor import mark_baseline

    info = mark_baseline(engine(), point)
    if as_json:
        print_json(info)
    else:
        typer.echo(f"point {info['id']} ({info['model']} on {info['dataset']}, run {info['run_id']}) is now the "
                   "baseline of its series")


@monitor_app.command("list")
def monitor_list_cmd(model: Optional[str] = typer.Option(None, "--model", help="Only this model."),
                     as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List monitor points (oldest first within a series)."""
    from lib.release.monitor import list_points

    rows = list_points(engine(), model)
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("No monitor points yet. Start with `monitor run --dataset NAME --model MODEL`.")
        return
    typer.echo(f"{'ID':>4} {'MODEL':<28} {'DATASET':<16} {'CREATED':<20} {'STATUS':<15} {'ALERTS':>6}  FINGERPRINT")
    for r in rows:
        status = r["status"] + ("*" if r["is_baseline"] else "")
        typer.echo(f"{r['id']:>4} {r['model']:<28} {r['dataset']:<16} {r['created_at'][:19]:<20} {status:<15} "
                   f"{len(r['alerts']) + len(r['findings']):>6}  {r['system_fingerprint'] or '-'}")
    typer.echo("* the series' baseline snapshot")
