"""`drift`: Evidently drift report of a comparison's outputs (candidate against baseline), stored with
the comparison; `drift-inputs`: the same over logged inputs of two sources or two time windows."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from lib.cli.app import app, engine, print_json, progress

if TYPE_CHECKING:  # lib.drift.analysis imports Evidently (~5 s): only when a drift command runs
    from lib.drift.analysis import DriftOptions
    from lib.drift.evidently_report import DriftRun

NO_EMBEDDINGS = "none"  # = lib.drift.analysis.NO_EMBEDDINGS

EMBEDDINGS_HELP = ("none, local (all-MiniLM-L6-v2 from requirements-embeddings.txt), or a litellm embedding "
                   "model such as openai/text-embedding-3-small.")
# Options both commands share (Typer reads these defaults; they are never mutated).
HTML = typer.Option(None, "--html", metavar="PATH", help="Write the self-contained HTML report.")
AS_JSON = typer.Option(False, "--json", help="Print the summary as JSON.")
EMBEDDINGS = typer.Option(NO_EMBEDDINGS, "--embeddings", metavar="MODEL", help=EMBEDDINGS_HELP)
API_BASE = typer.Option(None, "--api-base", metavar="URL",
                        help="Endpoint of the embedding model (an OpenAI-compatible server: openai/NAME).")
REGEX = typer.Option(None, "--regex", metavar="NAME=PATTERN",
                     help="A reviewer descriptor: 1 where the pattern is found (repeatable).")
SPLIT_AT = typer.Option(None, "--split-at", metavar="TIME",
                        help="ISO time: without CURRENT, REFERENCE before it against REFERENCE from it on; "
                             "with CURRENT, CURRENT from it on.")


def _options(embeddings: str, api_base: str | None, regex: list[str] | None) -> DriftOptions:
    from lib.drift.analysis import DriftOptions, parse_regex

    return DriftOptions(embeddings=embeddings, api_base=api_base, regex=parse_regex(regex or []))


def _emit(run: DriftRun, html: Path | None, as_json: bool) -> None:
    if html is not None:
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(run.html, encoding="utf-8")
        progress(f"report written to {html}")
    if as_json:
        print_json(run.summary)
        return
    typer.echo(f"{'COLUMN':<24} {'DRIFTED':<8} {'SCORE':>10}  METHOD")
    for name, col in run.summary["columns"].items():
        typer.echo(f"{name:<24} {'yes' if col['drifted'] else 'no':<8} {col['score']:>10.4g}  {col['method']}")
    for name, reason in run.details["skipped"].items():
        typer.echo(f"{name:<24} {'-':<8} {'':>10}  not tested: {reason}")
    typer.echo(f"drifted share: {run.summary['drifted_share']:.3g}")


@app.command("drift")
def drift_cmd(comparison: str = typer.Argument(..., help="Comparison name."),
              html: Optional[Path] = HTML, as_json: bool = AS_JSON, embeddings: str = EMBEDDINGS,
              api_base: Optional[str] = API_BASE, regex: Optional[list[str]] = REGEX) -> None:
    """Drift of the candidate's outputs from the baseline's; the result is stored for the gate."""
    from lib.drift.analysis import analyze_comparison

    run, stored = analyze_comparison(engine(), comparison, _options(embeddings, api_base, regex), progress)
    progress(f"stored drift result {stored.id} (digest {stored.digest[:12]})")
    _emit(run, html, as_json)


@app.command("drift-inputs")
def drift_inputs_cmd(reference: str = typer.Argument(..., help="Reference comparison or dataset."),
                     current: Optional[str] = typer.Argument(None, help="Current comparison or dataset."),
                     split_at: Optional[str] = SPLIT_AT, html: Optional[Path] = HTML, as_json: bool = AS_JSON,
                     embeddings: str = EMBEDDINGS, api_base: Optional[str] = API_BASE,
                     regex: Optional[list[str]] = REGEX) -> None:
    """Drift of logged inputs between two sources or two time windows (traffic shift)."""
    from lib.drift.analysis import input_drift

    run = input_drift(engine(), reference, current, _parse_time(split_at),
                      _options(embeddings, api_base, regex), progress)
    _emit(run, html, as_json)


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        from lib.drift.analysis import DriftInputError

        raise DriftInputError(f"--split-at {value!r}: expected an ISO time such as 2025-06-01T00:00:00Z") from None
