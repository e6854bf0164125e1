"""Reading comparisons: the list, one comparison, and its paired outputs as a column frame."""
from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy import func, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from lib.errors import ComparisonNotFound
from lib.run.redact import strip_url_credentials
from lib.store.entities import Comparison, Dataset, ModelConfig, Output, Run
from lib.store.rows import get_row

OUTPUT_FIELDS = ("id", "text", "finish_reason", "latency_s", "prompt_tokens", "completion_tokens",
                 "cost_usd", "error", "error_kind", "system_fingerprint", "served_model")


def get_comparison(session: Session, name: str) -> Comparison:
    comp = session.exec(select(Comparison).where(Comparison.name == name)).first()
    if comp is None:
        raise ComparisonNotFound(f"no comparison named '{name}' (see `./review list`)")
    return comp


def _run_info(session: Session, run_id: int) -> dict[str, Any]:
    run = get_row(session, Run, run_id)
    cfg = get_row(session, ModelConfig, run.config_id)
    counts = session.exec(
        select(func.count(col(Output.id)), func.count(col(Output.error))).where(Output.run_id == run_id)
    ).one()
    return {"run_id": run.id, "model": cfg.model, "api_base": strip_url_credentials(cfg.api_base), "status": run.status,
            "source": run.source, "repeats": run.repeats, "n_outputs": counts[0], "n_errors": counts[1],
            "system_fingerprint": run.system_fingerprint, "served_model": run.served_model,
            "dataset_id": run.dataset_id, "started_at": run.started_at, "finished_at": run.finished_at}


def _status(base: dict[str, Any], cand: dict[str, Any]) -> str:
    statuses = {base["status"], cand["status"]}
    for s in ("running", "pending", "partial"):
        if s in statuses:
            return s
    return "recorded" if statuses == {"recorded"} else "complete"


def describe(session: Session, comp: Comparison) -> dict[str, Any]:
    """Everything the list and the sidebar show about one comparison."""
    base, cand = _run_info(session, comp.baseline_run_id), _run_info(session, comp.candidate_run_id)
    ds = get_row(session, Dataset, base["dataset_id"])
    return {"name": comp.name, "baseline": base["model"], "candidate": cand["model"],
            "n_cases": ds.n_cases, "status": _status(base, cand), "system": comp.system,
            "source": comp.source, "dataset": ds.name, "dataset_version": ds.version,
            "n_errors": base["n_errors"] + cand["n_errors"], "created_at": comp.created_at.isoformat(),
            "baseline_run": base, "candidate_run": cand}


def list_comparisons(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        comps = session.exec(select(Comparison).order_by(col(Comparison.created_at).desc())).all()
        return [describe(session, c) for c in comps]


_PAIRS_SQL = """
SELECT c.id AS case_id, c.case_key, c.position, c.input_text, c.expected, c.match, c.pattern,
       c.json_schema, c.category, c.metadata_json, r.repeat,
       {b_cols}, {c_cols}
FROM "case" c
JOIN (SELECT case_id, repeat FROM output WHERE run_id IN (:b, :c) GROUP BY case_id, repeat) r
  ON r.case_id = c.id
LEFT JOIN output b ON b.run_id = :b AND b.case_id = c.id AND b.repeat = r.repeat
LEFT JOIN output o ON o.run_id = :c AND o.case_id = c.id AND o.repeat = r.repeat
ORDER BY c.position, c.id, r.repeat
"""


def load_pairs(engine: Engine, name: str) -> pd.DataFrame:
    """One row per (case, repeat) with `b_*` (baseline) and `c_*` (candidate) output columns.

    A side with no output for that (case, repeat) has nulls: an unfinished run is visible, not hidden.
    """
    with Session(engine) as session:
        comp = get_comparison(session, name)
        b_id, c_id = comp.baseline_run_id, comp.candidate_run_id
    b_cols = ", ".join(f"b.{f} AS b_{f}" for f in OUTPUT_FIELDS)
    c_cols = ", ".join(f"o.{f} AS c_{f}" for f in OUTPUT_FIELDS)
    sql = text(_PAIRS_SQL.format(b_cols=b_cols, c_cols=c_cols))
    with engine.connect() as conn:
        return pd.read_sql(sql, conn, params={"b": b_id, "c": c_id})


def comparison_runs(engine: Engine, comparison: str) -> tuple[int, int]:
    """The (baseline, candidate) run ids of a stored comparison."""
    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        return comp.baseline_run_id, comp.candidate_run_id

