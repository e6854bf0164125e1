"""The verdict: a stored policy applied to a comparison's report.

Per threshold: **fail** when the interval lies wholly on the bad side of the bound, **pass** when wholly on
the good side (the bound itself counts as good), **inconclusive** otherwise. Delta thresholds
(`max_increase`, `max_decrease`) use the report's CI of the delta; level thresholds (`min`, `max`) use
the candidate's own interval (`candidate_ci`: Wilson for rates, the CI of the mean for similarity);
a metric the report gives no candidate interval (means, totals, the drifted share) is judged on the
candidate's value. The report is built at the policy's alpha, so every interval is at level 1 - alpha.
`drift` reads the comparison's latest stored drift analysis (`lib.drift.analysis.latest_drift`), which is attached
to the report as `report["drift"]` and so becomes part of the decision's evidence.

Overall: no-go if any blocking criterion fails, else inconclusive if any blocking criterion is
inconclusive, else go. Non-blocking results are reported and never change the overall verdict.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.governance.detectability import inconclusive_note
from lib.governance.entities import Policy
from lib.governance.outcomes import FAIL, GO, INCONCLUSIVE, NO_GO, PASS
from lib.governance.policy import COST_PER_1K, JUDGE_SCORE, Criterion, PolicySpec, get_policy, stored_spec
from lib.review.comparisons import get_comparison
from lib.review.report import build_report
from lib.review.stats import ALPHA as REPORT_DEFAULT_ALPHA
from lib.store.audit import as_utc, record_event
from lib.store.columns import from_json
from lib.store.engine import session_scope
from lib.store.entities import SOURCE_RECORDED, AuditEvent, Comparison, Output, Run

# threshold key -> (judged on the delta?, bad when above the bound?)
_RULES = {"max_increase": (True, True), "max_decrease": (True, False), "min": (False, False), "max": (False, True)}


@dataclass
class CriterionResult:
    criterion: str
    threshold: str  # max_increase | max_decrease | min | max
    margin: float  # as written in the policy
    blocking: bool
    result: str  # pass | fail | inconclusive
    reason: str
    observed: float | None = None  # the delta for delta thresholds, else the candidate's value
    ci: tuple[float, float] | None = None
    baseline: float | None = None
    candidate: float | None = None
    delta: float | None = None
    n: int | None = None


@dataclass
class Verdict:
    comparison: str
    policy_name: str
    policy_version: int
    policy_hash: str
    policy_locked_at: str
    alpha: float
    n: int
    verdict: str
    post_hoc: bool
    candidate_first_output_at: str | None
    criteria: list[CriterionResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ci_level"] = 1 - self.alpha
        return data


def _judge(lo: float, hi: float, bound: float, bad_above: bool) -> str:
    if bad_above:
        return FAIL if lo > bound else PASS if hi <= bound else INCONCLUSIVE
    return FAIL if hi < bound else PASS if lo >= bound else INCONCLUSIVE


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def _delta_interval(m: dict) -> tuple[tuple[float, float] | None, str]:
    lo, hi = m.get("ci_low"), m.get("ci_high")
    return ((lo, hi) if _finite(lo, hi) and _finite(m.get("delta")) else None), "CI of the delta"


def _level_interval(m: dict) -> tuple[tuple[float, float] | None, str]:
    """The candidate's own interval, and how it was obtained (for the reason text)."""
    given, value = m.get("candidate_ci"), m.get("candidate")
    if given and len(given) == 2 and _finite(*given):
        return (given[0], given[1]), "candidate's interval"
    if _finite(value):
        return (value, value), "no interval for this metric: judged on the candidate's value"
    return None, ""


# A pairwise judge rate -> its entry in report["judge"]["pairwise"].
_PAIRWISE = {"judge_win_rate": "win", "judge_loss_rate": "loss", "judge_position_consistency": "position_consistency"}


def _metric(report: dict, crit: Criterion) -> dict | None:
    if crit.metric == "drift":  # the latest stored drift analysis, attached by compute_verdict
        drift = report.get("drift")
        return {"candidate": drift.get("drifted_share")} if drift else None
    if crit.metric == COST_PER_1K:
        return _cost_metric(report.get("cost_projection"))
    if crit.metric == JUDGE_SCORE:
        return (((report.get("judge") or {}).get("dimensions")) or {}).get(crit.dimension)
    if crit.metric in _PAIRWISE:
        rate = (((report.get("judge") or {}).get("pairwise")) or {}).get(_PAIRWISE[crit.metric])
        if not rate or rate.get("rate") is None:
            return None
        return {"candidate": rate["rate"], "candidate_ci": [rate["ci_low"], rate["ci_high"]], "n": rate["n"]}
    if crit.category is None:
        return (report.get("metrics") or {}).get(crit.metric)
    return ((report.get("by_category") or {}).get(crit.category) or {}).get(crit.metric)


def _cost_metric(cost: dict | None) -> dict | None:
    """report["cost_projection"] as a metric block: USD per 1,000 requests, the delta's bootstrap CI."""
    if not cost or cost.get("delta_per_1k") is None:
        return None
    return {"baseline": cost["baseline_per_1k"], "candidate": cost["candidate_per_1k"],
            "delta": cost["delta_per_1k"], "ci_low": cost["ci_low"], "ci_high": cost["ci_high"], "n": cost.get("n")}


def _missing_reason(crit: Criterion, report: dict) -> str:
    if crit.metric == COST_PER_1K:
        return "no cost per 1,000 requests: a side's price is unknown or no case has token counts"
    if crit.metric == "drift":
        return "no drift result for this comparison (drift analysis has not been run)"
    judge = report.get("judge")
    if crit.metric in _PAIRWISE or crit.metric == JUDGE_SCORE:
        if not judge:
            return "no judge results for this comparison (run `./review judge`)"
        if crit.metric in _PAIRWISE:
            return "no pairwise judgement decided both orders (run the judge with --pairwise)"
        dims = ", ".join(judge.get("config", {}).get("rubric") or []) or "none"
        return f"the judge scored no pair on '{crit.dimension}' (the rubric's dimensions: {dims})"
    where = f" in category '{crit.category}'" if crit.category else ""
    return f"no applicable cases for {crit.metric}{where}"


def judge_threshold(crit: Criterion, key: str, m: dict | None, report: dict | None = None) -> CriterionResult:
    margin = crit.thresholds[key]
    base = CriterionResult(crit.name, key, margin, crit.blocking, INCONCLUSIVE, "")
    if not m:
        base.reason = _missing_reason(crit, report or {})
        return base
    on_delta, bad_above = _RULES[key]
    base.baseline, base.candidate, base.delta = m.get("baseline"), m.get("candidate"), m.get("delta")
    base.n = m.get("n")
    interval, how = _delta_interval(m) if on_delta else _level_interval(m)
    base.observed = base.delta if on_delta else base.candidate
    bound = -margin if key == "max_decrease" else margin
    if interval is None:
        base.reason = "no interval (too few cases)"
        return base
    base.ci = (float(interval[0]), float(interval[1]))
    base.result = _judge(base.ci[0], base.ci[1], bound, bad_above)
    side = {PASS: "wholly on the good side of", FAIL: "wholly on the bad side of",
            INCONCLUSIVE: "straddles"}[base.result]
    base.reason = f"{how} [{base.ci[0]:.4g}, {base.ci[1]:.4g}] {side} {bound:.4g}"
    if base.result == INCONCLUSIVE:  # say whether this margin could pass at all on this n
        alpha = (report or {}).get("alpha", REPORT_DEFAULT_ALPHA)
        note = inconclusive_note(crit, key, base.n, base.baseline if _finite(base.baseline) else None, alpha)
        base.reason += f". {note}" if note else ""
    return base


def evaluate(spec: PolicySpec, report: dict) -> list[CriterionResult]:
    """Every threshold of every criterion against a report built at the policy's alpha (policy order)."""
    if report.get("alpha", REPORT_DEFAULT_ALPHA) != spec.alpha:
        raise ValueError(f"the report's intervals are at alpha {report.get('alpha')}, the policy's at {spec.alpha}")
    return [judge_threshold(c, key, _metric(report, c), report) for c in spec.criteria for key in c.thresholds]


def overall(results: list[CriterionResult]) -> str:
    blocking = [r.result for r in results if r.blocking]
    return NO_GO if FAIL in blocking else INCONCLUSIVE if INCONCLUSIVE in blocking else GO


def _notes(spec: PolicySpec, results: list[CriterionResult], report: dict) -> list[str]:
    notes = [f"non-blocking criterion {r.criterion} ({r.threshold}) fails" for r in results
             if not r.blocking and r.result == FAIL]
    drift = (report.get("judge") or {}).get("drift") or {}
    if drift.get("flagged") and any(c.metric in _PAIRWISE or c.metric == JUDGE_SCORE for c in spec.criteria):
        notes.append("the judge's own scores on its anchor set moved (judge drift): judge criteria may "
                     f"reflect a changed judge, not the candidate. {drift.get('message') or ''}".strip())
    return notes


def candidate_started_at(session: Session, comp: Comparison) -> datetime | None:
    """When the candidate's evidence first existed: its first output, or the load time when recorded."""
    run = session.get(Run, comp.candidate_run_id)
    if run.source == SOURCE_RECORDED:
        return as_utc(run.created_at)
    first = session.exec(select(func.min(Output.created_at)).where(Output.run_id == run.id)).one()
    return as_utc(first) if first else None


def build_verdict(comp_name: str, policy: Policy, report: dict, started: datetime | None) -> Verdict:
    spec = stored_spec(policy)
    results = evaluate(spec, report)
    locked_at = as_utc(policy.created_at)
    return Verdict(comparison=comp_name, policy_name=policy.name, policy_version=policy.version,
                   policy_hash=policy.content_hash, policy_locked_at=locked_at.isoformat(), alpha=spec.alpha,
                   n=int(report.get("n_pairs") or 0), verdict=overall(results),
                   post_hoc=started is not None and locked_at > started,
                   candidate_first_output_at=started.isoformat() if started else None,
                   criteria=results, notes=_notes(spec, results, report))


def compute_verdict(engine: Engine, comparison: str, policy_name: str,
                    version: int | None = None) -> tuple[Verdict, dict]:
    """The verdict of a stored policy version (latest when None) on a comparison, and the report used."""
    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        policy = get_policy(session, policy_name, version)
        started = candidate_started_at(session, comp)
    # The comparison's stored reviewer settings apply (build_report merges them), at the policy's alpha.
    report = build_report(engine, comp.name, alpha=stored_spec(policy).alpha)
    report["drift"] = _latest_drift(engine, comp.name)
    return build_verdict(comp.name, policy, report, started), report


def _latest_drift(engine: Engine, comparison: str) -> dict | None:
    from lib.drift.analysis import latest_drift  # imported late: lib.drift.analysis loads evidently (seconds)

    return latest_drift(engine, comparison)


def record_verdict(engine: Engine, verdict: Verdict, actor: str | None = None) -> None:
    with session_scope(engine) as session:
        record_event(session, "verdict_computed", verdict.to_dict(), actor)


def last_gated_policy(engine: Engine, comparison: str) -> tuple[str, int] | None:
    """(policy name, version) of the latest verdict recorded for a comparison, if any."""
    with Session(engine) as session:
        events = session.exec(select(AuditEvent).where(AuditEvent.kind == "verdict_computed")
                              .order_by(AuditEvent.seq.desc())).all()
    for event in events:
        payload = from_json(event.payload_json)
        if payload.get("comparison") == comparison:
            return payload["policy_name"], payload["policy_version"]
    return None
