"""Review benchmark: report time at 10k/100k pairs, Overview render (AppTest, warm) at 10k,
one diff, and peak memory at 100k. Each size runs in its own process so peak RSS is its own.

    .venv/bin/python bench/review_bench.py            # both sizes
    .venv/bin/python bench/review_bench.py --n 10000  # one size
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _overview_render(url: str, repeats: int = 3) -> float:
    from streamlit.testing.v1 import AppTest

    os.environ["DATABASE_URL"] = url
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    start = time.perf_counter()
    at.run()  # cold: reads, checks and statistics are computed and cached
    print(f"Overview render, cold {time.perf_counter() - start:.2f} s", flush=True)

    def warm() -> None:
        at.run()
        assert not at.exception, at.exception

    return _median_time(warm, repeats)


def one_size(n: int) -> None:
    from bench.synth import build
    from lib.checks.similarity import diff_html
    from lib.comparisons import load_pairs
    from lib.db import get_engine
    from lib.report import build_report

    tmp = tempfile.mkdtemp()
    url = f"sqlite:///{tmp}/bench.db"
    engine = get_engine(url)
    start = time.perf_counter()
    build(engine, "bench", n)
    print(f"n={n}: synthetic store written in {time.perf_counter() - start:.1f} s", flush=True)
    report_s = _median_time(lambda: build_report(engine, "bench"), 3)
    pairs = load_pairs(engine, "bench")
    row = pairs.iloc[n // 2]
    diff_s = _median_time(lambda: diff_html(row["b_text"], row["c_text"]), 50)
    print(f"n={n}: report {report_s:.2f} s (median of 3; goal <= 2 s at 100k)")
    print(f"n={n}: one diff {diff_s * 1000:.2f} ms (median of 50; goal <= 20 ms)")
    if n <= 10_000:
        print(f"n={n}: Overview render, warm {_overview_render(url):.2f} s (median of 3; goal <= 2 s)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"n={n}: peak memory {peak_mb:.0f} MB (goal <= 1536 MB at 100k)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="one size only (default: 10000 then 100000)")
    args = parser.parse_args()
    if args.n:
        one_size(args.n)
        return
    for n in (10_000, 100_000):
        subprocess.run([sys.executable, __file__, "--n", str(n)], check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
