"""The CLI frame: exit codes, one-line errors, lazy heavy imports, and the CLI reference covers every command."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str, db_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _commands() -> list[str]:
    """Every command path, e.g. 'list', 'dataset import', 'policy create'."""
    import typer.main

    from lib.cli import _register
    from lib.cli.app import app

    _register()
    group = typer.main.get_command(app)
    paths = []
    for name, cmd in group.commands.items():
        subs = getattr(cmd, "commands", None)
        paths += [f"{name} {sub}" for sub in subs] if subs else [name]
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("args", [("gate",), ("bogus",), ("report", "x", "--nope"), ("run", "--dataset")])
def test_usage_errors_exit_2_with_one_line(db_url: str, args: tuple[str, ...]) -> None:
    out = _cli(*args, db_url=db_url)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_store_that_is_not_sqlite_is_refused_with_one_line() -> None:
    out = _cli("list", db_url="postgresql://review@db.internal/review")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("error: DATABASE_URL must be a sqlite:/// URL (got 'postgresql:...')")
    assert "review@db.internal" not in line  # a URL may carry a password: never echoed


@pytest.mark.slow
def test_starting_the_cli_imports_neither_litellm_nor_evidently(db_url: str) -> None:
    code = ("import sys; from lib.cli import _register; _register(); "
            "print(sorted(m for m in ('litellm', 'evidently', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


HEAVY = ("sqlalchemy", "sqlmodel", "pandas", "numpy", "scipy", "pyarrow", "jsonschema", "litellm", "evidently")


@pytest.mark.slow
def test_help_of_every_command_imports_nothing_heavy() -> None:
    """`--help` of the CLI and of each command renders from typer alone: heavy imports wait for the
    command itself, which keeps start-up under a second (bench/cli_start_bench.py measures it)."""
    code = f"""
import sys, typer.main, typer._click as click
from lib.cli import _register
from lib.cli.app import app
_register()
def walk(cmd, ctx):
    cmd.get_help(ctx)
    for name, sub in getattr(cmd, "commands", {{}}).items():
        walk(sub, click.Context(sub, info_name=name, parent=ctx))
group = typer.main.get_command(app)
walk(group, click.Context(group, info_name="review"))
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"--help imports {out.stdout.strip()}"


def test_the_cli_reference_shows_every_command() -> None:
    reference = (ROOT / "docs" / "cli-reference.md").read_text()
    missing = [c for c in _commands() if not re.search(rf"^## `./review {re.escape(c)}`$", reference, re.M)]
    assert not missing, f"docs/cli-reference.md does not show: {missing} (run `python3 scripts/cli_reference.py`)"
