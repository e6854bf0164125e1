"""Ingest benchmark: the three files of issue #17 section 3, each loaded by the CLI in its own process.

- a 100k-pair wide CSV (id, input, expected, category, baseline, candidate; ~42 MB): `./review load`,
  which checks and stores every output in the same command;
- a 1M-row golden dataset (CSV): `./review dataset import`;
- a 200 MB golden dataset (JSONL, long inputs): `./review dataset import`, read in chunks.

Each figure is the median wall time of `--repeats` runs on a fresh store, with the CPU time (user +
system, of the CLI process and its check helper: os.wait4) and peak RSS: the CLI process's, its check
helper's (a `load` of a big file checks its outputs in a helper process) and the most both held at once,
sampled from /proc every 20 ms. The machine
may be shared: the load average is printed beside each figure, and CPU time is the steadier number.

    .venv/bin/python -m bench.ingest_bench                       # all three, median of 3
    .venv/bin/python -m bench.ingest_bench --only wide --repeats 1
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py` as well as `-m bench.x`

from bench.synth import CATEGORIES, WORDS, _answer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_wide(path: Path, pairs: int = 100_000, seed: int = 0) -> None:
    """One row per case with both models' outputs (the candidate shorter, refusing and breaking JSON more)."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "input", "expected", "category", "baseline", "candidate"])
        for i in range(pairs):
            cat = CATEGORIES[i % len(CATEGORIES)]
            expected = str(i * 7) if cat == "math" else ""
            writer.writerow([f"c{i}", f"Question {i} about {cat}: {_words(rng, 6)}", expected, cat,
                             _answer(rng, cat, i, False), _answer(rng, cat, i, True)])


def write_golden_csv(path: Path, rows: int = 1_000_000, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "input", "expected", "category"])
        for i in range(rows):
            cat = CATEGORIES[i % len(CATEGORIES)]
            writer.writerow([f"case-{i}", f"Question {i} about {cat}: {_words(rng, 8)}",
                             str(i * 7) if cat == "math" else "", cat])


def write_golden_jsonl(path: Path, megabytes: int = 200, seed: int = 2) -> None:
    """Long inputs (~1 KB), some chat-shaped, some with metadata: `megabytes` of JSONL."""
    rng = random.Random(seed)
    limit, i = megabytes * 1_000_000, 0
    with path.open("w", encoding="utf-8") as f:
        while f.tell() < limit:
            cat = CATEGORIES[i % len(CATEGORIES)]
            text = f"Case {i} ({cat}): {_words(rng, 150)}"
            row: dict = {"id": f"doc-{i}", "input": text, "category": cat}
            if i % 5 == 0:
                row["input"] = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
            if cat == "math":
                row.update(expected=str(i * 7), match="numeric")
            if i % 3 == 0:
                row["metadata"] = {"source": "bench", "n": i}
            f.write(json.dumps(row) + "\n")
            i += 1


@dataclass
class Figure:
    label: str
    make: Callable[[Path], None]
    filename: str
    command: list[str]  # after ./review; {path} is the file
    goal: str


FIGURES = {
    "wide": Figure("100k-pair wide load, checks included", write_wide, "wide.csv",
                   ["load", "{path}", "--name", "bench", "--baseline", "gpt-4o", "--candidate", "gpt-4.1"],
                   "<= 8 s, <= 800 MB"),
    "golden": Figure("1M-row golden dataset import (CSV)", write_golden_csv, "golden.csv",
                     ["dataset", "import", "{path}", "--name", "bench"], "<= 20 s, <= 1 GB"),
    "big": Figure("200 MB golden dataset import (JSONL)", write_golden_jsonl, "big.jsonl",
                  ["dataset", "import", "{path}", "--name", "bench"], "not held whole in memory"),
}


def _load() -> str:
    return "load " + "/".join(f"{x:.1f}" for x in os.getloadavg())


class TreeMemory(threading.Thread):
    """Samples a process and its descendants (/proc) every SAMPLE_S while it runs: each one's peak RSS (VmHWM)
    and the most they held at once (the sum of their RSS at a sample). A `load` checks its outputs in a
    helper process (lib.review.check_worker), whose memory counts too; os.wait4 gives only the larger one."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.done = pid, threading.Event()
        self.peaks: dict[int, float] = {}  # pid -> peak RSS MB
        self.helpers: set[int] = set()
        self.together = 0.0

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            total = 0.0
            for pid in _tree(self.pid):
                if b"lib.review.check_worker" in _cmdline(pid):
                    self.helpers.add(pid)
                rss, hwm = _status_mb(pid)
                total += rss
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), hwm)
            self.together = max(self.together, total)

    def helpers_mb(self) -> float:
        """The peak of the process's check helper (lib.review.check_worker); 0 without one."""
        return max((mb for pid, mb in self.peaks.items() if pid in self.helpers), default=0.0)


SAMPLE_S = 0.02


def _tree(pid: int) -> list[int]:
    """The process and its descendants, leaving out a child between its fork and its exec: it still maps its
    parent's pages (shared, copy-on-write), and would count them twice."""
    found, stack = [], [pid]
    while stack:
        found.append(current := stack.pop())
        parent = _cmdline(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                stack += [c for c in map(int, (task / "children").read_text().split()) if _cmdline(c) != parent]
            except OSError:
                pass
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _status_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of a process in MB; zeros once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:
        return 0.0, 0.0
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


@dataclass
class Run:
    wall: float
    cpu: float  # user + system of the CLI process and the children it waited for (its check helper)
    peak_mb: float  # the CLI process's own peak RSS (sampled VmHWM)
    helper_mb: float  # its check helper's peak RSS (0 without one)
    together_mb: float  # the most both held at once (sampled)
    last_line: str


def run_once(figure: Figure, path: Path, workdir: Path) -> Run:
    """One CLI run on a fresh store."""
    db = workdir / "store.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    args = [str(ROOT / "review"), *(a.replace("{path}", str(path)) for a in figure.command)]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    memory = TreeMemory(proc.pid)  # `review` execs the interpreter: the same pid
    memory.start()
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    memory.done.set()
    memory.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{output}")
    own = memory.peaks.get(proc.pid, usage.ru_maxrss / 1024)
    return Run(wall, usage.ru_utime + usage.ru_stime, own, memory.helpers_mb(), memory.together,
               output.strip().splitlines()[-1])


def measure(name: str, repeats: int, workdir: Path) -> None:
    figure = FIGURES[name]
    path = workdir / figure.filename
    if not path.exists():
        figure.make(path)
    size = path.stat().st_size / 1e6
    runs = []
    for _ in range(repeats):
        before = _load()
        runs.append((run_once(figure, path, workdir), before, _load()))
    wall = statistics.median(r.wall for r, _, _ in runs)
    cpu = statistics.median(r.cpu for r, _, _ in runs)
    peak, helper, together = (max(getattr(r, k) for r, _, _ in runs) for k in ("peak_mb", "helper_mb", "together_mb"))
    with_helper = f" + check helper {helper:.0f} MB, together at most {together:.0f} MB" if helper else ""
    print(f"{figure.label} ({size:.0f} MB): {wall:.2f} s wall (median of {repeats}), {cpu:.2f} s CPU, "
          f"peak RSS {peak:.0f} MB{with_helper}; goal {figure.goal}", flush=True)
    for r, before, after in runs:
        helper_run = f" + {r.helper_mb:.0f} MB = {r.together_mb:.0f} MB at once" if r.helper_mb else ""
        print(f"    {r.wall:.2f} s wall, {r.cpu:.2f} s CPU, {r.peak_mb:.0f} MB{helper_run} ({before} -> {after}): "
              f"{r.last_line}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(FIGURES), action="append", help="one figure (repeatable)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep the generated files here (default: a temporary dir)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"{os.cpu_count()} CPUs, {_load()}", flush=True)
        for name in args.only or list(FIGURES):
            measure(name, args.repeats, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
