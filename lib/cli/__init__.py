"""`python -m lib`: the CLI over the same library the app uses."""
from __future__ import annotations

import os
import sys

import click

from lib.cli.app import app
from lib.errors import ReviewInputError


def _register() -> None:
    # Imported for their side effect: each module adds its commands to `app`.
    from lib.cli import data_cmds, list_cmd, run_cmd  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Run the CLI, mapping named input errors to exit 2 and anything else to exit 1."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors: Click formats them, exit 2
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except ReviewInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001  - one line for users; REVIEW_DEBUG=1 re-raises
        if os.environ.get("REVIEW_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
