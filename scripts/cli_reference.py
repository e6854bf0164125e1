#!/usr/bin/env python3
"""Write docs/cli-reference.md from the CLI's own `--help`: `python3 scripts/cli_reference.py [--check]`.

Walks the Typer/click command tree (`typer.main.get_command(app)` after `lib.cli._register()`) and renders
every group's and command's help at a fixed width, so the file does not depend on the terminal. `--check`
writes nothing and exits 1 when the file is stale (tests/test_docs.py does the same comparison).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "cli-reference.md"
WIDTH = 100  # help text is wrapped at this width whatever the terminal
REGENERATE = "python3 scripts/cli_reference.py"

HEADER = f"""# CLI reference

Generated from `--help` by `{REGENERATE}`; do not edit by hand: `tests/test_docs.py` fails
when this file is stale. Run every command from the repository root as `./review COMMAND ...`. Exit codes
are in the README; how each command fits the workflow is in the other docs.
"""


def command_tree():  # -> click Group; typer vendors click, so no annotation from a public module
    """The CLI's root click group with every command registered."""
    sys.path.insert(0, str(ROOT))
    import typer.main

    from lib.cli import _register
    from lib.cli.app import app

    _register()
    return typer.main.get_command(app)


def walk(cmd, ctx, path: tuple[str, ...] = ()):
    """(path, command, context) for the group and every command below it, in help order."""
    yield path, cmd, ctx
    for name in getattr(cmd, "list_commands", lambda _ctx: [])(ctx):
        sub = cmd.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        sub_ctx = sub.context_class(sub, info_name=name, parent=ctx, terminal_width=WIDTH,
                                    max_content_width=WIDTH)
        yield from walk(sub, sub_ctx, (*path, name))


def render() -> str:
    """The whole reference as Markdown: one section with a text block per command path."""
    root = command_tree()
    ctx = root.context_class(root, info_name="./review", terminal_width=WIDTH, max_content_width=WIDTH)
    parts = [HEADER]
    for path, cmd, cmd_ctx in walk(root, ctx):
        title = " ".join(("./review", *path))
        parts.append(f"## `{title}`\n\n```text\n{cmd.get_help(cmd_ctx).rstrip()}\n```\n")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        import typer  # noqa: F401
    except ImportError:  # started by the system python3: run again in the project's .venv
        venv_python = ROOT / ".venv" / "bin" / "python"
        os.execv(str(venv_python), [str(venv_python), __file__, *sys.argv[1:]])
    sys.exit(main(sys.argv[1:]))
