"""The shared Typer app. Command modules register on `app` (or a sub-app) at import.

Exit codes: 0 success, 2 bad input or usage (one line on stderr, no traceback), 1 other failure.
Commands with their own verdict codes (gate: 3 inconclusive) raise typer.Exit themselves.
"""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

app = typer.Typer(
    name="review",
    help="Upgrade Review: compare a baseline and a candidate model, review, gate and decide.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def engine() -> Engine:
    """The store's engine, imported on first use: `--help` never loads SQLAlchemy (start-up <= 1 s)."""
    from lib.store.engine import get_engine

    return get_engine()


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit (2 = bad input)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def progress(message: str) -> None:
    """Progress and status lines go to stderr so stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)
