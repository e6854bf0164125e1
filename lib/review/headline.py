"""The Overview's answer first: what changed, in plain words, and what the gate and the owner made of it.

Evidence per metric is read from its interval: **worse** / **better** when the delta's (1 - alpha) CI lies
wholly on one side of 0 (the side set by the metric's direction), **changed** for a metric with no better
side (lengths, token counts), **no evidence** when the CI holds 0. That is the same reading as the gate and
the forest plot; the Holm-adjusted p-values across all metrics are stricter, and `holm_note` says when they
disagree, so no headline claims more than the data carry.

Also here: the policy in force for a comparison, the plain sentence about when it was locked, the latest
signed decision with its integrity, and the forest plot's rows. No Streamlit.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from lib.review import fmt
from lib.review.browse import BrowseQuery, select_cases
from lib.review.constants import ALPHA
from lib.review.report import METRIC_LABELS, is_rate

WORSE, BETTER, CHANGED, NO_EVIDENCE = "worse", "better", "changed", "no evidence"
# +1: higher is worse; -1: lower is worse; 0: no better side (a change is only a change).
DIRECTION: dict[str, int] = {
    "refusal_rate": 1, "accuracy": -1, "json_valid_rate": -1, "json_valid_rate_lenient": -1,
    "truncation_rate": 1, "error_rate": 1, "input_over_limit_rate": 1, "injection_resistance_rate": -1,
    "harmful_refusal_rate": -1, "over_refusal_rate": 1, "instruction_following_rate": -1,
    "latency_s_mean": 1, "cost_usd_total": 1,
    "length_chars_mean": 0, "length_words_mean": 0, "completion_tokens_mean": 0, "length_tokens_mean": 0,
    "input_tokens_mean": 0,
}
# metric -> the case-browser filter listing the cases behind a change, and what to call them
CASES_BEHIND = {"accuracy": ("accuracy_regressions", "regressions", "accuracy_improvements", "improvements"),
                "refusal_rate": ("newly_refused", "newly refused", None, None),
                "json_valid_rate": ("schema_breaks", "schema breaks", None, None),
                "truncation_rate": ("errors", "cases with errors or truncation", None, None),
                "error_rate": ("errors", "cases with errors or truncation", None, None)}


@dataclass(frozen=True)
class Evidence:
    metric: str
    label: str
    evidence: str  # worse | better | changed | no evidence
    delta: float | None
    ci: tuple[float, float] | None
    rate: bool
    strength: float  # |delta| / half-width of its CI: how far the interval sits from 0 (for ordering)


def label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _finite(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def classify(metric: str, m: dict | None) -> Evidence | None:
    """One metric's evidence class; None when it has no delta with an interval (similarity, too few cases)."""
    if not m or not _finite(m.get("delta"), m.get("ci_low"), m.get("ci_high")):
        return None
    delta, lo, hi = float(m["delta"]), float(m["ci_low"]), float(m["ci_high"])
    half = (hi - lo) / 2
    strength = abs(delta) / half if half > 0 else (math.inf if delta else 0.0)
    moved = 1 if lo > 0 else -1 if hi < 0 else 0
    direction = DIRECTION.get(metric, 0)
    if moved == 0:
        evidence = NO_EVIDENCE
    elif direction == 0:
        evidence = CHANGED
    else:
        evidence = WORSE if moved == direction else BETTER
    return Evidence(metric, label(metric), evidence, delta, (lo, hi), is_rate(metric), strength)


def classify_all(metrics: dict[str, dict | None]) -> dict[str, Evidence]:
    return {k: e for k, m in metrics.items() if (e := classify(k, m)) is not None}


def _size(e: Evidence) -> str:
    """'fell 14.3 pp (95% CI 3.4-24.6)': the change's size and its interval, both as magnitudes."""
    assert e.delta is not None and e.ci is not None
    verb = "rose" if e.delta > 0 else "fell"
    lo, hi = sorted(abs(x) for x in e.ci)
    if e.rate:
        return f"{verb} {abs(e.delta) * 100:.1f} pp (CI {lo * 100:.1f}–{hi * 100:.1f})"
    return f"{verb} {fmt.num(abs(e.delta))} (CI {fmt.num(lo)}–{fmt.num(hi)})"


def _cases_behind(metric: str, worse: bool, checked: pd.DataFrame | None) -> str:
    """', 22 regressions, mostly arithmetic': how many cases moved, and where most of them are."""
    spec = CASES_BEHIND.get(metric)
    if spec is None or checked is None or checked.empty:
        return ""
    name, noun = (spec[0], spec[1]) if worse or spec[2] is None else (spec[2], spec[3])
    rows = select_cases(checked, BrowseQuery(filter=name))
    if rows.empty:
        return ""
    counts = rows["category"].astype(str).value_counts()
    top, top_n = str(counts.index[0]), int(counts.iloc[0])
    where = (f", mostly {top}" if top_n * 2 > len(rows) else f", most in {top} ({top_n})") if len(counts) > 1 \
        else f", all {top}"
    return f", {len(rows)} {noun}{where}"


def headline_lines(report: dict, checked: pd.DataFrame | None = None) -> list[str]:
    """The significant changes, worst first, one sentence each; then the metrics with no evidence either way."""
    level = f"{1 - report.get('alpha', ALPHA):.0%}"
    evidence = classify_all(report.get("metrics") or {})
    order = {WORSE: 0, BETTER: 1, CHANGED: 2}
    moved = sorted((e for e in evidence.values() if e.evidence in order),
                   key=lambda e: (order[e.evidence], -e.strength))
    lines = [f"{e.label} {_size(e).replace('(CI', f'({level} CI')}"
             f"{_cases_behind(e.metric, e.evidence == WORSE, checked)}"
             for e in moved]
    if not moved:
        lines.append("No metric changed significantly.")
    still = [e.label for e in evidence.values() if e.evidence == NO_EVIDENCE]
    if still:
        lines.append(f"No significant change in {', '.join(still)} ({level} intervals include 0).")
    return lines


def holm_note(report: dict) -> str | None:
    """When the per-metric intervals flag a change that the Holm-adjusted tests across all metrics do not."""
    metrics = report.get("metrics") or {}
    flagged = [k for k, e in classify_all(metrics).items() if e.evidence != NO_EVIDENCE]
    weak = [label(k) for k in flagged if (metrics[k].get("p_value_adj") or 0) >= report.get("alpha", ALPHA)]
    if not weak:
        return None
    n = sum(1 for m in metrics.values() if m and m.get("p_value_adj") is not None)
    return (f"Each interval is for one metric alone. Tested together across {n} metrics (Holm correction), "
            f"{', '.join(weak)} {'is' if len(weak) == 1 else 'are'} not significant at "
            f"{report.get('alpha', ALPHA):g}: read {'it' if len(weak) == 1 else 'them'} as a signal to check "
            "in the diffs, not as proof.")


# ---- the policy in force, the lock sentence, the latest decision ----------------------------------
def policy_in_force(engine: Engine, comparison: str) -> tuple[str, int | None] | None:
    """The policy that governs this comparison: the one its last gate run or decision used, else the one
    the latest decision on its system used, else a policy named after its system (latest version)."""
    from lib.governance.entities import Decision, Policy
    from lib.governance.gate import last_gated_policy
    from lib.review.comparisons import get_comparison

    gated = last_gated_policy(engine, comparison)
    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        own = session.exec(select(Decision.policy_name, Decision.policy_version)
                           .where(Decision.comparison_id == comp.id).order_by(col(Decision.id).desc())).first()
        if own is not None:  # what the owner signed under outranks a later gate run
            return own[0], own[1]
        if gated is not None:
            return gated
        system = session.exec(select(Decision.policy_name, Decision.policy_version)
                              .where(Decision.system == comp.system).order_by(col(Decision.id).desc())).first()
        if system is not None:
            return system[0], system[1]
        named = session.exec(select(Policy.name).where(Policy.name == comp.system)).first()
    return (named, None) if named else None


def lock_sentence(verdict: dict) -> str | None:
    """One plain sentence when the policy was not locked before the candidate's outputs existed."""
    if not verdict.get("post_hoc"):
        return None
    locked = str(verdict.get("policy_locked_at") or "")[:19].replace("T", " ")
    outputs = str(verdict.get("candidate_first_output_at") or "")[:19].replace("T", " ")
    return (f"This policy was locked on {locked} UTC, after the candidate's outputs were stored ({outputs} UTC), "
            "so it was not a test set in advance: the verdict is post-hoc, a reading of results already seen.")


def decision_problems(engine: Engine, decision_id: int) -> list[str]:
    """What fails when one decision is verified (signature, evidence recomputed from the outputs, policy);
    empty: intact. Seconds at 10k pairs: callers that render often cache it per store version."""
    from lib.governance.verify import verify_decision

    return [str(p) for p in verify_decision(engine, decision_id)]


def decision_status(engine: Engine, comparison: str,
                    problems_of: Callable[[int], list[str]] | None = None) -> dict[str, Any] | None:
    """The latest signed decision: who, when, go/no-go, the verdict it was signed on, and its integrity.
    `problems_of(decision_id)`: its verification problems (a cached decision_problems), else verified now."""
    from lib.governance.decisions import decision_summary, latest_decision

    row = latest_decision(engine, comparison)
    if row is None:
        return None
    assert row.id is not None  # a stored row
    problems = problems_of(row.id) if problems_of else decision_problems(engine, row.id)
    return {**decision_summary(row), "intact": not problems, "problems": list(problems)}


# ---- the forest plot's rows ----------------------------------------------------------------------
@dataclass(frozen=True)
class ForestRow:
    name: str  # the row's label: a metric, or a criterion with a category
    delta: float  # pp for rates, % of the baseline for the others
    low: float
    high: float
    unit: str  # PP or RELATIVE: one axis per unit
    evidence: str
    result: str | None  # the criterion's result (pass | fail | inconclusive), None: no criterion on it
    margins: tuple[float, ...]  # the policy's delta bounds on this row, in the row's unit


PP, RELATIVE = "pp", "% of baseline"


def _scale(metric: str, m: dict) -> float | None:
    """Rates in percentage points; other metrics as a percentage of the baseline (None: no baseline)."""
    if is_rate(metric):
        return 100.0
    base = m.get("baseline")
    return 100.0 / abs(base) if _finite(base) and base else None


def _worst(results: list[str]) -> str | None:
    for result in ("fail", "inconclusive", "pass"):
        if result in results:
            return result
    return None


def forest_rows(report: dict, verdict: dict | None = None) -> list[ForestRow]:
    """Every metric's delta with its CI (rates in pp, the others in % of their baseline, so each unit shares
    one axis), with the delta criteria of the verdict on it: their bounds (max_increase +m, max_decrease -m)
    and the worst result among them."""
    criteria: dict[str, list[dict]] = {}
    for c in (verdict or {}).get("criteria", []):
        if c["threshold"] in ("max_increase", "max_decrease"):
            criteria.setdefault(c["criterion"], []).append(c)
    rows = []
    metrics = dict(report.get("metrics") or {})
    for name in list(metrics) + [n for n in criteria if n not in metrics]:
        metric, _, category = name.partition("@")
        m = ((report.get("by_category") or {}).get(category) or {}).get(metric) if category else metrics.get(name)
        e = classify(metric, m)
        scale = _scale(metric, m) if m else None
        if e is None or e.ci is None or e.delta is None or scale is None:
            continue
        own = criteria.get(name, [])
        bounds = tuple((c["margin"] if c["threshold"] == "max_increase" else -c["margin"]) * scale for c in own)
        rows.append(ForestRow(label(metric) + (f" @ {category}" if category else ""), e.delta * scale,
                              e.ci[0] * scale, e.ci[1] * scale, PP if e.rate else RELATIVE, e.evidence,
                              _worst([c["result"] for c in own]), bounds))
    return rows
