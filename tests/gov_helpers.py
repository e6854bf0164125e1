"""Shared test data for the governance tests: comparisons written straight into the store."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from lib.store.columns import utcnow
from lib.store.engine import session_scope
from lib.store.entities import SOURCE_LIVE, SOURCE_RECORDED, Case, Comparison, Dataset, ModelConfig, Output, Run

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Pair:
    expected: str
    baseline: str
    candidate: str
    category: str = "general"


def pairs(n_same: int, n_worse: int = 0, n_better: int = 0, category: str = "general") -> list[Pair]:
    """n_same both right, n_worse only the baseline right, n_better only the candidate right."""
    rows = [Pair(str(i), str(i), str(i), category) for i in range(n_same)]
    rows += [Pair(str(i), str(i), "wrong", category) for i in range(n_same, n_same + n_worse)]
    rows += [Pair(str(i), "wrong", str(i), category) for i in range(n_same + n_worse, n_same + n_worse + n_better)]
    return rows


def make_comparison(engine: Engine, name: str, rows: Iterable[Pair], *, system: str = "default",
                    live: bool = False, outputs_at: datetime | None = None) -> int:
    """A dataset, two runs (exact-match cases) and a comparison; returns the comparison id."""
    rows = list(rows)
    at = outputs_at or utcnow() - timedelta(hours=1)
    source = SOURCE_LIVE if live else SOURCE_RECORDED
    with session_scope(engine) as s:
        ds = Dataset(name=f"{name}-golden", content_hash=f"hash-{name}", n_cases=len(rows), created_at=at)
        s.add(ds)
        s.flush()
        cases = [Case(dataset_id=ds.id, case_key=f"c{i}", position=i, input_text=f"question {i}",
                      expected=r.expected, match="exact", category=r.category) for i, r in enumerate(rows)]
        s.add_all(cases)
        runs = []
        for side in ("baseline", "candidate"):
            cfg = ModelConfig(config_hash=f"{name}-{side}", model=f"acme/{side}-model", temperature=0.0)
            s.add(cfg)
            s.flush()
            run = Run(config_id=cfg.id, dataset_id=ds.id, source=source, status="complete" if live else "recorded",
                      system_fingerprint=f"fp-{side}", served_model=f"{side}-2025", created_at=at)
            s.add(run)
            runs.append(run)
        s.flush()
        for case, r in zip(cases, rows, strict=True):
            for run, text in zip(runs, (r.baseline, r.candidate), strict=True):
                s.add(Output(run_id=run.id, case_id=case.id, text=text, finish_reason="stop", latency_s=0.5,
                             prompt_tokens=10, completion_tokens=2, cost_usd=0.0001, created_at=at))
        comp = Comparison(name=name, baseline_run_id=runs[0].id, candidate_run_id=runs[1].id, system=system,
                          source="run" if live else "wide", created_at=at)
        s.add(comp)
        s.flush()
        return comp.id


def cli(db_url: str, key_dir: Path, *args: str, passphrase: str | None = "correct horse",
        stdin: str | None = None) -> subprocess.CompletedProcess:
    """`./review ARGS` in a child process, as users run it."""
    env = {**os.environ, "DATABASE_URL": db_url, "REVIEW_KEY_DIR": str(key_dir)}
    env.pop("REVIEW_PASSPHRASE", None)
    if passphrase is not None:
        env["REVIEW_PASSPHRASE"] = passphrase
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def db_path(db_url: str) -> str:
    return db_url.split("///", 1)[1]


def tamper(db_url: str, sql: str, *params: object) -> int:
    """Change the store behind the library's back (plain sqlite3, foreign keys off, like an attacker)."""
    conn = sqlite3.connect(db_path(db_url))
    try:
        changed = conn.execute(sql, params).rowcount
        conn.commit()
        return changed
    finally:
        conn.close()


def perturb_sql(table: str, column: str, where: str) -> str:
    """An UPDATE that changes one field whatever its type (ids jump far to stay unique)."""
    step = 1_000_003 if column in ("id", "seq") else 1
    return (f'UPDATE "{table}" SET "{column}" = CASE typeof("{column}") WHEN \'integer\' THEN "{column}" + {step} '
            f'WHEN \'real\' THEN "{column}" + 0.5 WHEN \'null\' THEN \'x\' ELSE "{column}" || \'x\' END {where}')


def concurrent_worker(db_url: str, key_dir: str, worker: int, n_actions: int, decide_every: int) -> None:
    """One reviewer process: comments, and a signed decision every `decide_every` actions."""
    from lib.governance.decisions import DecisionRequest, add_comment, decide
    from lib.store.engine import get_engine

    engine = get_engine(db_url)
    for i in range(n_actions):
        if decide_every and i % decide_every == decide_every - 1:
            req = DecisionRequest("cmp", "go", "alice", f"worker {worker} decision {i}", policy="strict")
            decide(engine, req, "correct horse", Path(key_dir))
        else:
            add_comment(engine, "cmp", f"reviewer-{worker}", f"comment {i}")
