"""Ingest benchmark: the three files of issue #17 section 3, each loaded by the CLI in its own process.

- a 100k-pair wide CSV (id, input, expected, category, baseline, candidate; ~42 MB): `./review load`,
  which checks and stores every output in the same command;
- a 1M-row golden dataset (CSV): `./review dataset import`;
- a 200 MB golden dataset (JSONL, long inputs): `./review dataset import`, read in chunks.

Each figure is the median wall time of `--repeats` runs on a fresh store, with the CPU time (user +
system) and the peak RSS of that process (os.wait4: the child's own, not this script's). The machine
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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.synth import CATEGORIES, WORDS, _answer

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


def run_once(figure: Figure, path: Path, workdir: Path) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, last output line) of one CLI run on a fresh store."""
    db = workdir / "store.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    args = [str(ROOT / "review"), *(a.replace("{path}", str(path)) for a in figure.command)]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}:\n{output}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output.strip().splitlines()[-1]


def measure(name: str, repeats: int, workdir: Path) -> None:
    figure = FIGURES[name]
    path = workdir / figure.filename
    if not path.exists():
        figure.make(path)
    size = path.stat().st_size / 1e6
    runs = []
    for _ in range(repeats):
        before = _load()
        runs.append((*run_once(figure, path, workdir), before, _load()))
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    peak = max(r[2] for r in runs)
    print(f"{figure.label} ({size:.0f} MB): {wall:.2f} s wall (median of {repeats}), {cpu:.2f} s CPU, "
          f"peak RSS {peak:.0f} MB; goal {figure.goal}", flush=True)
    for wall_s, cpu_s, rss, last, before, after in runs:
        print(f"    {wall_s:.2f} s wall, {cpu_s:.2f} s CPU, {rss:.0f} MB ({before} -> {after}): {last}", flush=True)


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
