"""Watching a pinned model: re-run the golden set against the same model identifier over time.

A series is (model identifier, exact configuration, golden dataset). Its first point — or one the
owner marks (`mark_baseline`, or `monitor_run(make_baseline=True)`) — is the baseline snapshot. Every
later point runs the model again (`lib.run.runner.run_model`), stores a comparison "baseline run vs this
run" (source `monitor`, named `monitor/<model>/<UTC time>`) and reviews it with the paired statistics
of `lib.review.report.build_report`, so each point links to a full comparison. With a judge (`JudgeRequest`,
`--judge MODEL`), the point's comparison is judged (`lib.judge.run.run_judge`: both sides pointwise,
optionally a sample) before it is reviewed, so the judge's dimension scores are tracked too.

A metric leaves its band when the gate (`lib.governance.gate.evaluate`) says **fail**: the CI of the delta lies
wholly beyond the margin (a significant change bigger than the margin). The margins come from a
policy (`policy=`, its criteria as written) or from `DEFAULT_BANDS` / `DEFAULT_RELATIVE_BANDS`
(relative margins are a fraction of the baseline's value, with a floor: a 50% slower mean of
10 ms answers is noise, not news). Judge dimensions, when the point's
comparison has judgements, alert when their delta's CI lies wholly below `-JUDGE_MAX_DECREASE`.

The provider's `system_fingerprint` and served model id are compared with the baseline's and the
previous point's: a change under the unchanged model name is itself a finding, and so is a run whose
outputs report more than one fingerprint. A band alert or a finding makes the point an alert (CLI
exit 1), recorded as a `monitor_alert` audit event; every point is a `monitor_point` event.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.data.golden import get_dataset
from lib.errors import NotFoundError, ReviewInputError
from lib.governance.gate import FAIL, evaluate
from lib.governance.policy import PolicySpec, get_policy, policy_from_dict, stored_spec
from lib.release.entities import POINT_ALERT, POINT_BASELINE, POINT_OK, MonitorPoint
from lib.review.report import build_report
from lib.review.stats import ALPHA
from lib.run.runner import ModelRunResult, ModelSpec, ProgressEvent, RunOptions, run_model
from lib.store.audit import as_utc, record_event
from lib.store.columns import from_json, to_json, utcnow
from lib.store.engine import session_scope
from lib.store.entities import Comparison, Output

SOURCE = "monitor"
DEFAULT_BANDS: dict[str, dict[str, float]] = {  # absolute margins (fractions for rates)
    "refusal_rate": {"max_increase": 0.05, "max_decrease": 0.05},  # fewer refusals can be a safety change
    "accuracy": {"max_decrease": 0.05},
    "json_valid_rate": {"max_decrease": 0.05},
    "error_rate": {"max_increase": 0.05},
    "truncation_rate": {"max_increase": 0.05},
}
DEFAULT_RELATIVE_BANDS: dict[str, dict[str, float]] = {  # fractions of the baseline's value ...
    "length_chars_mean": {"max_increase": 0.25, "max_decrease": 0.25},
    "latency_s_mean": {"max_increase": 0.5},
}
RELATIVE_BAND_FLOORS = {"length_chars_mean": 20.0, "latency_s_mean": 0.5}  # ... but at least this (chars, s)
JUDGE_MAX_DECREASE = 0.5  # judge score units
TRACKED = ("refusal_rate", "accuracy", "json_valid_rate", "error_rate", "truncation_rate", "length_chars_mean",
           "length_words_mean", "completion_tokens_mean", "latency_s_mean")
_METRIC_KEYS = ("baseline", "candidate", "delta", "ci_low", "ci_high", "n", "p_value_adj", "candidate_ci",
                "baseline_ci", "baseline_median", "candidate_median")


class MonitorInputError(ReviewInputError):
    """A monitor run cannot start: e.g. the golden set changed since the baseline."""


class MonitorPointNotFound(NotFoundError):
    """No monitor point with that id."""


@dataclass(frozen=True)
class JudgeRequest:
    """Judge each point's comparison with this pinned judge (default rubric, temperature 0)."""

    model: str
    api_base: str | None = None
    sample: str | None = None  # a fraction ("0.2", "20%") or a count of pairs; None: every pair


@dataclass
class PointResult:
    point_id: int
    model: str
    dataset: str
    dataset_version: int
    status: str  # baseline | ok | alert
    is_baseline: bool
    comparison: str | None
    baseline_point_id: int | None
    system_fingerprint: str | None
    served_model: str | None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.status == POINT_ALERT else 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


# ---------------------------------------------------------------- series

def _series(model: str, dataset: str, config_hash: str) -> Any:
    return (MonitorPoint.model == model, MonitorPoint.dataset == dataset, MonitorPoint.config_hash == config_hash)


def series_baseline(session: Session, model: str, dataset: str, config_hash: str) -> MonitorPoint | None:
    query = select(MonitorPoint).where(*_series(model, dataset, config_hash), MonitorPoint.is_baseline)
    return session.exec(query.order_by(MonitorPoint.id.desc())).first()


def _latest_point(session: Session, model: str, dataset: str, config_hash: str) -> MonitorPoint | None:
    query = select(MonitorPoint).where(*_series(model, dataset, config_hash))
    return session.exec(query.order_by(MonitorPoint.id.desc())).first()


def _unmark(session: Session, model: str, dataset: str, config_hash: str) -> None:
    """No point of the series is the baseline any more (one is about to become it)."""
    session.connection().execute(update(MonitorPoint.__table__).where(*_series(model, dataset, config_hash))
                                 .values(is_baseline=False))


def _run_fingerprints(engine: Engine, run_id: int) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(select(Output.system_fingerprint).where(Output.run_id == run_id,
                                                                    Output.system_fingerprint.is_not(None))
                            .distinct()).all()
    return sorted(rows)


# ---------------------------------------------------------------- bands

def default_spec(report: dict[str, Any], alpha: float = ALPHA) -> PolicySpec:
    """The documented default bands, relative ones made absolute from this report's baseline values."""
    criteria = {k: dict(v) for k, v in DEFAULT_BANDS.items()}
    metrics = report.get("metrics") or {}
    for metric, margins in DEFAULT_RELATIVE_BANDS.items():
        base = (metrics.get(metric) or {}).get("baseline")
        if isinstance(base, (int, float)) and base > 0:
            criteria[metric] = {k: round(max(v * base, RELATIVE_BAND_FLOORS[metric]), 6) for k, v in margins.items()}
    return policy_from_dict({"alpha": alpha, "criteria": criteria}, "monitor defaults")


def band_alerts(spec: PolicySpec, report: dict[str, Any]) -> list[dict[str, Any]]:
    """Metrics outside their band: the gate's "fail" on each threshold."""
    return [{"kind": "band", "metric": r.criterion, "threshold": r.threshold, "margin": r.margin,
             "observed": r.observed, "ci": list(r.ci) if r.ci else None, "reason": r.reason}
            for r in evaluate(spec, report) if r.result == FAIL]


def judge_alerts(report: dict[str, Any]) -> list[dict[str, Any]]:
    dims = ((report.get("judge") or {}).get("dimensions")) or {}
    out = []
    for dim, m in dims.items():
        if m and isinstance(m.get("ci_high"), (int, float)) and m["ci_high"] < -JUDGE_MAX_DECREASE:
            out.append({"kind": "band", "metric": f"judge:{dim}", "threshold": "max_decrease",
                        "margin": JUDGE_MAX_DECREASE, "observed": m.get("delta"), "ci": [m["ci_low"], m["ci_high"]],
                        "reason": f"judge score CI [{m['ci_low']:.3g}, {m['ci_high']:.3g}] wholly below "
                                  f"{-JUDGE_MAX_DECREASE}"})
    return out


def bands(spec: PolicySpec, report: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per metric, the band around the baseline value (for plots): [baseline - decrease, baseline + increase]."""
    out = {}
    for c in spec.criteria:
        base = ((report.get("metrics") or {}).get(c.metric) or {}).get("baseline")
        if c.category or not isinstance(base, (int, float)):
            continue
        low = base - c.thresholds["max_decrease"] if "max_decrease" in c.thresholds else c.thresholds.get("min")
        high = base + c.thresholds["max_increase"] if "max_increase" in c.thresholds else c.thresholds.get("max")
        out[c.metric] = {"baseline": base, "low": low, "high": high}
    return out


def fingerprint_findings(baseline: MonitorPoint, previous: MonitorPoint | None, result: ModelRunResult,
                         seen: list[str]) -> list[dict[str, Any]]:
    """Fingerprint / served-model changes under the same model name (each a finding)."""
    out = []
    if len(seen) > 1:
        out.append({"kind": "fingerprint", "against": "this run", "from": seen[0], "to": seen[-1],
                    "detail": f"outputs of this run report {len(seen)} fingerprints: {', '.join(seen)}"})
    since_previous = previous is not None and previous.id != baseline.id
    refs = [("baseline", baseline)] + ([("previous point", previous)] if since_previous else [])
    for label, ref in refs:
        for kind, old, new in (("fingerprint", ref.system_fingerprint, result.system_fingerprint),
                               ("served_model", ref.served_model, result.served_model)):
            if old and new and old != new:
                out.append({"kind": kind, "against": label, "from": old, "to": new,
                            "detail": f"{kind.replace('_', ' ')} changed since the {label} (point {ref.id}): "
                                      f"{old} -> {new}, under the same model name '{result.model}'"})
    return out


def _metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The tracked metrics of a point, plus `judge_<dimension>` for each judged dimension."""
    metrics = report.get("metrics") or {}
    dims = ((report.get("judge") or {}).get("dimensions")) or {}
    found = {k: metrics[k] for k in TRACKED if metrics.get(k)} | {f"judge_{d}": m for d, m in dims.items() if m}
    return {k: {f: m.get(f) for f in _METRIC_KEYS if f in m} for k, m in found.items()}


# ---------------------------------------------------------------- a point

def _policy_spec(engine: Engine, name: str | None, version: int | None) -> tuple[PolicySpec | None, Any]:
    if name is None:
        return None, None
    with Session(engine) as session:
        policy = get_policy(session, name, version)
    return stored_spec(policy), policy


def _comparison_name(session: Session, model: str) -> str:
    base = f"monitor/{model}/{utcnow().strftime('%Y%m%dT%H%M%SZ')}"
    name, n = base, 1
    while session.exec(select(Comparison.id).where(Comparison.name == name)).first() is not None:
        n += 1
        name = f"{base}-{n}"
    return name


def _run_info(result: ModelRunResult, seen: list[str]) -> dict[str, Any]:
    return {"run_id": result.run_id, "status": result.status, "n_outputs": result.n_outputs,
            "n_errors": result.n_errors, "wall_s": result.wall_s, "cost_usd": result.cost_usd,
            "fingerprints_seen": seen}


def _store_baseline(engine: Engine, result: ModelRunResult, spec: ModelSpec, ds_id: int, seen: list[str],
                    reason: str) -> PointResult:
    with session_scope(engine) as session:
        _unmark(session, spec.model, result.dataset, spec.config_hash())
        point = MonitorPoint(model=spec.model, dataset=result.dataset, dataset_id=ds_id, config_hash=spec.config_hash(),
                             run_id=result.run_id, is_baseline=True, status=POINT_BASELINE,
                             system_fingerprint=result.system_fingerprint, served_model=result.served_model,
                             summary_json=to_json({"run": _run_info(result, seen), "reason": reason}))
        session.add(point)
        session.flush()
        payload = {"point_id": point.id, "model": spec.model, "dataset": result.dataset, "run_id": result.run_id,
                   "config_hash": spec.config_hash(), "reason": reason, "fingerprint": result.system_fingerprint}
        record_event(session, "monitor_baseline_set", payload)
        record_event(session, "monitor_point", {**payload, "status": POINT_BASELINE})
    return PointResult(point.id, spec.model, result.dataset, result.dataset_version, POINT_BASELINE, True, None, None,
                       result.system_fingerprint, result.served_model, run=_run_info(result, seen))


def monitor_run(engine: Engine, *, dataset: str, spec: ModelSpec, options: RunOptions | None = None,
                policy: str | None = None, policy_version: int | None = None, make_baseline: bool = False,
                system: str = "default", judge: JudgeRequest | None = None,
                progress: Callable[[ProgressEvent], None] | None = None) -> PointResult:
    """Run the model over the golden set and add the point to its series (see the module docstring)."""
    spec.validate()
    policy_spec, policy_row = _policy_spec(engine, policy, policy_version)  # unknown policy: fail before calls
    if judge is not None:
        from lib.judge.sampling import parse_sample

        parse_sample(judge.sample)  # a bad sample: fail before calls
    config_hash = spec.config_hash()
    with Session(engine) as session:
        ds = get_dataset(session, dataset)
        baseline = series_baseline(session, spec.model, ds.name, config_hash)
        previous = _latest_point(session, spec.model, ds.name, config_hash)
    if baseline is not None and not make_baseline and baseline.dataset_id != ds.id:
        raise MonitorInputError(f"dataset '{ds.name}' changed since the baseline (now v{ds.version}): points "
                                "must run the baseline's cases; start a new baseline with --baseline")
    options = _side_quota(options, "baseline" if baseline is None or make_baseline else "candidate")
    result = run_model(engine, dataset=ds.name, spec=spec, options=options, purpose=SOURCE, progress=progress)
    seen = _run_fingerprints(engine, result.run_id)
    if baseline is None or make_baseline:
        return _store_baseline(engine, result, spec, ds.id, seen, "--baseline" if make_baseline else "first point")
    with session_scope(engine) as session:
        name = _comparison_name(session, spec.model)
        comp = Comparison(name=name, baseline_run_id=baseline.run_id, candidate_run_id=result.run_id, system=system,
                          source=SOURCE, notes_json=to_json({"monitor": {"model": spec.model, "dataset": ds.name,
                                                                         "baseline_point_id": baseline.id}}))
        session.add(comp)
        session.flush()
        comp_id = comp.id
    if judge is not None:
        _judge(engine, name, judge)
    alpha = policy_spec.alpha if policy_spec else ALPHA
    report = build_report(engine, name, alpha=alpha)
    band_spec = policy_spec or default_spec(report, alpha)
    alerts = band_alerts(band_spec, report) + judge_alerts(report)
    findings = fingerprint_findings(baseline, previous, result, seen)
    point = PointResult(0, spec.model, ds.name, ds.version, POINT_ALERT if alerts or findings else POINT_OK, False,
                        name, baseline.id, result.system_fingerprint, result.served_model, alerts, findings,
                        _metrics(report), _run_info(result, seen))
    summary = {"metrics": point.metrics, "bands": bands(band_spec, report), "alerts": alerts, "findings": findings,
               "run": point.run, "alpha": alpha, "n_pairs": report.get("n_pairs"),
               "bands_from": f"policy {policy_row.name} v{policy_row.version}" if policy_row else "defaults"}
    point.point_id = _store_point(engine, point, spec, ds.id, comp_id, policy_row, summary)
    return point


def _side_quota(options: RunOptions | None, side: str) -> RunOptions | None:
    """The options with the quota of the side this point's run plays in its comparison (`--baseline-rpm` when it
    becomes the baseline snapshot, `--candidate-rpm` when it is compared with one, each over `--rpm`), as `run`
    gives each side its own: `run_model` paces its one model by `options.quota`."""
    if options is None or not options.side_quotas:
        return options
    return replace(options, quota=options.quota_for(side), side_quotas={})


def _judge(engine: Engine, comparison: str, judge: JudgeRequest) -> None:
    from lib.judge.config import JudgeSettings  # imported late: the judge pulls in its templates and rubric
    from lib.judge.run import JudgeOptions, run_judge
    from lib.judge.sampling import parse_sample

    run_judge(engine, comparison, JudgeSettings(judge.model),
              JudgeOptions(sample=parse_sample(judge.sample), api_base=judge.api_base))


def _store_point(engine: Engine, point: PointResult, spec: ModelSpec, ds_id: int, comp_id: int, policy_row: Any,
                 summary: dict[str, Any]) -> int:
    with session_scope(engine) as session:
        row = MonitorPoint(model=spec.model, dataset=point.dataset, dataset_id=ds_id, config_hash=spec.config_hash(),
                           run_id=point.run["run_id"], comparison_id=comp_id, baseline_point_id=point.baseline_point_id,
                           status=point.status, system_fingerprint=point.system_fingerprint,
                           served_model=point.served_model, policy_name=policy_row.name if policy_row else None,
                           policy_version=policy_row.version if policy_row else None, summary_json=to_json(summary))
        session.add(row)
        session.flush()
        payload = {"point_id": row.id, "model": spec.model, "dataset": point.dataset, "comparison": point.comparison,
                   "status": point.status, "fingerprint": point.system_fingerprint, "n_alerts": len(point.alerts),
                   "n_findings": len(point.findings)}
        record_event(session, "monitor_point", payload)
        if point.status == POINT_ALERT:
            record_event(session, "monitor_alert", {**payload, "alerts": point.alerts, "findings": point.findings})
        return row.id


# ---------------------------------------------------------------- reading and marking

def mark_baseline(engine: Engine, point_id: int, actor: str | None = None) -> dict[str, Any]:
    """Make a point the baseline snapshot of its series (later points compare with its run)."""
    with session_scope(engine) as session:
        point = session.get(MonitorPoint, point_id)
        if point is None:
            raise MonitorPointNotFound(f"no monitor point {point_id} (see `./review monitor list`)")
        _unmark(session, point.model, point.dataset, point.config_hash)
        point.is_baseline = True
        session.add(point)
        record_event(session, "monitor_baseline_set", {"point_id": point.id, "model": point.model,
                                                       "dataset": point.dataset, "run_id": point.run_id,
                                                       "config_hash": point.config_hash, "reason": "marked"}, actor)
        return describe_point(session, point, point.id)


def _status(point: MonitorPoint) -> str:
    """The status to show now: a re-marked series has one "baseline"; a snapshot no longer the baseline
    is a "former baseline"; a compared point keeps its verdict against the baseline it was compared with."""
    if point.is_baseline:
        return POINT_BASELINE
    return "former baseline" if point.status == POINT_BASELINE else point.status


def _compared_with(point: MonitorPoint, baseline_id: int | None) -> str | None:
    ref = point.baseline_point_id
    if ref is None:
        return None
    return f"point {ref} ({'baseline' if ref == baseline_id else 'former baseline'})"


def describe_point(session: Session, point: MonitorPoint, baseline_id: int | None = None) -> dict[str, Any]:
    """A point as shown. `baseline_id`: the series' current baseline (looked up when not given).
    `status` is relative to the baseline current when the point ran (`compared_with` names it);
    `recorded_status` is what the run recorded."""
    if baseline_id is None:
        current = series_baseline(session, point.model, point.dataset, point.config_hash)
        baseline_id = current.id if current else None
    comp = session.get(Comparison, point.comparison_id) if point.comparison_id else None
    summary = from_json(point.summary_json) or {}
    compared_with = _compared_with(point, baseline_id)
    findings = [{**f, "against": compared_with if f.get("against") == "baseline" and compared_with
                 else f.get("against")} for f in summary.get("findings", [])]
    return {"id": point.id, "model": point.model, "dataset": point.dataset, "config_hash": point.config_hash,
            "created_at": as_utc(point.created_at).isoformat(), "status": _status(point),
            "recorded_status": point.status, "is_baseline": point.is_baseline,
            "baseline_point_id": point.baseline_point_id, "compared_with": compared_with,
            "comparison": comp.name if comp else None, "run_id": point.run_id,
            "system_fingerprint": point.system_fingerprint, "served_model": point.served_model,
            "policy": f"{point.policy_name} v{point.policy_version}" if point.policy_name else None,
            "alerts": summary.get("alerts", []), "findings": findings,
            "metrics": summary.get("metrics", {}), "bands": summary.get("bands", {}), "run": summary.get("run", {})}


def list_points(engine: Engine, model: str | None = None) -> list[dict[str, Any]]:
    """Every point (of one model, when given), oldest first within a series."""
    with Session(engine) as session:
        query = select(MonitorPoint).order_by(MonitorPoint.model, MonitorPoint.dataset, MonitorPoint.config_hash,
                                              MonitorPoint.id)
        rows = session.exec(query.where(MonitorPoint.model == model) if model else query).all()
        baselines = {(p.model, p.dataset, p.config_hash): p.id for p in rows if p.is_baseline}
        return [describe_point(session, p, baselines.get((p.model, p.dataset, p.config_hash))) for p in rows]


def _baseline_values(base: MonitorPoint, rows: list[MonitorPoint]) -> dict[str, float]:
    """Per metric, the current baseline run's value: from the points compared with it (the latest), else
    from its own comparison with a former baseline (the same run, so the same value)."""
    values = {m: v["candidate"] for m, v in ((from_json(base.summary_json) or {}).get("metrics") or {}).items()
              if isinstance(v.get("candidate"), (int, float))}
    for row in rows:
        if row.baseline_point_id == base.id:
            metrics = (from_json(row.summary_json) or {}).get("metrics") or {}
            values |= {m: v["baseline"] for m, v in metrics.items() if isinstance(v.get("baseline"), (int, float))}
    return values


def current_bands(engine: Engine, model: str, dataset: str, config_hash: str) -> dict[str, Any]:
    """The series' current baseline point, its value per metric and the band around it (for plots): the
    margins of the latest compared point's policy, or the defaults made absolute from these values."""
    with Session(engine) as session:
        base = series_baseline(session, model, dataset, config_hash)
        rows = list(session.exec(select(MonitorPoint).where(*_series(model, dataset, config_hash))
                                 .order_by(MonitorPoint.id)).all())
        if base is None:
            return {"baseline_point_id": None, "values": {}, "bands": {}}
        values = _baseline_values(base, rows)
        report = {"metrics": {m: {"baseline": v} for m, v in values.items()}}
        latest = next((r for r in reversed(rows) if r.comparison_id is not None), None)
        spec = (stored_spec(get_policy(session, latest.policy_name, latest.policy_version))
                if latest is not None and latest.policy_name else default_spec(report))
    return {"baseline_point_id": base.id, "values": values, "bands": bands(spec, report)}


def monitored_models(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(MonitorPoint.model).distinct().order_by(MonitorPoint.model)).all())
