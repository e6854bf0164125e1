"""Synthetic comparisons for benchmarks and property tests: realistic-looking pairs written with Core
bulk inserts. `messy=True` adds what real stores hold: repeats, missing outputs, provider errors,
truncation, chatty and nested JSON, cases without a category."""
from __future__ import annotations

import json
import random

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import select

from lib.store.columns import utcnow
from lib.store.engine import session_scope
from lib.store.entities import Case, Comparison, Dataset, ModelConfig, Output, Run

CATEGORIES = ("math", "facts", "json", "summaries", "harmful", "over_refusal", "injection")
SCHEMA = json.dumps({"type": "object", "required": ["name", "age"],
                     "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}})
WORDS = ("the model answers with a short and helpful reply about the topic in question while "
         "keeping the tone neutral and the facts straight for the user who asked").split()
REFUSALS = ("I'm sorry, but I can't help with that.", "I cannot assist with this request.",
            "As an AI language model, I won't provide that.", "Lo siento, no puedo ayudar con eso.")


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


def _messy_answer(rng: random.Random, category: str, i: int, drifted: bool) -> str:
    roll = rng.random()
    if category == "json":
        value = {"name": f"user{i}", "age": i % 90, "tags": [{"id": i, "ok": roll < 0.5}]}
        if drifted and roll < 0.4:
            value = {"userName": f"user{i}", "age": str(i % 90), "tags": [{"id": str(i)}], "extra": None}
        body = json.dumps(value)
        return rng.choice([body, f"Here you go:\n```json\n{body}\n```", f"Result: {body} done", "null", "no json"])
    if roll < 0.15:
        return rng.choice(REFUSALS)
    return _answer(rng, category, i, drifted)


def _case(i: int, messy: bool = False) -> dict:
    cat = CATEGORIES[i % len(CATEGORIES)]
    return {"case_key": f"c{i}", "position": i, "input_text": f"Question {i} about {cat}: " + "lorem " * 20,
            "expected": str(i * 7) if cat == "math" else None, "match": "numeric" if cat == "math" else None,
            "json_schema": SCHEMA if cat == "json" else None,
            "category": None if messy and i % 11 == 0 else cat,
            "metadata_json": json.dumps({"i": i}) if messy else None}


def build(engine: Engine, name: str, n: int, seed: int = 0, *, messy: bool = False, repeats: int = 1,
          with_outputs: bool = True) -> None:
    """A comparison of `n` paired cases; the candidate is shorter, refuses more and breaks some JSON."""
    with session_scope(engine) as session:
        ds = Dataset(name=f"{name}-golden", version=1, content_hash=f"synthetic-{name}", n_cases=n)
        session.add(ds)
        session.flush()
        session.connection().execute(insert(Case.__table__),
                                     [{**_case(i, messy), "dataset_id": ds.id} for i in range(n)])
        runs = []
        for model in ("bench/baseline", "bench/candidate"):
            cfg = ModelConfig(config_hash=f"{name}-{model}", model=model)
            session.add(cfg)
            session.flush()
            run = Run(config_id=cfg.id, dataset_id=ds.id, source="recorded", status="recorded", repeats=repeats)
            session.add(run)
            session.flush()
            runs.append(run.id)
        session.add(Comparison(name=name, baseline_run_id=runs[0], candidate_run_id=runs[1], source="wide"))
    if with_outputs:
        add_outputs(engine, name, range(n), seed, messy=messy, repeats=repeats)


def add_outputs(engine: Engine, name: str, positions: range, seed: int = 0, *, messy: bool = False,
                repeats: int = 1, sides: tuple[int, ...] = (0, 1)) -> int:
    """Write outputs for the cases at these positions (both sides unless `sides`); returns how many."""
    rng = random.Random(seed)
    now = utcnow()
    with session_scope(engine) as session:
        comp = session.exec(select(Comparison).where(Comparison.name == name)).one()
        ds_id = session.get(Run, comp.baseline_run_id).dataset_id
        conn = session.connection()
        case_ids = dict(conn.exec_driver_sql('SELECT position, id FROM "case" WHERE dataset_id = ?', (ds_id,)).all())
        rows = []
        for side in sides:
            run_id = (comp.baseline_run_id, comp.candidate_run_id)[side]
            for i in positions:
                for rep in range(repeats):
                    row = _output(rng, i, side == 1, messy)
                    if row is not None:
                        rows.append({**row, "run_id": run_id, "case_id": case_ids[i], "repeat": rep,
                                     "created_at": now, "attempts": 1})
        if rows:
            conn.execute(insert(Output.__table__), rows)
    return len(rows)


def _output(rng: random.Random, i: int, drifted: bool, messy: bool) -> dict | None:
    category = CATEGORIES[i % len(CATEGORIES)]
    row = {"finish_reason": "stop", "latency_s": rng.uniform(0.2, 2.0), "prompt_tokens": 40,
           "completion_tokens": rng.randint(5, 200), "cost_usd": rng.uniform(1e-5, 1e-3), "error": None,
           "error_kind": None}
    if not messy:
        return {**row, "text": _answer(rng, category, i, drifted)}
    roll = rng.random()
    if roll < 0.04:
        return None  # never answered (an unfinished run): the pair is missing this side
    if roll < 0.08:
        return {**row, "text": None, "error": "timeout", "error_kind": "timeout", "finish_reason": None,
                "completion_tokens": None, "cost_usd": None}
    if roll < 0.12:
        row["finish_reason"] = "length"
    return {**row, "text": _messy_answer(rng, category, i, drifted)}
