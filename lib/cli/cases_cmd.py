"""`cases COMPARISON --format jsonl|csv|parquet [--output PATH]`: one record per pair, every check."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from lib.cli.app import app, progress

FORMAT_HELP = "jsonl (one JSON object per pair), csv (flattened: baseline.text, ...) or parquet (needs --output)."


@app.command("cases")
def cases_cmd(
    comparison: str = typer.Argument(..., help="Comparison name (see `list`)."),
    fmt: str = typer.Option("jsonl", "--format", help=FORMAT_HELP),
    output: Optional[Path] = typer.Option(None, "--output", help="Write to this file instead of stdout."),
) -> None:
    """Per-case export: inputs, both outputs and every per-output check, reviewer labels applied."""
    from lib.review.cases_export import write
    from lib.store.engine import get_engine

    n = write(get_engine(), comparison, fmt, None if output else sys.stdout, output)
    if output:
        progress(f"wrote {n} pairs to {output}")
