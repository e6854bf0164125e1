"""`settings set|show NAME`: the one set of review settings of a comparison (report, pages and gate use it)."""
from __future__ import annotations

from typing import Optional

import typer

from lib.cli.app import app, print_json

settings_app = typer.Typer(help="Review settings of a comparison: the match rule, refusal patterns.",
                           no_args_is_help=True)
app.add_typer(settings_app, name="settings")


@settings_app.command("set")
def settings_set(
    comparison: str = typer.Argument(..., help="Comparison name (see `list`)."),
    match: Optional[str] = typer.Option(None, "--match", help="Match rule for every case."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="Regex for --match regex."),
    refusal_pattern: list[str] = typer.Option(
        [], "--refusal-pattern", help="Extra refusal regex (repeatable; replaces the stored list)."),
    clear_refusal_patterns: bool = typer.Option(False, "--clear-refusal-patterns",
                                                help="Remove every extra refusal pattern."),
) -> None:
    """Store the review settings (audited); options not given keep their stored value."""
    from dataclasses import replace

    from lib.review.settings import ReviewSettingsError, describe, save_settings, stored_settings
    from lib.store.engine import get_engine

    if pattern is not None and match is None:
        match = "regex"
    if match is None and not refusal_pattern and not clear_refusal_patterns:
        raise ReviewSettingsError("nothing to set: pass --match (and --pattern), --refusal-pattern or "
                                  "--clear-refusal-patterns")
    engine = get_engine()
    current = stored_settings(engine, comparison)
    changes: dict = {}
    if match is not None:
        changes |= {"match": match.strip().lower().replace("-", "_"), "pattern": pattern}
    if refusal_pattern or clear_refusal_patterns:
        changes["refusal_patterns"] = tuple(refusal_pattern)
    settings = replace(current, **changes)  # validated (rule, pattern, refusal regexes) before any write
    save_settings(engine, comparison, settings)
    typer.echo(f"settings of '{comparison}': {describe(settings)}")


@settings_app.command("show")
def settings_show(comparison: str = typer.Argument(..., help="Comparison name (see `list`)."),
                  as_json: bool = typer.Option(False, "--json", help="Print the settings as JSON.")) -> None:
    """The stored review settings of a comparison."""
    from lib.review.settings import describe, stored_settings
    from lib.store.engine import get_engine

    settings = stored_settings(get_engine(), comparison)
    if as_json:
        print_json(settings.as_dict())
    else:
        typer.echo(f"settings of '{comparison}': {describe(settings)}")
