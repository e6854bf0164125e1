"""Runs at a provider's quota: throughput as a fraction of a per-model request quota, and the 429 share.

The test server (tests/llm_server.py, in this process: a few dozen calls per second need no core of
their own) limits each model to --rpm requests per minute as a token bucket holding one second of
quota, and answers 429 with Retry-After / retry-after-ms past it. Three runs of N cases x 2 models:
- declared: `--rpm` given to the runner (RunOptions.quota), the server sends no rate-limit headers;
- undeclared: nothing given, no headers: the pacer finds the quota from 429s (AIMD);
- headers: nothing given, the server sends x-ratelimit-* headers, which set the pace.
Per run and model: sustained throughput (successes per second after the first --settle seconds, over
the quota; the median of the two models), the share of requests answered 429 and requests sent per
success. Goals: declared >= 0.95 of the quota with <= 1% 429s; undeclared sent/success <= 1.1 and
>= 0.85 of the quota.

    .venv/bin/python bench/quota_bench.py [--rpm 1200] [--cases 240] [--latency 0.1] [--concurrency 16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import make_dataset  # noqa: E402
from lib.run.quota import Quota  # noqa: E402
from lib.run.runner import ModelSpec, RunOptions, run_comparison  # noqa: E402
from lib.store.engine import get_engine  # noqa: E402
from tests.llm_server import LLMServer  # noqa: E402

MODELS = ("bench-a", "bench-b")


def measure(server: LLMServer, model: str, rpm: float, settle_s: float) -> dict[str, float]:
    log = [r for r in server.log if r.model == model]
    start = log[0].at + settle_s
    ok_times = [r.at for r in log if r.fault is None and r.at >= start]
    span = (ok_times[-1] - start) if len(ok_times) > 1 else float("nan")
    n_429 = sum(r.fault == "429" for r in log)
    n_ok = sum(r.fault is None for r in log)
    return {"fraction": len(ok_times) / span / (rpm / 60.0), "share_429": n_429 / len(log),
            "sent_per_success": len(log) / max(n_ok, 1)}


def one_run(engine, args: argparse.Namespace, label: str, declared: bool, headers: bool) -> None:
    with LLMServer(latency=args.latency) as server:
        for model in MODELS:
            server.set_quota(model, rpm=args.rpm, burst_s=1.0, headers=headers)
        options = RunOptions(concurrency=args.concurrency, timeout=30.0, workers=args.workers,
                             quota=Quota(rpm=args.rpm) if declared else Quota())
        started = time.perf_counter()
        result = run_comparison(engine, dataset="bench", name=label, options=options,
                                baseline=ModelSpec(f"openai/{MODELS[0]}", api_base=server.url),
                                candidate=ModelSpec(f"openai/{MODELS[1]}", api_base=server.url))
        wall = time.perf_counter() - started
        figures = [measure(server, m, args.rpm, args.settle) for m in MODELS]
    med = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
    achieved = ", ".join(f"{s.side} {s.rpm:.0f} rpm ({s.rate_limited} 429s)"
                         for s in (result.baseline, result.candidate))
    print(f"{label:<10} {result.status}, {wall:.1f}s ({result.workers}): throughput {med['fraction']:.3f} of the "
          f"quota, 429 share {med['share_429']:.2%}, sent per success {med['sent_per_success']:.3f} "
          f"(medians of 2 models); runner says {achieved}; load {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rpm", type=float, default=1200.0, help="the server's quota per model")
    parser.add_argument("--cases", type=int, default=240)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds left out of the throughput figure")
    parser.add_argument("--workers", default="in-process")
    parser.add_argument("--only", choices=("declared", "undeclared", "headers"), default=None)
    args = parser.parse_args()
    print(f"quota {args.rpm:g} rpm per model (server bucket: 1 s of quota), {args.cases} cases x 2 models, "
          f"latency {args.latency}s, concurrency {args.concurrency}; load {os.getloadavg()[0]:.2f}")
    runs = {"declared": (True, False), "undeclared": (False, False), "headers": (False, True)}
    with tempfile.TemporaryDirectory() as tmp:
        engine = get_engine(f"sqlite:///{tmp}/bench.db")
        make_dataset(engine, "bench", args.cases)
        make_dataset(engine, "warm-up", 4)
        with LLMServer() as server:  # litellm's import and first-call set-up: not part of any figure
            run_comparison(engine, dataset="warm-up", baseline=ModelSpec("openai/w-a", api_base=server.url),
                           candidate=ModelSpec("openai/w-b", api_base=server.url), name="warm-up",
                           options=RunOptions(workers=args.workers))
        for label, (declared, headers) in runs.items():
            if args.only in (None, label):
                one_run(engine, args, label, declared, headers)


if __name__ == "__main__":
    main()
