"""Production-log scale: generate a log of N requests (two models, ISO timestamps 0.5 s apart), `log import`
it, then compute the daily timeline with its change points; print each phase's time and peak memory.

    .venv/bin/python -m bench.log_bench --rows 1000000              # the goal: <= 60 s and <= 1.5 GB
    .venv/bin/python -m bench.log_bench --rows 100000 --kind jsonl --gzip

Each phase runs in its own process so its peak RSS (ru_maxrss) is its own. The store is a fresh SQLite
file under --workdir (default: a temporary directory). The rows come from bench.shadow_bench's generator
(realistic refusals, JSON and lengths).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py` as well as `-m bench.x`

from bench.harness import generated_log, peak_mb, run_phase  # noqa: E402
from bench.shadow_bench import generate  # noqa: E402


def phase_import(db: str, log: Path) -> dict:
    from lib.release.log_import import import_log_file
    from lib.store.engine import get_engine

    engine = get_engine(f"sqlite:///{db}")
    started = time.perf_counter()
    result = import_log_file(engine, log, "bench")
    return {"import_s": round(time.perf_counter() - started, 2), "rows": result.rows,
            "import_peak_mb": round(peak_mb())}


def phase_timeline(db: str) -> dict:
    from lib.release.timeline import timeline
    from lib.store.engine import get_engine

    engine = get_engine(f"sqlite:///{db}")
    started = time.perf_counter()
    doc = timeline(engine, "bench", window="hour")
    return {"timeline_s": round(time.perf_counter() - started, 2), "timeline_peak_mb": round(peak_mb()),
            "windows": len(doc["windows"]), "change_points": len(doc["change_points"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kind", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--phase", choices=("import", "timeline"), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "import":
        print(json.dumps(phase_import(args.db, args.log)))
        return
    if args.phase == "timeline":
        print(json.dumps(phase_timeline(args.db)))
        return
    db, log = generated_log(args.workdir, "log-bench-", "log", args.rows, args.kind, args.gzip, generate, "rows")
    figures = run_phase("bench.log_bench", ["--phase", "import", "--db", db, "--log", str(log)])
    print(f"log import: {figures['import_s']} s for {figures['rows']} rows "
          f"({figures['rows'] / figures['import_s']:.0f} rows/s), peak {figures['import_peak_mb']} MB")
    print(f"store: {Path(db).stat().st_size / 1e6:.0f} MB")
    figures |= run_phase("bench.log_bench", ["--phase", "timeline", "--db", db])
    print(f"timeline (hourly): {figures['timeline_s']} s, {figures['windows']} windows, "
          f"{figures['change_points']} change points, peak {figures['timeline_peak_mb']} MB")


if __name__ == "__main__":
    main()
