"""`dataset import|list` (golden datasets) and `load` (recorded comparisons)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lib.cli.app import app, engine, print_json, progress
from lib.cli.report_cmd import LIMIT_HELP, SCHEMA_HELP
from lib.data.formats import FORMATS

TIMESTAMP_FORMAT_HELP = ("strftime format of the timestamps, e.g. '%m/%d/%Y, %H:%M:%S' (default: ISO 8601 or epoch "
                         "seconds/milliseconds; a day/month order is never guessed).")

dataset_app = typer.Typer(help="Golden datasets: import a file, list versions.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("import")
def dataset_import(
    path: Path = typer.Argument(..., help="A .jsonl, .csv or .json file of cases."),
    name: str = typer.Option(..., "--name", help="Dataset name; new content makes a new version."),
    id_col: Optional[str] = typer.Option(None, "--id-col", help="Column with the case id [id]."),
    input_col: Optional[str] = typer.Option(None, "--input-col", help="Column with the input [input]."),
    expected_col: Optional[str] = typer.Option(None, "--expected-col", help="Expected-output column [expected]."),
    category_col: Optional[str] = typer.Option(None, "--category-col", help="Category column [category]."),
) -> None:
    """Import a golden dataset (fields: id, input, expected, match, pattern, schema, category, metadata)."""
    from lib.data.golden import ColumnMapping, import_dataset_file

    overrides = {"id": id_col, "input": input_col, "expected": expected_col, "category": category_col}
    mapping = ColumnMapping(**{k: v for k, v in overrides.items() if v is not None})
    result = import_dataset_file(engine(), path, name, mapping)
    for warning in result.warnings:
        progress(f"warning: {warning}")
    verb = "imported" if result.created else "unchanged:"
    typer.echo(f"{verb} dataset '{result.name}' version {result.version} ({result.n_cases} cases)")


@dataset_app.command("list")
def dataset_list(as_json: bool = typer.Option(False, "--json", help="Print a JSON list.")) -> None:
    """List dataset versions (newest first within a name)."""
    from lib.data.golden import list_datasets

    rows = list_datasets(engine())
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("No datasets yet. Import one with `dataset import PATH --name NAME`.")
        return
    typer.echo(f"{'NAME':<28} {'VERSION':>7} {'CASES':>7} {'RUNS':>5}  {'CREATED':<20} SOURCE")
    for r in rows:
        created = r["created_at"].strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(f"{r['name']:<28} {r['version']:>7} {r['n_cases']:>7} {r['used_by_runs']:>5}  "
                   f"{created:<20} {r['source'] or ''}")


@app.command("load")
def load(
    path: Path = typer.Argument(..., help="A wide/long CSV, JSONL or JSON file, promptfoo output, or a "
                                          "shadow log (.csv/.jsonl, .gz too: streamed)."),
    name: str = typer.Option(..., "--name", help="Name of the new comparison."),
    fmt: Optional[str] = typer.Option(None, "--format", help=f"{' | '.join(FORMATS)} (detected when omitted)."),
    system: str = typer.Option("default", "--system", help="The system (product) this comparison belongs to."),
    id_col: Optional[str] = typer.Option(None, "--id-col", help="Case id / join key column."),
    input_col: Optional[str] = typer.Option(None, "--input-col", help="Input column."),
    output_col: Optional[str] = typer.Option(None, "--output-col", help="long: output column."),
    model_col: Optional[str] = typer.Option(None, "--model-col", help="long: model column."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="Baseline model value / provider id / name."),
    candidate: Optional[str] = typer.Option(
        None, "--candidate", help="Candidate model value / provider id / name."),
    baseline_col: Optional[str] = typer.Option(None, "--baseline-col", help="wide: baseline output column."),
    candidate_col: Optional[str] = typer.Option(None, "--candidate-col", help="wide: candidate output column."),
    expected_col: Optional[str] = typer.Option(None, "--expected-col", help="Expected-output column."),
    category_col: Optional[str] = typer.Option(None, "--category-col", help="Category column."),
    latency_col: Optional[str] = typer.Option(
        None, "--latency-col", help="Latency column (*_ms is converted); wide: after the side prefix."),
    cost_col: Optional[str] = typer.Option(None, "--cost-col", help="Cost (USD) column."),
    prompt_tokens_col: Optional[str] = typer.Option(None, "--prompt-tokens-col", help="Prompt tokens column."),
    completion_tokens_col: Optional[str] = typer.Option(
        None, "--completion-tokens-col", help="Completion tokens column."),
    timestamp_col: Optional[str] = typer.Option(None, "--timestamp-col", help="Log timestamp column (UTC)."),
    timestamp_format: Optional[str] = typer.Option(
        None, "--timestamp-format", help=TIMESTAMP_FORMAT_HELP),
    role_col: Optional[str] = typer.Option(
        None, "--role-col", help="shadow: column saying serving (baseline) or shadow (candidate) per row; "
                                 "--baseline/--candidate then only name the sides."),
    match: Optional[str] = typer.Option(None, "--match", help="Match rule for every case."),
    pattern: Optional[str] = typer.Option(None, "--pattern", help="Pattern for --match regex."),
    refusal_pattern: list[str] = typer.Option([], "--refusal-pattern", help="Extra refusal regex (repeatable)."),
    schema: Optional[Path] = typer.Option(None, "--schema", help=SCHEMA_HELP),
    input_token_limit: Optional[int] = typer.Option(None, "--input-token-limit", min=1, help=LIMIT_HELP),
) -> None:
    """Load a recorded comparison: outputs two models already produced."""
    from lib.data.loaders import LoadMapping, load_recorded_file

    review = None
    if refusal_pattern or schema or input_token_limit:
        from lib.review.settings import ReviewSettings, read_schema_file

        review = ReviewSettings(refusal_patterns=tuple(refusal_pattern), input_token_limit=input_token_limit,
                                schema=read_schema_file(schema) if schema else None)
    mapping = LoadMapping(
        id_col=id_col, input_col=input_col, output_col=output_col, model_col=model_col, baseline=baseline,
        candidate=candidate, baseline_col=baseline_col, candidate_col=candidate_col,
        expected_col=expected_col, category_col=category_col, latency_col=latency_col, cost_col=cost_col,
        prompt_tokens_col=prompt_tokens_col, completion_tokens_col=completion_tokens_col,
        timestamp_col=timestamp_col, timestamp_format=timestamp_format, role_col=role_col, match=match,
        pattern=pattern, review=review)
    result = load_recorded_file(engine(), path, name, fmt, mapping, system,
                                progress=lambda rows: progress(f"read {rows} rows"))
    for note in result.notes:
        progress(f"note: {note}")
    for warning in result.warnings:
        progress(f"warning: {warning}")
    typer.echo(f"loaded comparison '{result.comparison}' ({result.fmt}): {result.n_pairs} pairs, "
               f"baseline {result.baseline} vs candidate {result.candidate}")
    if result.baseline_only or result.candidate_only:
        typer.echo(f"unpaired: {result.baseline_only} baseline-only and {result.candidate_only} "
                   f"candidate-only outputs (first ids: {', '.join(result.first_unpaired_ids)})")
