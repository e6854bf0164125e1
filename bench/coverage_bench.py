"""Coverage of the interval for a continuous paired delta (mean length difference) in A/A runs.

    .venv/bin/python bench/coverage_bench.py [studies]

Simulates A/A comparisons: both sides draw their output length from the same per-case distribution
(a case's typical length is log-normal, each output varies around it, and 3% of outputs run away to
several times their length), so the true mean difference is 0 and a 95% interval should cover 0 in
0.94-0.96 of the studies. Prints, per n = 30, 100, 1000, the coverage of the interval the report
uses (`lib.review.stats.delta_ci`) beside the percentile bootstrap it replaced, with the Monte Carlo
standard error of each figure. A second table checks a real, skewed change (every answer grows by an
exponential amount, true mean 50 characters), where symmetry does not hold: coverage of the true delta.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.review.stats import bootstrap_mean_ci, delta_ci  # noqa: E402

SIZES = (30, 100, 1000)
BOOTSTRAP_STUDIES = 400  # the percentile bootstrap is slow; enough to show its shortfall at n = 30


def aa_lengths(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Paired output lengths of two identical models on n cases."""
    typical = rng.lognormal(mean=6.0, sigma=0.9, size=n)  # ~400 characters, long right tail

    def side() -> np.ndarray:
        runaway = np.where(rng.random(n) < 0.03, rng.uniform(3, 8, n), 1.0)
        return np.round(typical * rng.lognormal(0.0, 0.35, n) * runaway)

    return side(), side()


def coverage(n: int, studies: int, interval) -> tuple[float, float]:
    rng = np.random.default_rng(n)
    hits = 0
    for _ in range(studies):
        baseline, candidate = aa_lengths(rng, n)
        low, high = interval(candidate - baseline)[:2]
        hits += low <= 0.0 <= high
    rate = hits / studies
    return rate, float(np.sqrt(rate * (1 - rate) / studies))


def main(studies: int) -> None:
    print(f"A/A coverage of the 95% interval of the mean length difference (true value 0); {studies} studies")
    print(f"{'n':>6}  {'report interval':>24}  {'method':>8}  {'percentile bootstrap':>24}  seconds")
    for n in SIZES:
        start = time.perf_counter()
        method = delta_ci(np.arange(float(n)))[2]
        ours, ours_se = coverage(n, studies, delta_ci)
        boot, boot_se = coverage(n, BOOTSTRAP_STUDIES, lambda d: bootstrap_mean_ci(d, n_resamples=999))
        print(f"{n:>6}  {ours:>15.3f} ± {ours_se:.3f}  {method:>8}  {boot:>15.3f} ± {boot_se:.3f}"
              f"  {time.perf_counter() - start:7.1f}")


def shifted_coverage(n: int, studies: int) -> tuple[float, float]:
    rng = np.random.default_rng(10_000 + n)
    hits = 0
    for _ in range(studies):
        baseline, _ = aa_lengths(rng, n)
        low, high = delta_ci(rng.exponential(50.0, n))[:2]  # candidate - baseline
        hits += low <= 50.0 <= high
    rate = hits / studies
    return rate, float(np.sqrt(rate * (1 - rate) / studies))


def main_shifted(studies: int) -> None:
    print(f"\nSkewed real change (true mean +50 characters): coverage of the true delta; {studies} studies")
    for n in SIZES:
        rate, se = shifted_coverage(n, studies)
        print(f"{n:>6}  {rate:>15.3f} ± {se:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="?", type=int, default=4000,
                        help="A/A studies per size (default 4000; the skewed table runs half as many)")
    count = parser.parse_args().studies
    main(count)
    main_shifted(count // 2)
