"""Shadow-traffic scale: generate a log of N logged calls (N/2 requests x serving + shadow), stream-load
it, build the report; print times and each phase's peak memory.

    .venv/bin/python -m bench.shadow_bench --calls 1000000            # the goal: 1M calls on 2 cores
    .venv/bin/python -m bench.shadow_bench --calls 100000 --kind jsonl --gzip

It also measures what `judge --sample 0.05` reads before its first call: the sampled pairs' texts only,
against reading every pair's texts first (the way it was).

Each phase runs in its own process so its peak RSS (ru_maxrss) is its own. The store is a fresh
SQLite file under --workdir (default: a temporary directory).
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py` as well as `-m bench.x`

from bench.harness import generated_log, peak_mb, run_phase  # noqa: E402
from bench.synth import CATEGORIES, WORDS  # noqa: E402

MODELS = ("gpt-4o-2024-08-06", "gpt-4.1-2025-04-14")
COLUMNS = ("request_id", "timestamp", "model", "role", "input", "output", "latency_ms", "prompt_tokens",
           "completion_tokens", "category")


def _reply(rng: random.Random, category: str, i: int, shadow: bool) -> str:
    """Realistic-ish traffic: the shadow model refuses a little more, breaks some JSON, answers shorter."""
    if category == "json":
        if shadow and rng.random() < 0.1:
            return f"```json\n{json.dumps({'name': f'user{i}'})}\n```"
        return json.dumps({"name": f"user{i}", "age": i % 90})
    if category in ("harmful", "over_refusal") and (category == "harmful" or shadow and rng.random() < 0.2):
        return "I'm sorry, but I can't help with that."
    n = rng.randint(15, 90 if not shadow else 60)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def rows(calls: int, seed: int = 0):
    rng = random.Random(seed)
    start = datetime(2025, 11, 1, tzinfo=UTC)
    for i in range(calls // 2):
        category = CATEGORIES[i % len(CATEGORIES)]
        at = start + timedelta(seconds=i * 0.5)
        prompt = f"Request {i} about {category}: " + " ".join(rng.choice(WORDS) for _ in range(12))
        for role, model in zip(("serving", "shadow"), MODELS):
            text = _reply(rng, category, i, role == "shadow")
            yield {"request_id": f"req-{i:07d}", "timestamp": (at + timedelta(milliseconds=rng.randint(0, 900)))
                   .strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "model": model, "role": role, "input": prompt,
                   "output": text, "latency_ms": rng.randint(200, 2500), "prompt_tokens": 30 + rng.randint(0, 20),
                   "completion_tokens": max(1, len(text) // 4), "category": category}


def generate(path: Path, calls: int, kind: str) -> None:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        if kind == "csv":
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows(calls))
        else:
            for row in rows(calls):
                f.write(json.dumps(row) + "\n")



def phase_load(db: str, log: Path) -> dict:
    from lib.data.loaders import LoadMapping, load_recorded_file
    from lib.store.engine import get_engine

    engine = get_engine(f"sqlite:///{db}")
    started = time.perf_counter()
    result = load_recorded_file(engine, log, "shadow-bench", "shadow",
                                LoadMapping(baseline=MODELS[0], candidate=MODELS[1]))
    return {"load_s": round(time.perf_counter() - started, 2), "n_pairs": result.n_pairs,
            "load_peak_mb": round(peak_mb())}


def phase_report(db: str) -> dict:
    from lib.review.report import build_report
    from lib.store.engine import get_engine

    engine = get_engine(f"sqlite:///{db}")
    started = time.perf_counter()
    report = build_report(engine, "shadow-bench")
    metrics = report["metrics"]
    return {"report_s": round(time.perf_counter() - started, 2), "report_peak_mb": round(peak_mb()),
            "report_n_pairs": report["n_pairs"], "accuracy_present": "accuracy" in metrics,
            "refusal_delta": round(metrics["refusal_rate"]["delta"], 4) if "refusal_rate" in metrics else None}


def phase_judge_sample(db: str, how: str) -> dict:
    """What `judge --sample 0.05` reads before its first call: the sampled pairs with their texts
    (`sampled`), or, for comparison, every pair with its texts then the sample (`all-texts`)."""
    from sqlmodel import Session

    from lib.judge.run import sampled_pairs
    from lib.judge.sampling import parse_sample, select_sample
    from lib.review.comparisons import get_comparison, load_pairs
    from lib.store.engine import get_engine

    engine = get_engine(f"sqlite:///{db}")
    started = time.perf_counter()
    sample = parse_sample("0.05")
    if how == "sampled":  # what `judge --sample` does
        with Session(engine) as session:
            _, chosen = sampled_pairs(engine, get_comparison(session, "shadow-bench"), sample, "bench")
    else:
        pairs = load_pairs(engine, "shadow-bench")
        keys = list(zip(pairs["case_key"].astype(str), pairs["repeat"].astype(int)))
        chosen = pairs.iloc[select_sample(keys, sample, "shadow-bench", "bench")]
    return {f"judge_{how}_s": round(time.perf_counter() - started, 2), f"judge_{how}_peak_mb": round(peak_mb()),
            "judge_sampled_pairs": len(chosen)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--kind", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--phase", choices=("load", "report", "judge-sample"), help=argparse.SUPPRESS)
    parser.add_argument("--how", choices=("sampled", "all-texts"), help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "load":
        print(json.dumps(phase_load(args.db, args.log)))
        return
    if args.phase == "report":
        print(json.dumps(phase_report(args.db)))
        return
    if args.phase == "judge-sample":
        print(json.dumps(phase_judge_sample(args.db, args.how)))
        return
    db, log = generated_log(args.workdir, "shadow-bench-", "shadow", args.calls, args.kind, args.gzip, generate,
                            "calls")
    figures = run_phase("bench.shadow_bench", ["--phase", "load", "--db", db, "--log", str(log)])
    print(f"load: {figures['load_s']} s for {figures['n_pairs']} pairs "
          f"({args.calls / figures['load_s']:.0f} calls/s), peak {figures['load_peak_mb']} MB")
    print(f"store: {Path(db).stat().st_size / 1e6:.0f} MB")
    figures |= run_phase("bench.shadow_bench", ["--phase", "report", "--db", db])
    print(f"build_report: {figures['report_s']} s over {figures['report_n_pairs']} pairs, "
          f"peak {figures['report_peak_mb']} MB (accuracy present: {figures['accuracy_present']}, "
          f"refusal delta {figures['refusal_delta']})")
    for how in ("sampled", "all-texts"):
        figures |= run_phase("bench.shadow_bench", ["--phase", "judge-sample", "--db", db, "--how", how])
        print(f"judge --sample 0.05, reading {how}: {figures[f'judge_{how}_s']} s for "
              f"{figures['judge_sampled_pairs']} pairs, peak {figures[f'judge_{how}_peak_mb']} MB")


if __name__ == "__main__":
    main()
