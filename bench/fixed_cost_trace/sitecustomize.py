"""Phase timestamps of a real `./review run`, for bench/run_fixed_cost.py: put this folder on PYTHONPATH and
set REVIEW_TRACE_FILE, and every process of the run appends a JSON line `[name, "start"|"end", time]` to that
file (time.monotonic(): the clock the bench and its test server share) when a phase named here starts and
ends. Nothing in lib/ knows about it: the functions are wrapped, and a module's execution timed, as they are
imported, so the run takes the code path it always takes."""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder
from typing import Any

TRACED = {  # module -> functions whose start and end are recorded (in the CLI process)
    "lib.cli": ("main",),
    "lib.cli.run_cmd": ("model_spec", "_summary"),
    "lib.run.forkserver": ("warm_up",),
    "lib.run.runner": ("estimate_cost", "_prepare", "_execute", "_finish"),
    "lib.review.checked": ("ensure_checked",),
    "lib.run.preload": ("_import_for_checks",),  # on a thread, during the calls
}
TIMED_MODULES = {"lib.run.worker_preload": "fork_server_preload"}  # what the workers' fork server does first
_OUT = os.environ.get("REVIEW_TRACE_FILE")
# For A/B runs: functions replaced by a no-op (REVIEW_TRACE_SKIP=_import_for_checks runs without that preload).
_SKIPPED = frozenset(filter(None, os.environ.get("REVIEW_TRACE_SKIP", "").split(",")))


def _nothing(*_args: Any, **_kwargs: Any) -> None:
    return None


def record(name: str, kind: str) -> None:
    line = json.dumps([name, kind, time.monotonic()]) + "\n"
    fd = os.open(_OUT, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # one short append: whole lines
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _timed(func: Any, name: str) -> Any:
    @functools.wraps(func)
    def timed(*args: Any, **kwargs: Any) -> Any:
        record(name, "start")
        try:
            return func(*args, **kwargs)
        finally:
            record(name, "end")

    return timed


class _Finder(MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> ModuleSpec | None:
        if fullname not in TRACED and fullname not in TIMED_MODULES:
            return None
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        run_module = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            if fullname in TIMED_MODULES:
                _timed(run_module, TIMED_MODULES[fullname])(module)
            else:
                run_module(module)
            for attr in TRACED.get(fullname, ()):
                func = getattr(module, attr)
                if attr in _SKIPPED:
                    func = _nothing
                setattr(module, attr, _timed(func, attr))

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if _OUT:
    sys.meta_path.insert(0, _Finder())
