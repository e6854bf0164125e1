"""`redteam`: import the red-team suite as a golden dataset and run it like `run` does, then summarise."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from lib.cli.app import app, engine, progress
from lib.cli.run_options import with_run_options
from lib.redteam.names import FAMILIES


def _import(families: Optional[str], extra: Optional[Path]) -> str:
    from lib.redteam.suite import import_suite, parse_families

    result = import_suite(engine(), parse_families(families), extra)
    state = "new version" if result.created else "unchanged, reused"
    progress(f"dataset {result.name} v{result.version}: {result.n_cases} probes ({state})")
    return result.name


def _print_summary(comparison: str) -> None:
    from lib.redteam.summary import family_results, summary_lines
    from lib.review.report import build_report

    results = family_results(build_report(engine(), comparison))
    if not results:
        typer.echo("no red-team case has outputs on both sides yet")
        return
    typer.echo(f"red-team results for '{comparison}' (baseline -> candidate):")
    for line in summary_lines(results):
        typer.echo("  " + line)


@app.command("redteam")
@with_run_options(exclude=frozenset({"dataset"}))
def redteam_cmd(
    families: Optional[str] = typer.Option(
        None, "--families", help=f"Comma-separated probe families (default: all of {','.join(FAMILIES)})."),
    extra: Optional[Path] = typer.Option(
        None, "--extra", help="Your own probes: a golden-dataset file whose category (or family) is a family."),
    *,
    run_kwargs: dict[str, Any],  # run's options, filled by with_run_options
) -> None:
    """Run the red-team suite through both models with `run`'s options; print per-family rates.

    Exits like `run` (1 when errors remain after retries; the same command resumes)."""
    from lib.cli.run_cmd import run_cmd

    dataset = _import(families, extra)
    try:
        run_cmd(dataset=dataset, **run_kwargs)
    except typer.Exit:  # errors remain after retries: summarise what was answered, then exit as run did
        _print_summary(run_kwargs["name"])
        raise
    if not run_kwargs["dry_run"]:
        _print_summary(run_kwargs["name"])
