"""`./review` (the `lib` package run as a module, or the `upgrade-review` console script): the CLI over the
same library the app uses."""
from __future__ import annotations

import os
import sys

from typer import Abort
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer 0.29 vendors click

from lib.cli.app import app
from lib.errors import ReviewInputError


def _register() -> None:
    # Imported for their side effect: each module adds its commands to `app`.
    from lib.cli import (  # noqa: F401
        canary_cmd,
        cases_cmd,
        data_cmds,
        demo_cmd,
        drift_cmd,
        governance_cmds,
        judge_cmd,
        list_cmd,
        log_cmds,
        models_cmd,
        monitor_cmd,
        redteam_cmd,
        report_cmd,
        run_cmd,
        settings_cmd,
        workers_cmd,
    )


INTERRUPTED_EXIT = 130


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: exit 2 with one line for usage errors and named input errors, 130 when interrupted,
    1 for anything else (one line; REVIEW_DEBUG=1 shows the traceback), or the code a command chose."""
    _register()
    try:
        # standalone_mode=False: returns typer.Exit's code instead of exiting
        code = app(args=argv, prog_name="./review", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # a bare command group: show its help
        print(exc.format_message(), file=sys.stderr)
        sys.exit(2)
    except UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        print(f"error: {exc.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (Abort, KeyboardInterrupt):
        code = INTERRUPTED_EXIT
    except ReviewInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("REVIEW_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
    if code == INTERRUPTED_EXIT:  # Typer turns Ctrl-C in a command into Exit(130): say what it means
        # 130 (SIGINT's convention), never 1: for gate and canary check, 1 means no-go / roll back.
        print("error: interrupted; what was stored is kept (run and judge resume with the same command)",
              file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
