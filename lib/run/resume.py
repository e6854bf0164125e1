"""Resuming live runs from the store: which comparisons are unfinished, and their exact settings."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.review.comparisons import describe, get_comparison
from lib.run.runner import ModelSpec
from lib.store.columns import from_json
from lib.store.entities import SOURCE_LIVE, Comparison, Dataset, ModelConfig, Run


@dataclass(frozen=True)
class StoredRun:
    """What `run_comparison` needs to continue a comparison exactly as it was started."""

    name: str
    dataset: str
    baseline: ModelSpec
    candidate: ModelSpec
    system: str
    repeats: int


def _spec(cfg: ModelConfig) -> ModelSpec:
    return ModelSpec(model=cfg.model, api_base=cfg.api_base, temperature=cfg.temperature, top_p=cfg.top_p,
                     max_tokens=cfg.max_tokens, seed=cfg.seed, response_format=from_json(cfg.response_format_json),
                     tools=from_json(cfg.tools_json), system_prompt=cfg.system_prompt,
                     prompt_template=cfg.prompt_template)


def stored_run(engine: Engine, name: str) -> StoredRun:
    with Session(engine) as session:
        comp = get_comparison(session, name)
        base, cand = session.get(Run, comp.baseline_run_id), session.get(Run, comp.candidate_run_id)
        ds = session.get(Dataset, base.dataset_id)
        return StoredRun(name=name, dataset=ds.name, baseline=_spec(session.get(ModelConfig, base.config_id)),
                         candidate=_spec(session.get(ModelConfig, cand.config_id)), system=comp.system,
                         repeats=max(base.repeats, cand.repeats))


def unfinished(engine: Engine) -> list[dict[str, Any]]:
    """Live comparisons that were interrupted or still hold errors: resuming sends only what is missing."""
    with Session(engine) as session:
        rows = []
        for comp in session.exec(select(Comparison)).all():
            runs = [session.get(Run, comp.baseline_run_id), session.get(Run, comp.candidate_run_id)]
            if all(r.source == SOURCE_LIVE for r in runs) and any(r.status != "complete" for r in runs):
                info = describe(session, comp)
                rows.append({k: info[k] for k in ("name", "baseline", "candidate", "n_cases", "n_errors", "status")})
        return rows
