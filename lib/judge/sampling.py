"""Reproducible samples: `--sample 0.05` (a fraction) or `--sample 200` (a count).

Each pair gets a rank from sha256(comparison name, judge config hash, case key, repeat) and the
sample is the lowest-ranked k pairs. Re-running with the same judge picks the same pairs, a larger
sample contains the smaller one (so resuming only judges the new pairs), and a pair's place does
not depend on which other pairs exist.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lib.errors import ReviewInputError


class SampleError(ReviewInputError):
    """A --sample value that is neither a fraction in (0, 1] nor a positive count."""


@dataclass(frozen=True)
class Sample:
    text: str  # as given
    fraction: float | None = None
    count: int | None = None

    def size(self, population: int) -> int:
        if self.count is not None:
            return min(self.count, population)
        return min(population, math.ceil(self.fraction * population))  # type: ignore[operator]


def parse_sample(text: str | float | None) -> Sample | None:
    """None means every pair. A value with '.' or '%' is a fraction; an integer is a count."""
    if text is None or str(text).strip() == "":
        return None
    raw = str(text).strip()
    try:
        if raw.endswith("%"):
            fraction = float(raw[:-1]) / 100
        elif "." in raw or "e" in raw.lower():
            fraction = float(raw)
        else:
            count = int(raw)
            if count < 1:
                raise SampleError(f"--sample {raw}: a count must be at least 1")
            return Sample(raw, count=count)
    except ValueError as exc:
        raise SampleError(f"--sample {raw!r}: give a fraction (0.05, 5%) or a count (200)") from exc
    if not 0 < fraction <= 1 or math.isnan(fraction):
        raise SampleError(f"--sample {raw}: a fraction must be in (0, 1]")
    return Sample(raw, fraction=fraction)


def rank(comparison: str, config_hash: str, case_key: str, repeat: int) -> str:
    return hashlib.sha256("\x1f".join((comparison, config_hash, case_key, str(repeat))).encode()).hexdigest()


def select_sample(keys: Sequence[tuple[str, int]], sample: Sample | None, comparison: str,
                  config_hash: str) -> list[int]:
    """Indexes into `keys` ((case_key, repeat) per pair) of the sampled pairs, in their original order."""
    if sample is None:
        return list(range(len(keys)))
    ranked = sorted(range(len(keys)), key=lambda i: rank(comparison, config_hash, keys[i][0], keys[i][1]))
    return sorted(ranked[:sample.size(len(keys))])
