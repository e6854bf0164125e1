"""Review benchmark: report time at 10k/100k pairs, cold and warm, the one-off check-and-store cost,
Overview render (AppTest, warm) at 10k, one diff, and peak memory. Each size runs in its own process
so peak RSS is its own.

- cold report: `build_report` with no stored checks (every output read and checked, then stored);
- check + store: `ensure_checked` alone on a store with no stored checks (what the end of a run or a
  load pays once);
- warm report: `build_report` when the checks are stored (what a user opening a report sees).

Wall times are medians of a few repeats, with CPU time beside them: the machine may be shared, and
the load average is printed at the start and the end of each size.

    .venv/bin/python bench/review_bench.py                  # 10k then 100k
    .venv/bin/python bench/review_bench.py --n 500000 --repeats 1   # one size (500k pairs = 1M outputs)
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _timed(fn: Callable[[], object], repeats: int, before: Callable[[], None] | None = None) -> tuple[float, float]:
    """(median wall s, median CPU s) over `repeats` calls; `before` runs untimed before each."""
    walls, cpus = [], []
    for _ in range(repeats):
        if before:
            before()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"


def _overview_render(url: str, repeats: int = 3) -> tuple[float, float]:
    from streamlit.testing.v1 import AppTest

    os.environ["DATABASE_URL"] = url
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
    start = time.perf_counter()
    at.run()  # cold in this process: stored checks are read, statistics computed and cached
    print(f"  Overview render, first {time.perf_counter() - start:.2f} s", flush=True)

    def warm() -> None:
        at.run()
        assert not at.exception, at.exception

    return _timed(warm, repeats)


def _invalidate() -> None:
    """Make every stored check stale, as a check-code change would: the next report is cold."""
    import lib.review.checked

    lib.review.compute.CHECKS_VERSION += 1


def build_store(n: int, path: str) -> None:
    from bench.synth import build
    from lib.store.engine import get_engine

    start = time.perf_counter()
    build(get_engine(f"sqlite:///{path}"), "bench", n)
    print(f"n={n}: synthetic store ({2 * n} outputs) written in {time.perf_counter() - start:.1f} s", flush=True)


def one_size(n: int, path: str, repeats: int) -> None:
    """Every measurement on a store `build_store` wrote (in another process: its memory is not ours)."""
    from lib.review.checked import checked_frame, ensure_checked, with_texts
    from lib.review.checks.similarity import diff_html
    from lib.review.report import build_report
    from lib.store.engine import get_engine

    print(f"n={n}: {_load()}", flush=True)
    url = f"sqlite:///{path}"
    engine = get_engine(url)

    cold = _timed(lambda: build_report(engine, "bench"), repeats, before=_invalidate)
    ensure = _timed(lambda: ensure_checked(engine, "bench"), repeats, before=_invalidate)
    warm = _timed(lambda: build_report(engine, "bench"), max(repeats, 5))
    print(f"n={n}: report, cold (nothing stored) {cold[0]:.2f} s wall, {cold[1]:.2f} s CPU (median of {repeats})")
    print(f"n={n}: check + store once (ensure_checked) {ensure[0]:.2f} s wall, {ensure[1]:.2f} s CPU")
    print(f"n={n}: report, warm (checks stored) {warm[0]:.2f} s wall, {warm[1]:.2f} s CPU "
          f"(median of {max(repeats, 5)}; goal <= 2 s at 100k)", flush=True)

    frame = checked_frame(engine, "bench")
    longest = (frame["b_len_chars"].fillna(0) + frame["c_len_chars"].fillna(0)).astype(int).idxmax()
    row = with_texts(engine, frame.loc[[longest]]).iloc[0]
    del frame
    diff = _timed(lambda: diff_html(row["b_text"], row["c_text"]), 50)
    print(f"n={n}: one diff, the longest pair ({len(row['b_text'])} + {len(row['c_text'])} chars) "
          f"{diff[0] * 1000:.2f} ms (median of 50; goal <= 20 ms)")
    if n <= 10_000:
        render = _overview_render(url)
        print(f"n={n}: Overview render, warm {render[0]:.2f} s wall, {render[1]:.2f} s CPU "
              f"(median of 3; goal <= 2 s)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"n={n}: peak memory {peak_mb:.0f} MB of the measuring process, cold reports included "
          "(goal <= 1536 MB at 100k)")
    print(f"n={n}: {_load()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, help="one size only (default: 10000 then 100000)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the cold measurements")
    parser.add_argument("--store", help=argparse.SUPPRESS)  # internal: the store of this size
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)  # internal: only write it
    args = parser.parse_args()
    if args.store and args.build:
        build_store(args.n, args.store)
    elif args.store:
        one_size(args.n, args.store, args.repeats)
    else:
        for n in [args.n] if args.n else [10_000, 100_000]:
            _run_size(n, args.repeats)


def _run_size(n: int, repeats: int) -> None:
    tmp = tempfile.mkdtemp()
    try:
        for step in (["--build"], []):  # separate processes: peak memory is the measuring process's own
            subprocess.run([sys.executable, __file__, "--n", str(n), "--repeats", str(repeats),
                            "--store", str(Path(tmp) / "bench.db"), *step], check=True, cwd=ROOT)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
