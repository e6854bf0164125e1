"""Synthetic comparisons for benchmarks: realistic-looking pairs written with Core bulk inserts."""
from __future__ import annotations

import json
import random

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from lib.db import session_scope, utcnow
from lib.models import Case, Comparison, Dataset, ModelConfig, Output, Run

CATEGORIES = ("math", "facts", "json", "summaries", "harmful", "over_refusal", "injection")
SCHEMA = json.dumps({"type": "object", "required": ["name", "age"],
                     "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}})
WORDS = ("the model answers with a short and helpful reply about the topic in question while "
         "keeping the tone neutral and the facts straight for the user who asked").split()


def _answer(rng: random.Random, category: str, i: int, drifted: bool) -> str:
    if category == "math":
        return f"The answer is {i * 7 + (1 if drifted and rng.random() < 0.2 else 0)}."
    if category == "json":
        if drifted and rng.random() < 0.3:
            return f"```json\n{json.dumps({'full_name': f'user{i}', 'age': str(i % 90)})}\n```"
        return json.dumps({"name": f"user{i}", "age": i % 90})
    if category in ("harmful", "over_refusal") and (category == "harmful" or drifted and rng.random() < 0.3):
        return "I'm sorry, but I can't help with that."
    n = rng.randint(20, 120 if not drifted else 60)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _case(i: int) -> dict:
    cat = CATEGORIES[i % len(CATEGORIES)]
    return {"case_key": f"c{i}", "position": i, "input_text": f"Question {i} about {cat}: " + "lorem " * 20,
            "expected": str(i * 7) if cat == "math" else None, "match": "numeric" if cat == "math" else None,
            "json_schema": SCHEMA if cat == "json" else None, "category": cat}


def build(engine: Engine, name: str, n: int, seed: int = 0) -> None:
    """A comparison of `n` paired cases; the candidate is shorter, refuses more and breaks some JSON."""
    rng = random.Random(seed)
    now = utcnow()
    with session_scope(engine) as session:
        ds = Dataset(name=f"{name}-golden", version=1, content_hash=f"synthetic-{name}", n_cases=n)
        session.add(ds)
        session.flush()
        conn = session.connection()
        conn.execute(insert(Case.__table__), [{**_case(i), "dataset_id": ds.id} for i in range(n)])
        case_ids = [row[0] for row in conn.exec_driver_sql(
            "SELECT id FROM \"case\" WHERE dataset_id = ? ORDER BY position", (ds.id,))]
        runs = []
        for model in ("bench/baseline", "bench/candidate"):
            cfg = ModelConfig(config_hash=f"{name}-{model}", model=model)
            session.add(cfg)
            session.flush()
            run = Run(config_id=cfg.id, dataset_id=ds.id, source="recorded", status="recorded")
            session.add(run)
            session.flush()
            runs.append(run.id)
        for side, run_id in enumerate(runs):
            conn.execute(insert(Output.__table__), [
                {"run_id": run_id, "case_id": cid, "repeat": 0, "created_at": now, "attempts": 1,
                 "text": _answer(rng, CATEGORIES[i % len(CATEGORIES)], i, side == 1), "finish_reason": "stop",
                 "latency_s": rng.uniform(0.2, 2.0), "prompt_tokens": 40, "completion_tokens": rng.randint(5, 200),
                 "cost_usd": rng.uniform(1e-5, 1e-3)}
                for i, cid in enumerate(case_ids)])
        session.add(Comparison(name=name, baseline_run_id=runs[0], candidate_run_id=runs[1], source="wide"))
