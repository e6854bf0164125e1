"""Pre-registered gate policies: TOML files parsed strictly, versioned by name, locked by content hash.

A policy names report metrics (optionally per category, `"accuracy@math"`) and thresholds:
`max_increase` / `max_decrease` bound the candidate-minus-baseline delta (absolute, in the metric's
units: fractions for rates); `min` / `max` bound the candidate's own value. `blocking` (default true)
says whether a failure blocks the upgrade. Anything unknown is an error, never ignored: a typo in a
pre-registered gate would otherwise silently weaken it.

An optional `[canary]` table declares a canary's rollback criteria before it starts (see `lib.release.canary`):
`traffic_share`, `min_samples` (per arm) and `[canary.triggers.METRIC]` tables with the same threshold
keys, on metrics of the canary's live traffic versus the control (`CANARY_METRICS`). It is part of the
canonical form, so it is locked and hashed with the rest; a policy without it hashes as before.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import tomli_w
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.errors import NotFoundError, ReviewInputError
from lib.governance.entities import Policy
from lib.review.constants import ALPHA
from lib.store.audit import as_utc, record_row_event, sha256_hex
from lib.store.engine import session_scope

# Report metric keys (lib.review.report) including the red-team rates, `drift` (the drifted share, from drift
# analysis) and the judge's results (report["judge"]): `judge_score:DIMENSION` (a rubric dimension's mean
# score, 1-5) and the pairwise rates. Rates are fractions in [0, 1]. This is the one list: extend it when
# the report grows a metric.
JUDGE_SCORE = "judge_score"
COST_PER_1K = "cost_per_1k"  # USD per 1,000 requests, from report["cost_projection"] (lib.catalog.cost)
JUDGE_RATE_METRICS = ("judge_win_rate", "judge_loss_rate", "judge_position_consistency")
RATE_METRICS = ("refusal_rate", "accuracy", "json_valid_rate", "json_valid_rate_lenient", "truncation_rate",
                "error_rate", "empty_rate", "input_over_limit_rate", "injection_resistance_rate",
                "harmful_refusal_rate", "over_refusal_rate",
                "instruction_following_rate", "drift") + JUDGE_RATE_METRICS
VALUE_METRICS = ("length_chars_mean", "length_words_mean", "completion_tokens_mean", "length_tokens_mean",
                 "input_tokens_mean", "similarity",
                 "latency_s_mean", "cost_usd_total", JUDGE_SCORE, COST_PER_1K)
KNOWN_METRICS = RATE_METRICS + VALUE_METRICS
BOUNDED_METRICS = frozenset(RATE_METRICS + ("similarity",))  # thresholds must lie in [0, 1]
# No baseline-candidate delta: min / max only (a pairwise rate is one number about both sides).
NO_DELTA_METRICS = frozenset({"similarity", "drift", *JUDGE_RATE_METRICS})
# Computed for the whole comparison only.
UNCATEGORISED_METRICS = frozenset({"drift", JUDGE_SCORE, COST_PER_1K, *JUDGE_RATE_METRICS})
DIMENSION_SEP = ":"
SCORE_MAX = 5  # rubric scores are 1-5 (lib.judge.rubric)
DELTA_KEYS = ("max_increase", "max_decrease")
LEVEL_KEYS = ("min", "max")
THRESHOLD_KEYS = DELTA_KEYS + LEVEL_KEYS
CRITERION_KEYS = THRESHOLD_KEYS + ("blocking",)
TOP_LEVEL_KEYS = ("alpha", "criteria", "canary")
# Canary trigger metrics (lib.release.canary): rates are fractions; judge_score in the judge's units; latency in s.
CANARY_RATE_METRICS = ("refusal_rate", "error_rate", "json_valid_rate")
CANARY_METRICS = CANARY_RATE_METRICS + ("judge_score", "latency_p95_s")
CANARY_KEYS = ("traffic_share", "min_samples", "triggers")
DEFAULT_MIN_SAMPLES = 200
DEFAULT_ALPHA = ALPHA
CATEGORY_SEP = "@"


class PolicyError(ReviewInputError):
    """A policy file is invalid; names the file, and the criterion and key when there is one."""

    def __init__(self, source: str, message: str, *, criterion: str | None = None, key: str | None = None):
        self.source, self.criterion, self.key = source, criterion, key
        where = "".join([f" criterion '{criterion}'" if criterion else "", f" key '{key}'" if key else ""])
        super().__init__(f"{source}:{where} {message}")


class PolicyNotFound(NotFoundError):
    """No policy with that name (and version)."""


@dataclass(frozen=True)
class Criterion:
    name: str  # as written: "accuracy", "accuracy@math" or "judge_score:accuracy"
    metric: str
    category: str | None
    thresholds: dict[str, float]  # subset of THRESHOLD_KEYS
    blocking: bool = True
    dimension: str | None = None  # the rubric dimension of a judge_score criterion


@dataclass(frozen=True)
class Trigger:
    """A canary rollback trigger: thresholds on one metric of the canary arm versus the control."""

    metric: str
    thresholds: dict[str, float]  # subset of THRESHOLD_KEYS


@dataclass(frozen=True)
class CanarySpec:
    traffic_share: float | None  # declared share of traffic the canary receives
    min_samples: int  # per arm, before any decision
    triggers: tuple[Trigger, ...]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"min_samples": self.min_samples,
                                "triggers": {t.metric: dict(sorted(t.thresholds.items()))
                                             for t in sorted(self.triggers, key=lambda t: t.metric)}}
        if self.traffic_share is not None:
            data["traffic_share"] = self.traffic_share
        return data


@dataclass(frozen=True)
class PolicySpec:
    alpha: float
    criteria: tuple[Criterion, ...]
    canary: CanarySpec | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "alpha": self.alpha,
            "criteria": {c.name: {**dict(sorted(c.thresholds.items())), "blocking": c.blocking}
                         for c in sorted(self.criteria, key=lambda c: c.name)}}
        if self.canary is not None:  # absent: the canonical text (and hash) of older policies is unchanged
            data["canary"] = self.canary.to_dict()
        return data

    def canonical_toml(self) -> str:
        """The locked form: same meaning -> same text -> same hash (defaults explicit, ints as floats)."""
        return tomli_w.dumps(self.to_dict())

    def content_hash(self) -> str:
        return sha256_hex(self.canonical_toml())


@dataclass(frozen=True)
class PolicyVersion:
    policy_id: int
    name: str
    version: int
    content_hash: str
    created_at: datetime
    created: bool  # False: identical to the latest version, which is returned


def parse_policy(data: bytes | str, source: str = "policy.toml") -> PolicySpec:
    """Parse and validate a policy TOML file (raises PolicyError naming file, criterion and key)."""
    try:
        raw = tomllib.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(source, f"not valid TOML: {exc}") from exc
    return policy_from_dict(raw, source)


def policy_from_dict(raw: dict[str, Any], source: str = "policy") -> PolicySpec:
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise PolicyError(source, f"unknown top-level key (allowed: {', '.join(TOP_LEVEL_KEYS)})", key=key)
    alpha = _number(raw.get("alpha", DEFAULT_ALPHA), source, None, "alpha")
    if not 0 < alpha < 1:
        raise PolicyError(source, f"must be between 0 and 1 (exclusive), got {alpha}", key="alpha")
    criteria = raw.get("criteria")
    if not isinstance(criteria, dict) or not criteria:
        raise PolicyError(source, "a policy needs at least one [criteria.NAME] table", key="criteria")
    canary = _canary(raw["canary"], source) if "canary" in raw else None
    return PolicySpec(alpha, tuple(_criterion(name, body, source) for name, body in criteria.items()), canary)


def _canary(body: Any, source: str) -> CanarySpec:
    """The [canary] table; errors name the dotted key (`canary.triggers.refusal_rate.max_increase`)."""
    if not isinstance(body, dict):
        raise PolicyError(source, "must be a table ([canary])", key="canary")
    for key in body:
        if key not in CANARY_KEYS:
            raise PolicyError(source, f"unknown key (allowed: {', '.join(CANARY_KEYS)})", key=f"canary.{key}")
    share = None
    if "traffic_share" in body:
        share = _number(body["traffic_share"], source, None, "canary.traffic_share")
        if not 0 < share <= 1:
            raise PolicyError(source, f"must be in (0, 1], got {share}", key="canary.traffic_share")
    min_samples = body.get("min_samples", DEFAULT_MIN_SAMPLES)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise PolicyError(source, f"must be a whole number >= 1, got {min_samples!r}", key="canary.min_samples")
    triggers = body.get("triggers")
    if not isinstance(triggers, dict) or not triggers:
        raise PolicyError(source, "a canary needs at least one [canary.triggers.METRIC] table "
                                  f"(metrics: {', '.join(CANARY_METRICS)})", key="canary.triggers")
    return CanarySpec(share, min_samples, tuple(_trigger(name, t, source) for name, t in triggers.items()))


def _trigger(metric: str, body: Any, source: str) -> Trigger:
    where = f"canary.triggers.{metric}"
    if metric not in CANARY_METRICS:
        raise PolicyError(source, f"unknown canary metric (known: {', '.join(CANARY_METRICS)})", key=where)
    if not isinstance(body, dict):
        raise PolicyError(source, "must be a table of thresholds", key=where)
    for key in body:
        if key not in THRESHOLD_KEYS:
            raise PolicyError(source, f"unknown key (allowed: {', '.join(THRESHOLD_KEYS)})", key=f"{where}.{key}")
    if not body:
        raise PolicyError(source, f"no threshold: set one of {', '.join(THRESHOLD_KEYS)}", key=where)
    thresholds = {}
    for key in THRESHOLD_KEYS:
        if key in body:
            value = _number(body[key], source, None, f"{where}.{key}")
            if value < 0 or (metric in CANARY_RATE_METRICS and value > 1):
                limits = "[0, 1] (a fraction)" if metric in CANARY_RATE_METRICS else ">= 0"
                raise PolicyError(source, f"must be in {limits}, got {value}", key=f"{where}.{key}")
            thresholds[key] = value
    if thresholds.get("min", -math.inf) > thresholds.get("max", math.inf):
        raise PolicyError(source, "min is greater than max", key=f"{where}.min")
    return Trigger(metric, thresholds)


def _criterion(name: str, body: Any, source: str) -> Criterion:
    metric, _, category = name.partition(CATEGORY_SEP)
    metric, has_dimension, dimension = metric.partition(DIMENSION_SEP)
    if metric not in KNOWN_METRICS:
        raise PolicyError(source, f"unknown metric (known: {', '.join(KNOWN_METRICS)})", criterion=name)
    if (metric == JUDGE_SCORE) != bool(has_dimension and dimension.strip()):
        raise PolicyError(source, f"a judge score criterion names its rubric dimension: {JUDGE_SCORE}:DIMENSION "
                                  "(and only it has one)", criterion=name)
    if CATEGORY_SEP in name and (not category or metric in UNCATEGORISED_METRICS):
        raise PolicyError(source, "a per-category criterion is METRIC@CATEGORY (not for drift or the judge's "
                                  "results)", criterion=name)
    if not isinstance(body, dict):
        raise PolicyError(source, "must be a table of thresholds", criterion=name)
    for key in body:
        if key not in CRITERION_KEYS:
            raise PolicyError(source, f"unknown key (allowed: {', '.join(CRITERION_KEYS)})", criterion=name, key=key)
    if metric in NO_DELTA_METRICS and any(k in body for k in DELTA_KEYS):
        key = next(k for k in DELTA_KEYS if k in body)
        raise PolicyError(source, f"{metric} has no baseline-candidate delta: use min or max", criterion=name, key=key)
    thresholds = {k: _threshold(metric, body[k], source, name, k) for k in THRESHOLD_KEYS if k in body}
    if not thresholds:
        raise PolicyError(source, f"no threshold: set one of {', '.join(THRESHOLD_KEYS)}", criterion=name)
    if thresholds.get("min", -math.inf) > thresholds.get("max", math.inf):
        raise PolicyError(source, "min is greater than max", criterion=name, key="min")
    blocking = body.get("blocking", True)
    if not isinstance(blocking, bool):
        raise PolicyError(source, "must be true or false", criterion=name, key="blocking")
    return Criterion(name, metric, category or None, thresholds, blocking, dimension.strip() or None)


def _number(value: Any, source: str, criterion: str | None, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PolicyError(source, f"must be a finite number, got {value!r}", criterion=criterion, key=key)
    return float(value)


def _threshold(metric: str, value: Any, source: str, criterion: str, key: str) -> float:
    number = _number(value, source, criterion, key)
    if number < 0:
        raise PolicyError(source, f"must not be negative, got {number}", criterion=criterion, key=key)
    if metric in BOUNDED_METRICS and number > 1:
        raise PolicyError(source, f"{metric} is a fraction: use a value in [0, 1], got {number}",
                          criterion=criterion, key=key)
    if metric == JUDGE_SCORE and number > SCORE_MAX:
        raise PolicyError(source, f"judge scores are 1 to {SCORE_MAX}: got {number}", criterion=criterion, key=key)
    return number


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise PolicyError(name or "policy", "a policy name is 1 to 100 characters")
    return name


def create_policy(engine: Engine, name: str, data: bytes | str, source: str | None = None,
                  actor: str | None = None) -> PolicyVersion:
    """Lock a policy: same content as the latest version returns it; different content is version+1."""
    name = _check_name(name)
    spec = parse_policy(data, source or name)
    content, digest = spec.canonical_toml(), spec.content_hash()
    with session_scope(engine) as session:
        latest = _latest(session, name)
        if latest is not None and latest.content_hash == digest:
            return _version(latest, created=False)
        policy = Policy(name=name, version=(latest.version + 1) if latest else 1, content_hash=digest,
                        content_toml=content, source=source)
        session.add(policy)
        record_row_event(session, "policy_created", policy, actor, name=name, version=policy.version,
                         content_hash=digest)
        return _version(policy, created=True)


def _latest(session: Session, name: str) -> Policy | None:
    return session.exec(select(Policy).where(Policy.name == name).order_by(Policy.version.desc())).first()


def _version(policy: Policy, *, created: bool) -> PolicyVersion:
    return PolicyVersion(policy.id, policy.name, policy.version, policy.content_hash, policy.created_at, created)


def get_policy(session: Session, name: str, version: int | None = None) -> Policy:
    """A stored policy version (the latest when version is None)."""
    query = select(Policy).where(Policy.name == name)
    policy = (session.exec(query.where(Policy.version == version)).first() if version is not None
              else _latest(session, name))
    if policy is None:
        which = f"'{name}' version {version}" if version is not None else f"'{name}'"
        raise PolicyNotFound(f"no policy {which} (see `./review policy list`)")
    return policy


def stored_spec(policy: Policy) -> PolicySpec:
    return parse_policy(policy.content_toml, f"policy '{policy.name}' v{policy.version}")


def describe_policy(policy: Policy) -> dict[str, Any]:
    """What `policy show` and the Policy page display; `locked` says whether the content still hashes."""
    return {"name": policy.name, "version": policy.version, "content_hash": policy.content_hash,
            "locked_at": as_utc(policy.created_at).isoformat(), "source": policy.source,
            "locked": sha256_hex(policy.content_toml) == policy.content_hash, "toml": policy.content_toml}


def list_policies(engine: Engine, name: str | None = None) -> list[dict[str, Any]]:
    """Every stored version (of one name, when given), newest first within each name."""
    with Session(engine) as session:
        query = select(Policy).order_by(Policy.name, Policy.version.desc())
        rows = session.exec(query.where(Policy.name == name) if name else query).all()
        return [describe_policy(p) for p in rows]


def policy_names(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(Policy.name).distinct().order_by(Policy.name)).all())
