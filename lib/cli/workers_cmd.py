"""`workers status|stop`: the resident worker host that live runs fork their workers from."""
from __future__ import annotations

import typer

from lib.cli.app import app, fail

workers_app = typer.Typer(help="The resident worker host of live runs (it keeps litellm imported between runs).",
                          no_args_is_help=True)
app.add_typer(workers_app, name="workers")


def _hosts() -> list:
    from lib.run import resident

    try:
        return resident.hosts()
    except resident.ResidentUnavailable as exc:
        fail(f"no resident worker host can run here: {exc}")
    return []


@workers_app.command("status")
def status_cmd() -> None:
    """List the running hosts (pid; whether it runs this code and settings)."""
    from lib.run import resident

    try:
        idle = f"exits after {resident.idle_seconds():g} s without a run"
    except resident.ResidentUnavailable as exc:
        fail(str(exc))
        return
    found = _hosts()
    if not found:
        typer.echo(f"no worker host running in {resident.runtime_dir()} (the next big run starts one)")
    current = resident.fingerprint()
    for place, pid in found:
        which = "this code and settings" if place.fingerprint == current else "other code or settings"
        typer.echo(f"worker host pid {pid}: {which}; {idle}")


@workers_app.command("stop")
def stop_cmd() -> None:
    """Stop every running host now (runs in progress finish; the next big run starts a new one)."""
    from lib.run import resident

    try:
        stopped = resident.stop_all()
    except resident.ResidentUnavailable as exc:
        fail(f"no resident worker host can run here: {exc}")
    typer.echo(f"stopped {len(stopped)} worker host(s)" + (f": pid {', '.join(map(str, stopped))}" if stopped else ""))
