"""CLI: `models search|show|test|discover|deprecations` — choose the upgrade from litellm's bundled model map.

`models test` exits 1 when a model fails the one-request check; `models deprecations --within DAYS` exits 1
when a model in use is deprecated within DAYS (for cron and CI), 0 otherwise; 2 on bad input everywhere.
Module-level imports stay light: the catalogue (and litellm) load inside the commands.
"""
from __future__ import annotations

from datetime import date
from typing import Any, Optional

import typer

from lib.cli.app import app, fail, print_json

models_app = typer.Typer(help="Find models (versions, prices, context, deprecation dates), check keys and "
                              "connections, watch deprecations.", no_args_is_help=True)
app.add_typer(models_app, name="models")

_OVERRIDES_HELP = "Override file (TOML: model -> deprecation_date, prices); default $REVIEW_MODEL_OVERRIDES."


def _overrides_option() -> Any:
    return typer.Option(None, "--overrides", help=_OVERRIDES_HELP)


def _row_line(row: dict[str, Any]) -> str:
    from lib.review import fmt

    price_in = fmt.usd_per_million(row["input_cost_per_token"])
    price_out = fmt.usd_per_million(row["output_cost_per_token"])
    return (f"{row['model']:<44} {row['provider'] or fmt.DASH:<14} {price_in:>11} {price_out:>11} "
            f"{fmt.num(row['max_input_tokens']):>9} {row['deprecation_date'] or fmt.DASH:>10}")


@models_app.command("search")
def search_cmd(text: str = typer.Argument("", help="Words every model name contains ('gpt-4o', 'claude sonnet')."),
               provider: Optional[str] = typer.Option(None, "--provider", help="Only this provider (e.g. openai)."),
               all_modes: bool = typer.Option(False, "--all-modes",
                                              help="Include embedding, image and audio models (default: chat)."),
               limit: int = typer.Option(50, "--limit", min=1, help="At most this many rows."),
               overrides: Optional[str] = _overrides_option(),
               as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """Search the bundled model map (works offline): provider, prices, context window, deprecation date."""
    from lib.catalog.catalogue import catalogue

    cat = catalogue(overrides)
    if provider and provider not in cat.providers():
        fail(f"unknown provider '{provider}' (known: {', '.join(cat.providers()[:40])}, ...)")
    rows = [m.search_row() for m in cat.search(text, provider=provider, mode=None if all_modes else "chat",
                                               limit=limit)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"No model matches '{text}'. Any litellm model string still works in `./review run`.")
        return
    typer.echo(f"{'MODEL':<44} {'PROVIDER':<14} {'INPUT':>11} {'OUTPUT':>11} {'CONTEXT':>9} {'DEPRECATES':>10}")
    for row in rows:
        typer.echo(_row_line(row))
    typer.echo(f"source: {cat.source}", err=True)


def _show_text(data: dict[str, Any]) -> None:
    from lib.review import fmt

    known = "in the map" if data["known"] else "not in the map"
    typer.echo(f"{data['model']} ({data['provider'] or 'provider unknown'}; {known})")
    typer.echo(f"  family {data['family']}, version date {data['version_date'] or fmt.DASH}, "
               f"mode {data['mode'] or fmt.DASH}")
    price_in, price_out = data["input_cost_per_token"], data["output_cost_per_token"]
    typer.echo(f"  context {fmt.num(data['max_input_tokens'])} tokens; price in {fmt.usd_per_million(price_in)}, "
               f"out {fmt.usd_per_million(price_out)}" + ("" if price_in is not None else " (unknown, not free)"))
    typer.echo(f"  deprecation date {data['deprecation_date'] or 'none announced'}"
               + (f"; successor {data['successor']}" if data["successor"] else ""))
    typer.echo(f"  key: {data['key']['message']}")
    typer.echo(f"  source: {data['source']}")
    if data["versions"]:
        typer.echo("  versions (oldest first): " + ", ".join(data["versions"]))
    if data["candidates"]:
        typer.echo("  candidates: " + ", ".join(data["candidates"]))


@models_app.command("show")
def show_cmd(name: str = typer.Argument(..., help="A litellm model string, e.g. gpt-4o-2024-08-06."),
             overrides: Optional[str] = _overrides_option(),
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One model: prices, context window, deprecation date, key status, its family's versions and candidates."""
    from lib.catalog.catalogue import catalogue
    from lib.catalog.keys import key_status

    name = name.strip()
    if not name:
        fail("a model name is required")
    cat = catalogue(overrides)
    info = cat.info(name)
    keys = key_status(name)
    data = info.to_dict() | {
        "known": cat.lookup(name) is not None,
        "key": {"needed": list(keys.needed), "present": keys.present, "where": keys.where, "message": keys.message},
        "versions": [m.model for m in cat.family(info.family, info.provider)] if cat.lookup(name) else [],
        "candidates": [m.model for m in cat.candidates(name)]}
    if as_json:
        print_json(data)
    else:
        _show_text(data)


@models_app.command("test")
def test_cmd(names: list[str] = typer.Argument(..., help="One or more litellm model strings (e.g. baseline and "
                                                         "candidate)."),
             api_base: Optional[str] = typer.Option(None, "--api-base", help="OpenAI-compatible server URL."),
             timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds to wait for the answer."),
             as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """Send one tiny request per model: latency, served model id, fingerprint, or the error in plain words.
    Exits 1 when any model fails."""
    from lib.catalog.connection import test_connection

    results = [test_connection(n, api_base, timeout) for n in names if n.strip()]
    if not results:
        fail("a model name is required")
    if as_json:
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            if r.ok:
                typer.echo(f"ok    {r.model}: {r.latency_s:.2f} s, served {r.served_model or 'not reported'}, "
                           f"fingerprint {r.fingerprint or 'none'}")
            else:
                typer.echo(f"FAIL  {r.model}: {r.message}")
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@models_app.command("discover")
def discover_cmd(api_base: str = typer.Option(..., "--api-base", help="OpenAI-compatible server URL (…/v1)."),
                 as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """The models an OpenAI-compatible server lists (GET /models); call them as openai/ID with --api-base."""
    from lib.catalog.discovery import discover_models

    ids = discover_models(api_base)
    if as_json:
        print_json(ids)
        return
    for model_id in ids:
        typer.echo(f"openai/{model_id}")


def _parse_today(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"--today must be a date YYYY-MM-DD (got '{value}')")
    return None


@models_app.command("deprecations")
def deprecations_cmd(within: Optional[int] = typer.Option(None, "--within", min=0,
                                                          help="Exit 1 when a model in use is deprecated within "
                                                               "this many days (or already is)."),
                     today: Optional[str] = typer.Option(None, "--today", help="Count days from this date "
                                                                               "(YYYY-MM-DD; default today, UTC)."),
                     overrides: Optional[str] = _overrides_option(),
                     as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """Every model in use (comparisons' baselines and candidates, monitored models, judges) with its deprecation
    date and days left, soonest first."""
    from lib.catalog.catalogue import catalogue
    from lib.catalog.radar import deprecations
    from lib.catalog.radar import within as due
    from lib.store.engine import get_engine

    rows = deprecations(get_engine(), today=_parse_today(today), cat=catalogue(overrides))
    soon = due(rows, within) if within is not None else []
    if as_json:
        print_json([r.to_dict() for r in rows])
    elif not rows:
        typer.echo("No model in use yet.")
    else:
        typer.echo(f"{'MODEL':<40} {'ROLES':<28} {'DEPRECATES':>10} {'DAYS LEFT':>9}  SOURCE")
        for r in rows:
            days = "-" if r.days_left is None else str(r.days_left)
            typer.echo(f"{r.model:<40} {', '.join(r.roles):<28} {r.deprecation_date or '-':>10} {days:>9}  "
                       f"{r.source}")
    if soon:
        typer.echo(f"{len(soon)} model(s) in use deprecated within {within} days: "
                   + ", ".join(f"{r.model} ({r.deprecation_date})" for r in soon), err=True)
        raise typer.Exit(1)


@models_app.command("cost")
def cost_cmd(comparison: str = typer.Argument(..., help="A comparison name (see `./review list`)."),
             requests_per_day: float = typer.Option(10_000, "--requests-per-day", min=0,
                                                    help="Traffic for the monthly projection (30 days)."),
             overrides: Optional[str] = _overrides_option(),
             as_json: bool = typer.Option(False, "--json", help="Print the report's cost_projection as JSON.")) -> None:
    """The cost of staying vs upgrading: cost per 1,000 requests of each side from the comparison's own token
    counts, the difference with its bootstrap CI, and a monthly projection."""
    from lib.catalog.catalogue import catalogue
    from lib.catalog.cost import cost_projection as project
    from lib.catalog.cost import monthly
    from lib.errors import ComparisonNotFound
    from lib.review import fmt
    from lib.store.engine import get_engine

    cost = project(get_engine(), comparison, cat=catalogue(overrides))
    if cost is None:
        raise ComparisonNotFound(f"no comparison named '{comparison}' (see `./review list`)")
    if as_json:
        print_json(cost)
        return
    for side in ("baseline", "candidate"):
        p = cost["prices"][side]
        typer.echo(f"{side:<9} {p['model']}: in {fmt.usd_per_million(p['input_cost_per_token'])}, "
                   f"out {fmt.usd_per_million(p['output_cost_per_token'])} ({p['source']})")
    if cost["delta_per_1k"] is None:
        typer.echo("cost per 1,000 requests: unknown (a price is unknown or no case has token counts on both sides)")
        return
    typer.echo(f"per 1,000 requests (n={cost['n']} cases): {fmt.usd(cost['baseline_per_1k'])} -> "
               f"{fmt.usd(cost['candidate_per_1k'])}, {fmt.usd(cost['delta_per_1k'], '+')} "
               f"[{fmt.usd(cost['ci_low'], '+')}, {fmt.usd(cost['ci_high'], '+')}] (95% bootstrap CI)")
    base, cand = monthly(cost["baseline_per_1k"], requests_per_day), monthly(cost["candidate_per_1k"], requests_per_day)
    lo, hi = monthly(cost["ci_low"], requests_per_day), monthly(cost["ci_high"], requests_per_day)
    assert base is not None and cand is not None
    typer.echo(f"per month at {fmt.num(requests_per_day)} requests/day: {fmt.usd(base)} -> {fmt.usd(cand)}, "
               f"{fmt.usd(cand - base, '+')} [{fmt.usd(lo, '+')}, {fmt.usd(hi, '+')}]")
