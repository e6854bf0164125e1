"""Micro-benchmark of the per-output checks on 100k synthetic baseline/candidate pairs.

    .venv/bin/python bench/checks_bench.py [n_pairs]

Prints the best of three runs per step. The synthetic answers mimic chat outputs: 5% refusals,
short factual answers, ~700-character explanations, code, and JSON for the cases with a schema.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.review.checks.matching import match_outputs  # noqa: E402
from lib.review.checks.refusal import RefusalDetector  # noqa: E402
from lib.review.checks.similarity import similarity  # noqa: E402
from lib.review.checks.structured import json_validity  # noqa: E402
from lib.review.stats import binary_metric, continuous_metric  # noqa: E402

SCHEMA = json.dumps({"type": "object", "required": ["name", "age"],
                     "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}})
WORDS = ("the model answer returns value because data result users request first second however "
         "therefore example function cannot error table policy").split()
REFUSALS = ["I'm sorry, but I can't help with that.", "I cannot assist with that request.",
            "I won't write that, but here is a safer alternative: ..."]


def synthetic_output(rng: random.Random, i: int, has_schema: bool) -> str:
    if has_schema:
        body = json.dumps({"name": f"user{i}", "age": rng.randint(1, 90)})
        return rng.choice([body, f"Here you go:\n```json\n{body}\n```", body[:-1]])
    kind = rng.random()
    if kind < 0.05:
        return rng.choice(REFUSALS)
    if kind < 0.35:
        return f"The answer is {rng.randint(1, 500)}."
    if kind < 0.45:
        return f"```python\ndef f(x):\n    return x * {i}\n```\nThis multiplies its input."
    return " ".join(rng.choice(WORDS) for _ in range(110)) + f" ({i})."


def build(n: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    has_schema = [rng.random() < 0.3 for _ in range(n)]
    rules = rng.choices(["normalized", "contains", "numeric", "regex", "exact", "not_contains", None],
                        weights=[40, 20, 15, 10, 5, 5, 5], k=n)
    expected = [None if r is None else ("42" if r in ("numeric", "regex") else "the answer") for r in rules]
    return pd.DataFrame({
        "b_text": [synthetic_output(rng, i, s) for i, s in enumerate(has_schema)],
        "c_text": [synthetic_output(rng, i + 7, s) for i, s in enumerate(has_schema)],
        "expected": expected, "match": rules,
        "pattern": [r"answer is (\d+)" if r == "regex" else None for r in rules],
        "json_schema": [SCHEMA if s else None for s in has_schema],
        "b_latency_s": np.random.default_rng(seed).gamma(2.0, 0.5, n),
        "c_latency_s": np.random.default_rng(seed + 1).gamma(2.0, 0.45, n),
    })


def best_of(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(n: int) -> None:
    pairs = build(n)
    detector = RefusalDetector()
    all_schema = pd.Series(SCHEMA, index=pairs.index)
    steps: dict[str, Callable[[], object]] = {
        "refusal flags (both sides)": lambda: (detector.flags(pairs.b_text), detector.flags(pairs.c_text)),
        "matching (both sides)": lambda: [match_outputs(pairs[f"{s}_text"], pairs.expected, pairs.match,
                                                        pairs.pattern) for s in "bc"],
        "strict+lenient JSON, 30% schema cases (both)": lambda: [
            json_validity(pairs[f"{s}_text"], pairs.json_schema) for s in "bc"],
        "strict+lenient JSON, every case has a schema (both)": lambda: [
            json_validity(pairs[f"{s}_text"], all_schema) for s in "bc"],
        "similarity (pairwise)": lambda: similarity(pairs.b_text, pairs.c_text),
        "binary_metric (Newcombe, McNemar)": lambda: binary_metric(
            detector.flags(pairs.b_text), detector.flags(pairs.c_text)),
        "continuous_metric (bootstrap 2000, Wilcoxon)": lambda: continuous_metric(
            pairs.b_latency_s, pairs.c_latency_s),
    }
    print(f"{n:,} pairs; mean output length {pairs.b_text.str.len().mean():.0f} chars; best of 3 runs")
    checks_total = 0.0
    for name, fn in steps.items():
        seconds = best_of(fn)
        if not name.startswith(("binary_metric", "continuous_metric", "strict+lenient JSON, every")):
            checks_total += seconds
        print(f"  {name:<52} {seconds:6.3f} s")
    print(f"  {'checks total (refusal + matching + JSON 30% + similarity)':<52} {checks_total:6.3f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n_pairs", nargs="?", type=int, default=100_000, help="synthetic pairs (default 100000)")
    main(parser.parse_args().n_pairs)
