"""Importing what the end of a run needs while its calls are made.

With a worker process per side, this process only forwards progress during the calls. What it does after
the last response, the end-of-run checks (`lib.review.checked.ensure_checked`), first imports pandas,
pyarrow and jsonschema and, for the outputs' token counts, litellm: ~2-3 s on this machine, all of it
between the last response and the summary. A thread imports them once the workers are calling, so the
checks start at once. litellm is imported through `lib.run.llm.litellm_module` (configured, its objects
frozen out of the garbage collector's scans, which also shortens the interpreter's exit).
"""
from __future__ import annotations

import threading


def _import_for_checks() -> None:
    try:
        from lib.run import llm

        llm.litellm_module()
        import lib.review.checked  # noqa: F401
    except Exception:  # noqa: BLE001  - an optimisation only: the checks import what is missing themselves
        pass


class CheckImports:
    """`start()` (idempotent) begins the imports on a thread; `wait()` joins it before the checks run."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=_import_for_checks, name="check-imports")
            self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
