"""`log import|list`, `timeline`, `compare-windows`, `similar`: production logs over time."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from lib.cli.app import app, print_json, progress
from lib.cli.data_cmds import TIMESTAMP_FORMAT_HELP  # one wording for load and log import

log_app = typer.Typer(help="Production logs: import a log to see one model over time.", no_args_is_help=True)
app.add_typer(log_app, name="log")

@log_app.command("import")
def log_import(
    path: Path = typer.Argument(..., help="A CSV, JSONL (.gz too: streamed), JSON or Parquet log."),
    name: str = typer.Option(..., "--name", help="Name of the new log."),
    id_col: Optional[str] = typer.Option(None, "--id-col", help="Request id column."),
    input_col: Optional[str] = typer.Option(None, "--input-col", help="Input (prompt) column; optional."),
    output_col: Optional[str] = typer.Option(None, "--output-col", help="Output (response) column."),
    model_col: Optional[str] = typer.Option(None, "--model-col", help="Model column."),
    latency_col: Optional[str] = typer.Option(None, "--latency-col", help="Latency column (*_ms is converted)."),
    cost_col: Optional[str] = typer.Option(None, "--cost-col", help="Cost (USD) column."),
    prompt_tokens_col: Optional[str] = typer.Option(None, "--prompt-tokens-col", help="Prompt tokens column."),
    completion_tokens_col: Optional[str] = typer.Option(
        None, "--completion-tokens-col", help="Completion tokens column."),
    timestamp_col: Optional[str] = typer.Option(None, "--timestamp-col", help="Timestamp column (UTC)."),
    timestamp_format: Optional[str] = typer.Option(None, "--timestamp-format", help=TIMESTAMP_FORMAT_HELP),
) -> None:
    """Store a production log (timestamp, model, output; input, id, latency, tokens, cost, metadata optional)."""
    from lib.data.loaders import LoadMapping
    from lib.release.log_import import import_log_file
    from lib.store.engine import get_engine

    mapping = LoadMapping(id_col=id_col, input_col=input_col, output_col=output_col, model_col=model_col,
                          latency_col=latency_col, cost_col=cost_col, prompt_tokens_col=prompt_tokens_col,
                          completion_tokens_col=completion_tokens_col, timestamp_col=timestamp_col,
                          timestamp_format=timestamp_format)
    result = import_log_file(get_engine(), path, name, mapping, progress=lambda rows: progress(f"read {rows} rows"))
    for warning in result.warnings:
        progress(f"warning: {warning}")
    models = ", ".join(f"{m} ({n})" for m, n in result.models.items())
    typer.echo(f"imported log '{result.name}': {result.rows} rows, {result.first} .. {result.last}; models: {models}")
    typer.echo(f"next: ./review timeline {result.name}")


@app.command("timeline")
def timeline_cmd(
    name: str = typer.Argument(..., help="Log name (see `log import`)."),
    model: Optional[str] = typer.Option(None, "--model", help="Only this model."),
    window: str = typer.Option("day", "--window", help="hour | day | week."),
    as_json: bool = typer.Option(False, "--json", help="Print the timeline JSON."),
) -> None:
    """Per-window metrics of a log per model, and the change points (confirmed by an unpaired test)."""
    from lib.release.timeline import timeline
    from lib.store.engine import get_engine

    doc = timeline(get_engine(), name, model, window)
    if as_json:
        print_json(doc)
        return
    _print_timeline(doc)


def _print_timeline(doc: dict[str, Any]) -> None:
    from lib.review import fmt

    typer.echo(f"{'MODEL':<24} {'START':<26} {'N':>7} {'REFUSAL':>8} {'EMPTY':>7} {'JSON':>7} {'LENGTH':>8} "
               f"{'ERRORS':>7} {'LATENCY':>8}")
    for w in doc["windows"]:
        m = w["metrics"]
        typer.echo(f"{w['model']:<24} {w['start']:<26} {w['n']:>7} {fmt.pct(m['refusal_rate']):>8} "
                   f"{fmt.pct(m['empty_rate']):>7} {fmt.pct(m['json_valid_rate']):>7} "
                   f"{fmt.num(m['length_chars_mean']):>8} {fmt.pct(m['error_rate']):>7} "
                   f"{fmt.num(m['latency_s_mean']):>8}")
    if not doc["change_points"]:
        typer.echo("no change points")
    for p in doc["change_points"]:
        typer.echo(f"change point: {p['model']} {p['metric']} at {p['at']}: {_value(p, 'before')} -> "
                   f"{_value(p, 'after')} ({_delta(p)}, p {fmt.p_value(p['p_value'])})")


def _value(block: dict[str, Any], key: str) -> str:
    from lib.review import fmt

    return fmt.metric_value(block[key], block["metric"].endswith("_rate"))


def _delta(block: dict[str, Any]) -> str:
    from lib.review import fmt

    return fmt.metric_delta(block["delta"], block["ci_low"], block["ci_high"], block["metric"].endswith("_rate"))


@app.command("compare-windows")
def compare_windows_cmd(
    name: str = typer.Argument(..., help="Log name."),
    before: str = typer.Option(..., "--before", help="START..END (ISO dates or times, UTC; END date inclusive)."),
    after: str = typer.Option(..., "--after", help="START..END."),
    model: Optional[str] = typer.Option(None, "--model", help="Only this model."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison JSON."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write the output drift report (HTML) here."),
) -> None:
    """Two periods of a log: every metric (unpaired CI, p, n), Evidently drift, example requests."""
    from lib.release.timeline_compare import compare_windows
    from lib.store.engine import get_engine

    doc, pages = compare_windows(get_engine(), name, before, after, model)
    if html is not None and "outputs" in pages:
        html.write_text(pages["outputs"], encoding="utf-8")
        progress(f"wrote the output drift report to {html}")
    if as_json:
        print_json(doc)
        return
    from lib.review import fmt

    typer.echo(f"{name}: before {doc['before']['start']} .. {doc['before']['end']} (n={doc['before']['n']}) vs "
               f"after {doc['after']['start']} .. {doc['after']['end']} (n={doc['after']['n']})")
    for metric, m in doc["metrics"].items():
        if m is None:
            continue
        rate = metric.endswith("_rate")
        typer.echo(f"{metric:<20} {fmt.metric_value(m['before'], rate):>9} {fmt.metric_value(m['after'], rate):>9}  "
                   f"{fmt.metric_delta(m['delta'], m['ci_low'], m['ci_high'], rate):<30} p {fmt.p_value(m['p_value'])}")
    for kind, block in doc["drift"].items():
        if block and "drifted_share" in block:
            typer.echo(f"drift of {kind}: {fmt.pct(block['drifted_share'])} of columns drifted")
        elif block:
            typer.echo(f"drift of {kind}: skipped ({block['skipped']})")


@app.command("similar")
def similar_cmd(
    name: str = typer.Argument(..., help="Log name."),
    text: str = typer.Argument(..., help="A complaint or an example request."),
    model: Optional[str] = typer.Option(None, "--model", help="Only this model."),
    at: Optional[str] = typer.Option(None, "--at", help="The change (ISO time); default: the first change point."),
    k: int = typer.Option(5, "--k", min=1, max=100, help="Requests per period."),
    embeddings: Optional[str] = typer.Option(
        None, "--embeddings", help="Search by embeddings: 'local' (optional package) or a litellm embedding model."),
    api_base: Optional[str] = typer.Option(None, "--api-base", help="API base of the embedding model."),
    as_json: bool = typer.Option(False, "--json", help="Print the results JSON."),
) -> None:
    """The logged requests nearest a complaint, with their outputs before and after the change."""
    from lib.release.timeline_search import similar
    from lib.store.engine import get_engine

    doc = similar(get_engine(), name, text, model, at, k, embeddings, api_base)
    if as_json:
        print_json(doc)
        return
    typer.echo(f"nearest requests by their {doc['searched']} (split at {doc['split_at'] or 'no change point'}):")
    for r in doc["results"]:
        typer.echo(f"[{r['period'] or '-'}] {r['ts']} {r['request_id']} score {r['score']}: "
                   f"{(r['input'] or '')[:80]!r} -> {(r['output'] or '')[:100]!r}")


@log_app.command("list")
def log_list(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """Imported production logs."""
    from lib.release.log_import import list_logs
    from lib.store.engine import get_engine

    logs = list_logs(get_engine())
    if as_json:
        print_json(logs)
        return
    if not logs:
        typer.echo("No logs yet. Import one with `./review log import FILE --name NAME`.")
    for log in logs:
        models = ", ".join(f"{m} ({n})" for m, n in log["models"].items())
        typer.echo(f"{log['name']:<24} {log['rows']:>9} rows  {log['source']}  models: {models}")
