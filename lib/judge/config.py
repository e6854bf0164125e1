"""The pinned judge configuration: model string, parameters, template versions and hashes, rubric."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from lib.errors import ReviewInputError
from lib.judge.entities import JudgeConfig
from lib.judge.rubric import Rubric, load_rubric
from lib.judge.templates import CURRENT, Template, load_template
from lib.store.columns import to_json
from lib.store.engine import session_scope


@dataclass(frozen=True)
class JudgeSettings:
    """What pins a judge. The endpoint and the API key are not part of it (the key is never stored)."""

    model: str
    temperature: float | None = 0.0
    seed: int | None = None
    max_tokens: int | None = None
    json_mode: bool = True  # ask for response_format json_object where the provider supports it
    rubric: Rubric = field(default_factory=load_rubric)

    def validate(self) -> None:
        if not self.model or not self.model.strip():
            raise ReviewInputError("a judge model is required (--judge MODEL)")
        if self.temperature is not None and self.temperature < 0:
            raise ReviewInputError("judge temperature must be >= 0")

    def templates(self) -> dict[str, Template]:
        return {kind: load_template(version) for kind, version in CURRENT.items()}

    def row(self) -> dict[str, Any]:
        t = self.templates()
        rubric_json = self.rubric.canonical_json()
        row = {"model": self.model, "temperature": self.temperature, "seed": self.seed,
               "max_tokens": self.max_tokens, "json_mode": self.json_mode,
               "pointwise_template": t["pointwise"].version,
               "pointwise_template_hash": t["pointwise"].content_hash,
               "pairwise_template": t["pairwise"].version, "pairwise_template_hash": t["pairwise"].content_hash,
               "rubric_json": rubric_json, "rubric_hash": hashlib.sha256(rubric_json.encode()).hexdigest()}
        return {"config_hash": hashlib.sha256(to_json(row).encode()).hexdigest(), **row}

    def params(self) -> dict[str, Any]:
        """Sampling parameters as litellm takes them (None dropped by lib.run.llm.call_kwargs)."""
        return {"temperature": self.temperature, "seed": self.seed, "max_tokens": self.max_tokens}


def _find_or_add(engine: Engine, row: dict[str, Any]) -> JudgeConfig:
    with session_scope(engine) as session:
        found = session.exec(select(JudgeConfig).where(JudgeConfig.config_hash == row["config_hash"])).first()
        if found is None:
            found = JudgeConfig(**row)
            session.add(found)
            session.flush()
        return found


def judge_config(engine: Engine, settings: JudgeSettings) -> JudgeConfig:
    """The stored config row for these settings; identical settings share one row."""
    row = settings.row()
    try:
        return _find_or_add(engine, row)
    except IntegrityError:  # another process stored the same config just now
        return _find_or_add(engine, row)
