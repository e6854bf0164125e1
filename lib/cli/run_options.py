"""`run`'s options for other commands that run a comparison (redteam), taken from `run` itself.

`with_run_options` gives a command every option of `lib.cli.run_cmd.run_cmd` except those it excludes,
read from that function's signature: the flags, defaults, bounds and help stay defined once, and a flag
added to `run` reaches these commands too. The command receives them as one dict (`run_kwargs`) that
it can pass back to `run_cmd`, so the spec building, cost estimate, progress, summary and exit codes
are `run`'s own.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

RUN_KWARGS = "run_kwargs"


def run_parameters(exclude: frozenset[str] = frozenset()) -> list[inspect.Parameter]:
    """`run`'s Typer parameters (annotations evaluated), minus the excluded parameter names."""
    from lib.cli.run_cmd import run_cmd

    params = inspect.signature(run_cmd, eval_str=True).parameters.values()
    return [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params if p.name not in exclude]


def with_run_options(exclude: frozenset[str] = frozenset()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a Typer command taking `run_kwargs`: its own parameters, then `run`'s."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != RUN_KWARGS]
        shared = run_parameters(exclude)
        clash = {p.name for p in own} & {p.name for p in shared}
        if clash:
            raise TypeError(f"{func.__name__} redefines run options: {sorted(clash)}")
        shared_names = frozenset(p.name for p in shared)

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            run_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in shared_names}
            return func(**kwargs, **{RUN_KWARGS: run_kwargs})

        params = own + shared
        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # what Typer reads
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
