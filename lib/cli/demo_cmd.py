"""`demo` (load the offline demo) and `recording export|import` (portable recorded comparisons)."""
from __future__ import annotations

from pathlib import Path

import typer

from lib.cli.app import app, engine, fail, progress

recording_app = typer.Typer(help="Export or import a comparison as a portable recording (JSONL).",
                            no_args_is_help=True)
app.add_typer(recording_app, name="recording")


@app.command("demo")
def demo_cmd() -> None:
    """Load the offline demo (dataset + a real recorded comparison) unless it is already loaded."""
    from lib.data.demo import load_demo

    result = load_demo(engine())
    typer.echo(result.message)


@recording_app.command("export")
def export_cmd(
    comparison: str = typer.Argument(..., help="The comparison to export."),
    out: Path = typer.Option(None, "--out", "-o", help="File to write (default: stdout)."),
) -> None:
    """Write a comparison (configs, runs, every output) as a recording."""
    from lib.data.recording import export_recording

    data = export_recording(engine(), comparison)
    if out is None:
        typer.echo(data.decode("utf-8"), nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    n_outputs = data.count(b"\n") - 1
    progress(f"wrote {out} ({n_outputs} outputs, {len(data):,} bytes)")


@recording_app.command("import")
def import_cmd(
    path: Path = typer.Argument(..., help="The recording (.jsonl)."),
    dataset: Path = typer.Option(..., "--dataset", help="The golden dataset file it was recorded on."),
    name: str = typer.Option(None, "--name", help="Comparison name (default: the recorded one)."),
) -> None:
    """Import a recording and its dataset; a no-op when the comparison is already there."""
    from lib.data.recording import load_recording

    for p in (path, dataset):
        if not p.is_file():
            fail(f"{p}: no such file")
    res = load_recording(engine(), path.read_bytes(), dataset_data=dataset.read_bytes(),
                         dataset_filename=dataset.name, name=name, source=path.name)
    if res.created:
        typer.echo(f"imported comparison '{res.comparison}': {res.n_outputs} outputs "
                   f"(dataset '{res.dataset}' v{res.dataset_version})")
    else:
        typer.echo(f"comparison '{res.comparison}' is already in the store; nothing written")
