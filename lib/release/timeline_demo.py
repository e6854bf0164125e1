"""Synthetic production logs for tests, benchmarks and the docs: a flat log, or one with a planted change
(a refusal-rate step and a length drop on a known day), timestamps as LLMDrift's CSVs write them."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

import numpy as np

LLMDRIFT_FORMAT = "%m/%d/%Y, %H:%M:%S"
TOPICS = ("refund for order", "reset my password", "shipping to Canada", "cancel my subscription",
          "invoice copy", "change delivery address", "warranty claim", "gift card balance")
REFUSAL = "I'm sorry, but I can't help with that request."


def log_rows(days: int = 20, per_day: int = 150, change_day: int | None = 12, refusal_before: float = 0.03,
             refusal_after: float = 0.15, length_factor: float = 0.6, model: str = "gpt-4o",
             start: datetime = datetime(2023, 7, 1), seed: int = 0) -> list[dict[str, str]]:
    """Rows of one model's log; from `change_day` (0-based) on, more refusals and shorter answers."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in range(days):
        changed = change_day is not None and day >= change_day
        p_refuse = refusal_after if changed else refusal_before
        for i in range(per_day):
            at = start + timedelta(days=day, seconds=int(rng.integers(0, 86_400)))
            topic = TOPICS[int(rng.integers(0, len(TOPICS)))]
            words = max(3, int(rng.normal(60, 15) * (length_factor if changed else 1.0)))
            output = REFUSAL if rng.random() < p_refuse else f"About your {topic}: " + " ".join(
                ["the", "steps", "are", "simple", "and", "quick"][j % 6] for j in range(words))
            rows.append({"timestamp": at.strftime(LLMDRIFT_FORMAT), "request_id": f"d{day}-{i}", "model": model,
                         "prompt": f"Customer {day}-{i} asks about {topic}", "response": output,
                         "latency_ms": f"{rng.gamma(4, 150):.0f}"})
    return rows


def log_csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()
