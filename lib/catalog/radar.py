"""The deprecation radar: every model in use, with its deprecation date and the days left.

In use: the baselines and candidates of comparisons, the models monitor series call, and the judge models
of the store. Dates come from the catalogue (the override file first, named in `source`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from lib.catalog.catalogue import Catalogue, catalogue
from lib.errors import ReviewInputError

BANNER_WITHIN_DAYS = 90  # the Overview warns within this many days
ROLES = ("baseline", "candidate", "monitored", "judge")


_SIDES = text("""
SELECT cmp.name, 'baseline', cfg.model FROM comparison cmp
  JOIN run r ON r.id = cmp.baseline_run_id JOIN modelconfig cfg ON cfg.id = r.config_id
UNION ALL
SELECT cmp.name, 'candidate', cfg.model FROM comparison cmp
  JOIN run r ON r.id = cmp.candidate_run_id JOIN modelconfig cfg ON cfg.id = r.config_id
""")


@dataclass(frozen=True)
class InUse:
    model: str
    roles: tuple[str, ...]  # subset of ROLES, in that order
    used_by: tuple[str, ...]  # comparison names, "monitor", "judge"


@dataclass(frozen=True)
class Deprecation:
    model: str
    roles: list[str]
    used_by: list[str]
    deprecation_date: str | None
    days_left: int | None  # negative: already past
    successor: str | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def today_utc() -> date:
    return datetime.now(UTC).date()


def models_in_use(engine: Engine) -> list[InUse]:
    """Every model string the store uses, with its roles and where (sorted by model)."""
    from lib.judge.entities import JudgeConfig, JudgeRun
    from lib.release.entities import MonitorPoint

    found: dict[str, tuple[set[str], set[str]]] = {}

    def add(model: str, role: str, where: str) -> None:
        roles, used = found.setdefault(model, (set(), set()))
        roles.add(role)
        used.add(where)

    with Session(engine) as session:
        for name, role, model in session.connection().execute(_SIDES).all():
            add(model, role, name)
        for model in session.exec(select(MonitorPoint.model).distinct()).all():
            add(model, "monitored", "monitor")
        judged = select(JudgeConfig.model).join(JudgeRun, col(JudgeRun.config_id) == col(JudgeConfig.id)).distinct()
        for model in session.exec(judged).all():
            add(model, "judge", "judge")
    return [InUse(m, tuple(r for r in ROLES if r in roles), tuple(sorted(used)))
            for m, (roles, used) in sorted(found.items())]


def deprecations(engine: Engine, *, today: date | None = None, cat: Catalogue | None = None) -> list[Deprecation]:
    """The radar: models in use, soonest deprecation first (models without a known date last)."""
    today = today or today_utc()
    cat = cat or catalogue()
    rows = []
    for use in models_in_use(engine):
        info = cat.info(use.model)
        when = info.deprecation_date
        source = (f"override file {info.override_file}" if "deprecation_date" in info.overridden
                  else "litellm bundled model map")
        rows.append(Deprecation(use.model, list(use.roles), list(use.used_by), when.isoformat() if when else None,
                                (when - today).days if when else None, info.successor, source))
    return sorted(rows, key=lambda d: (d.days_left is None, d.days_left or 0, d.model))


def within(rows: list[Deprecation], days: int) -> list[Deprecation]:
    """The rows deprecated within `days` from today (or already past)."""
    if days < 0:
        raise ReviewInputError(f"--within must be a number of days >= 0 (got {days})")
    return [d for d in rows if d.days_left is not None and d.days_left <= days]
