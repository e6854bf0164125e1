"""What the benchmarks share: the repository root, a golden dataset of N cases, the bare-client reference
traffic, a fresh SQLite store, and running one phase in its own process (so its peak memory is its own).

A benchmark run as a script (`.venv/bin/python bench/x.py`) puts the repository root on sys.path before it
imports this module; `-m bench.x` needs nothing. Importing it makes litellm read its bundled price map
(no network fetch), for any phase that imports litellm.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def make_dataset(engine: Engine, name: str, n_cases: int) -> str:
    """A golden dataset of `n_cases` short arithmetic questions (version 1)."""
    from sqlalchemy import insert

    from lib.store.engine import session_scope
    from lib.store.entities import Case, Dataset

    with session_scope(engine) as session:
        ds = Dataset(name=name, version=1, content_hash=f"{name}-{n_cases}", n_cases=n_cases)
        session.add(ds)
        session.flush()
        rows = [{"dataset_id": ds.id, "case_key": f"c{i}", "position": i,
                 "input_text": f"Benchmark question number {i}: what is {i} plus {i}?"} for i in range(n_cases)]
        session.execute(insert(Case), rows)
    return name


async def _bare_requests(url: str, n_calls: int, concurrency: int) -> None:
    import aiohttp

    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:
        async def one(i: int) -> None:
            body = {"model": f"bench-{i % 2}", "messages": [{"role": "user", "content": f"question {i}"}]}
            async with semaphore, session.post(f"{url}/chat/completions", json=body) as response:
                await response.json()

        await asyncio.gather(*(one(i) for i in range(n_calls)))


def bare_client_wall(url: str, n_calls: int, concurrency: int) -> float:
    """The same traffic from a bare aiohttp client (no litellm, no store): what the machine allows now."""
    started = time.perf_counter()
    asyncio.run(_bare_requests(url, n_calls, concurrency))
    return time.perf_counter() - started


def peak_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_phase(module: str, args: list[str]) -> dict:
    """Run `python -m module args` (a phase that prints its figures as JSON on its last line) and return them."""
    out = subprocess.run([sys.executable, "-m", module, *args], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)  # `bench` importable from any directory
    return json.loads(out.stdout.strip().splitlines()[-1])


def fresh_store(workdir: Path) -> str:
    """`workdir/review.db`, with any earlier store there (and its WAL files) removed."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = str(workdir / "review.db")
    for suffix in ("", "-wal", "-shm"):
        Path(db + suffix).unlink(missing_ok=True)
    return db


def generated_log(workdir: Path | None, prefix: str, stem: str, n: int, kind: str, gzip: bool,
                  generate: Callable[[Path, int, str], object], unit: str) -> tuple[str, Path]:
    """(fresh store, log file) in `workdir` (a new temporary folder when None), the log written by `generate`
    with `n` rows; prints how long that took and the file's size."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    db = fresh_store(workdir)
    log = workdir / f"{stem}.{kind}{'.gz' if gzip else ''}"
    started = time.perf_counter()
    generate(log, n, kind)
    print(f"generated {n} {unit} in {time.perf_counter() - started:.1f} s: {log} ({log.stat().st_size / 1e6:.0f} MB)")
    return db, log
