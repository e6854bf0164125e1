"""A big load's per-output checks in a helper process: the second core checks the outputs while the load
writes them.

`CheckWorker.start(models)` starts the helper as the load begins, so its imports and warm-up (pandas, the
checks, the models' tokenizers) overlap the parse. `submit` hands it each side's outputs before they are
written: the values `lib.review.checked` would check them from (`written_outputs`), ids still placeholders.
It runs `compute.check_outputs` on them in the chunks `checked` checks a run's written outputs in, and sends
each chunk's frame back. `checker(run_ids)` is the hook `checked.ensure_checked` calls per chunk once the
outputs are stored: it returns the helper's frame with the stored ids put in. Whenever anything is not as
sent (settings, prompt, rows of the chunk) or the helper is gone or failed, the chunk is checked here
instead. Either way what is stored is `check_outputs` of the same values in the same chunks.

A subprocess running this module (`main`: a socket's fd, the models), not multiprocessing's spawn: spawn re-runs
the caller's main module (a script's, Streamlit's) in the child, and a load is a library call; not fork:
the load runs threads (the insert thread, pyarrow's and tiktoken's pools). Messages are pickles over a
socket pair (multiprocessing.connection's framing).
"""
from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from lib.review.checked import Checker
    from lib.review.settings import ReviewSettings
    from lib.review.tokens import RunPrompt

ROOT = Path(__file__).resolve().parents[2]


class CheckWorker:
    """The load's side of the helper process: a thread sends it the outputs, another receives its results."""

    def __init__(self, process: subprocess.Popen, conn: Connection) -> None:
        self._process, self._conn = process, conn
        self._sent: dict[str, tuple[ReviewSettings, RunPrompt | None]] = {}
        self._next: dict[str, int] = {}  # side -> index of the next chunk the checks will ask for
        self._results: dict[tuple[str, int], tuple[pd.DataFrame, dict] | None] = {}  # None: checked here
        self._arrived = threading.Condition()
        self._alive = True  # False once the helper's results have ended (it is done, gone or failed)
        self._threads: list[threading.Thread] = []
        self.chunks_used = 0  # chunks whose helper frame was stored (tests, diagnostics)

    @classmethod
    def start(cls, models: Sequence[str | None]) -> CheckWorker | None:
        """The helper, warming up for these models' tokenizers; None where it cannot start (then every
        output is checked in-process, as without it)."""
        if os.name != "posix" or not sys.executable or (os.cpu_count() or 1) < 2:
            return None  # (one core: nothing to gain)
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
               # Arrow's buffers (the refusal check's) from malloc: freed chunk by chunk, then trimmed, not kept
               # by mimalloc (~35 MB less between chunks; what Arrow computes does not depend on its allocator)
               "ARROW_DEFAULT_MEMORY_POOL": "system"}
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "lib.review.check_worker", str(theirs.fileno()), *(m or "" for m in models)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        except OSError:
            ours.close()
            return None
        finally:
            theirs.close()
        return cls(process, Connection(ours.detach()))

    def submit(self, checks: Mapping[str, Mapping[str, np.ndarray]], settings: ReviewSettings,
               prompts: Mapping[str, RunPrompt | None]) -> None:
        """Check each side's outputs (`lib.data.loaders.store.OutputValues.checks`) under these settings and
        prompts, in the chunks `lib.review.checked` will ask for. Sent a chunk at a time from a thread (the
        helper may still be warming up, the load goes on writing); results are received on another as they
        come (the helper never waits for the load to read one)."""
        from lib.review.checked import WRITTEN_CHUNK

        with_inputs = settings.input_token_limit is not None
        jobs = []
        for side, values in checks.items():
            self._sent[side], self._next[side] = (settings, prompts[side]), 0
            for index, start in enumerate(range(0, len(values["output_id"]), WRITTEN_CHUNK)):
                end = start + WRITTEN_CHUNK
                chunk = {k: v[start:end] for k, v in values.items() if with_inputs or k != "input_text"}
                jobs.append((side, index, chunk, settings, prompts[side]))
        self._threads = [threading.Thread(target=self._send, args=(jobs,), name="check-worker-send", daemon=True),
                         threading.Thread(target=self._receive, name="check-worker-receive", daemon=True)]
        for thread in self._threads:
            thread.start()

    def _send(self, jobs: list) -> None:
        try:
            while jobs:
                self._conn.send(jobs.pop(0))
            self._conn.send(None)  # no more: the helper exits once it has sent the last result
        except (OSError, ValueError):  # the helper is gone: its chunks are checked here
            pass

    def _receive(self) -> None:
        while True:
            try:
                side, index, result = self._conn.recv()
            except (EOFError, OSError):
                break
            with self._arrived:
                self._results[(side, index)] = result  # None: the helper failed on it
                self._arrived.notify_all()
        with self._arrived:
            self._alive = False
            self._arrived.notify_all()

    def checker(self, run_ids: Mapping[str, int]) -> Checker:
        """`lib.review.checked`'s per-chunk hook, for the runs the sides were stored as."""
        from lib.review.checked import check_here

        side_of = {run: side for side, run in run_ids.items()}

        def check(run_id: int, raw: pd.DataFrame, settings: ReviewSettings, parsed: dict,
                  prompt: RunPrompt | None) -> pd.DataFrame:
            side = side_of.get(run_id)
            sent = self._sent.get(side) if side is not None else None
            got = self._take(side) if side is not None and sent is not None else None
            if got is None or sent != (settings, prompt) or not _aligned(got[0], raw):
                return check_here(run_id, raw, settings, parsed, prompt)
            frame, chunk_parsed = got
            # The stored ids (not placeholders), and the columns the helper leaves out, as check_outputs sets them.
            frame["output_id"] = raw["output_id"].astype("int64").to_numpy()
            frame["case_id"] = raw["case_id"].astype("int64").to_numpy()
            frame["case_key"], frame["category"] = raw["case_key"].astype(str), raw["category"]
            parsed.update(chunk_parsed)
            self.chunks_used += 1
            return frame

        return check

    def _take(self, side: str) -> tuple[pd.DataFrame, dict] | None:
        index = self._next[side]
        self._next[side] = index + 1
        with self._arrived:
            while (side, index) not in self._results and self._alive:
                self._arrived.wait()
            return self._results.pop((side, index), None)

    def close(self) -> None:
        """Stop and reap the helper: what it has not sent by now is not needed (the load is done, or failed)."""
        self._process.kill()
        self._process.wait()
        for thread in self._threads:  # both end with the helper: a send fails, the receive meets the end
            thread.join()
        self._conn.close()


def _aligned(frame: pd.DataFrame, raw: pd.DataFrame) -> bool:
    """Whether the helper's frame is of the chunk's outputs: the same (case position, repeat) row by row."""
    import numpy as np

    return len(frame) == len(raw) and all(
        np.array_equal(frame[c].to_numpy(dtype=np.int64), raw[c].to_numpy(dtype=np.int64))
        for c in ("position", "repeat"))


# ---------------------------------------------------------------- the helper process

def _warm_up(models: Sequence[str]) -> None:
    """Import and prime everything the checks use (regexes, schemas, tokenizers) on one output. A model not
    named ("") or not counted with tiktoken alone needs litellm: imported now, as the load would have
    (lib.data.loaders._start_importing_litellm)."""
    import numpy as np

    from lib.review.checked import written_outputs
    from lib.review.checks.lengths import tiktoken_encoding_name
    from lib.review.compute import check_outputs
    from lib.review.settings import ReviewSettings
    from lib.review.tokens import RunPrompt

    if not models or not all(m and tiktoken_encoding_name(m) for m in models):
        from lib.run.llm import litellm_module

        try:
            litellm_module()
        except Exception:  # noqa: BLE001 - the checks' own import raises it again, and the load checks that chunk
            pass
    row = {"output_id": 0, "case_id": 0, "repeat": 0, "text": "Sure: {\"a\": 1}", "finish_reason": None,
           "latency_s": None, "completion_tokens": None, "cost_usd": None, "error": None, "case_key": "k",
           "position": 0, "expected": "1", "match": None, "pattern": None, "json_schema": None, "category": None,
           "metadata_json": None, "input_text": "q"}
    frame = written_outputs({k: np.array([v], dtype=object) for k, v in row.items()})
    for model in [m for m in models if m] or [""]:
        check_outputs(frame, ReviewSettings(), {}, RunPrompt(model) if model else None)


def _serve(conn: Connection) -> None:
    """Check each chunk of outputs as it comes, sending its frame back."""
    from lib.data.table_stream import gc_paused, release_freed_memory
    from lib.review.checked import written_chunk
    from lib.review.checks.matching import shared_normalize
    from lib.review.compute import check_outputs

    with gc_paused(), shared_normalize():  # as the load's own checks run
        while True:
            job = conn.recv()
            if job is None:
                return
            side, index, values, settings, prompt = job
            chunk = written_chunk(values, -1, settings.input_token_limit is not None)
            del values
            parsed: dict[Any, object] = {}
            try:
                frame = check_outputs(chunk, settings, parsed, prompt)
                frame["case_key"] = frame["category"] = None  # the load has them: not sent back (its memory)
                result = frame, parsed
            except Exception:  # noqa: BLE001 - the load checks this chunk itself and meets the error there
                result = None
            conn.send((side, index, result))
            del chunk, result
            gc.collect()  # pandas' intermediates hold cycles: freed now, not at the end
            release_freed_memory()


def main(argv: Sequence[str]) -> None:
    conn = Connection(int(argv[0]))
    try:
        _warm_up(argv[1:])
        gc.freeze()  # what the imports made lives on: the collections after each chunk look at the chunk's only
        _serve(conn)
    except (OSError, EOFError):  # the load closed the connection (it failed, or is done): nothing to do
        pass
    # Nothing to flush or clean up: skip freeing every object one by one (~0.2 s the load would wait for).
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
