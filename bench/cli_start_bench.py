#!/usr/bin/env python3
"""CLI start-up: wall time of `--help` for the CLI and every command, median of N fresh processes.

    .venv/bin/python bench/cli_start_bench.py [--runs 5]

Prints one line per command path (`./review` as users type it, which adds the wrapper's own python3 start
and requirements check, and `python -m lib` alone) and the load average, since the machine is shared.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def command_paths() -> list[list[str]]:
    import typer.main

    from lib.cli import _register
    from lib.cli.app import app

    _register()
    group = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    for name, cmd in sorted(group.commands.items()):
        subs = getattr(cmd, "commands", None)
        paths += [[name, sub] for sub in sorted(subs)] if subs else [[name]]
    return paths


def median_s(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    print(f"load average {os.getloadavg()[0]:.2f}; median of {runs} runs each")
    print(f"{'command':<28} {'./review':>10} {'python -m lib':>14}")
    worst = 0.0
    for path in command_paths():
        wrapper = median_s([str(ROOT / "review"), *path, "--help"], runs)
        module = median_s([sys.executable, "-m", "lib", *path, "--help"], runs)
        worst = max(worst, wrapper)
        print(f"{' '.join(path) or '(top level)':<28} {wrapper:>9.2f}s {module:>13.2f}s")
    print(f"slowest ./review --help: {worst:.2f}s (goal <= 1 s)")


if __name__ == "__main__":
    main()
