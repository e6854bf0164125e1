"""Importing what the end of a run needs while its calls are made.

With a worker process per side, this process only forwards progress during the calls. What it does after
the last response, the end-of-run checks (`lib.review.checked.ensure_checked`), first imports pandas,
pyarrow and jsonschema, and litellm when a model's token counts need it (one whose tiktoken encoding is not
in lib/review/checks/tiktoken_models.json, e.g. a local model): ~1-3 s on this machine, all of it between the
last response and the summary. A thread imports them once the workers are calling, so the checks start at
once. litellm is imported through `lib.run.llm.litellm_module` (configured, its objects frozen out of the
garbage collector's scans, which also shortens the interpreter's exit).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable


def _import_for_checks(models: tuple[str, ...]) -> None:
    try:
        import lib.review.checked  # noqa: F401
        from lib.review.checks.lengths import tiktoken_encoding_name

        if any(tiktoken_encoding_name(model) is None for model in models):
            from lib.run import llm

            llm.litellm_module()
    except Exception:  # noqa: BLE001  - an optimisation only: the checks import what is missing themselves
        pass


class CheckImports:
    """`start()` (idempotent) begins the imports on a thread; `wait()` joins it before the checks run."""

    def __init__(self, models: Iterable[str]) -> None:
        self.models = tuple(models)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=_import_for_checks, args=(self.models,), name="check-imports")
            self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
