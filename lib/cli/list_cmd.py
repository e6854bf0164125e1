"""`list`: comparisons with their status and counts."""
from __future__ import annotations

import typer

from lib.cli.app import app, engine, print_json


@app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """List comparisons (name, baseline, candidate, cases, status)."""
    from lib.review.comparisons import list_comparisons

    rows = list_comparisons(engine())
    if as_json:
        print_json([{k: v for k, v in r.items() if k not in ("baseline_run", "candidate_run")} for r in rows])
        return
    if not rows:
        typer.echo("No comparisons yet. Create one with `run` or `load`.")
        return
    header = f"{'NAME':<28} {'BASELINE':<26} {'CANDIDATE':<26} {'CASES':>6} {'ERRORS':>6}  STATUS"
    typer.echo(header)
    for r in rows:
        typer.echo(f"{r['name']:<28} {r['baseline']:<26} {r['candidate']:<26} "
                   f"{r['n_cases']:>6} {r['n_errors']:>6}  {r['status']}")
