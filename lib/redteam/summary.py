"""Per-family red-team results from a report, and the cases behind each flip (CLI and Safety page).

"Passing" means the safe outcome: injection resisted, harmful request refused, benign request
answered (`over_refusal_rate` counts refusals, so there a False is a pass), instructions followed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import bindparam, text
from sqlalchemy.engine import Engine

from lib.redteam.constraints import failed_constraints
from lib.redteam.families import families, stored_rule
from lib.review import fmt
from lib.review.checks.safety import LOWER_IS_BETTER, METRIC_FAMILY, SAFETY_METRICS

NEWLY_FAILING, NEWLY_PASSING = "newly_failing", "newly_passing"


@dataclass(frozen=True)
class FamilyResult:
    family: str
    metric: str
    label: str
    metric_object: dict[str, Any]  # the report's metric object (rates, delta, CIs, p-values, flips)

    @property
    def lower_is_better(self) -> bool:
        return self.metric in LOWER_IS_BETTER

    @property
    def newly_failing(self) -> int:
        flips = self.metric_object["flips"]
        return flips["to_true"] if self.lower_is_better else flips["to_false"]

    @property
    def newly_passing(self) -> int:
        flips = self.metric_object["flips"]
        return flips["to_false"] if self.lower_is_better else flips["to_true"]


def family_results(report: dict[str, Any]) -> list[FamilyResult]:
    """One result per red-team metric the report has (absent families are left out)."""
    return [FamilyResult(METRIC_FAMILY[key], key, label, report["metrics"][key])
            for key, (_, label) in SAFETY_METRICS.items() if report["metrics"].get(key)]


def summary_lines(results: list[FamilyResult]) -> list[str]:
    """A fixed-width table: rates baseline -> candidate with n, the delta and its CI, the flips."""
    lines = [f"{'family':<13} {'metric':<28} {'baseline':>9} {'candidate':>9} {'delta [95% CI]':>26} "
             f"{'n':>5}  newly failing / passing"]
    for r in results:
        m = r.metric_object
        delta = fmt.metric_delta(m["delta"], m["ci_low"], m["ci_high"], rate=True)
        lines.append(f"{r.family:<13} {r.metric:<28} {fmt.pct(m['baseline']):>9} {fmt.pct(m['candidate']):>9} "
                     f"{delta:>26} {m['n']:>5}  {r.newly_failing} / {r.newly_passing}")
    if any(r.lower_is_better for r in results):
        lines.append("over_refusal_rate: lower is better (the share of benign requests refused); "
                     "the other rates: higher is better.")
    return lines


def flipped(checked: pd.DataFrame, metric: str, which: str) -> pd.DataFrame:
    """Rows of a checked frame (lib.review.checked: no texts needed) whose outcome on `metric` flipped the
    `which` way (NEWLY_FAILING or NEWLY_PASSING)."""
    col = SAFETY_METRICS[metric][0]
    b, c = checked[f"b_{col}"].astype("boolean"), checked[f"c_{col}"].astype("boolean")
    b_pass, c_pass = (~b, ~c) if metric in LOWER_IS_BETTER else (b, c)
    moved = b_pass & ~c_pass if which == NEWLY_FAILING else ~b_pass & c_pass
    return checked[moved.fillna(False).to_numpy(dtype=bool)]


def rule_details(engine: Engine, rows: pd.DataFrame, metric: str) -> list[str]:
    """What the rule looked at, per row (the canary; the constraints each side breaks). `rows` need
    `case_id`, and `b_text`/`c_text` for instructions (lib.review.checked.with_texts adds them)."""
    family = METRIC_FAMILY[metric]
    ids = [int(i) for i in pd.unique(rows["case_id"])]
    with engine.connect() as conn:
        query = text('SELECT id, metadata_json FROM "case" WHERE id IN :ids').bindparams(
            bindparam("ids", expanding=True))
        metadata = dict(conn.execute(query, {"ids": ids}).all()) if ids else {}
    return [_detail(family, metadata.get(int(row.case_id)), row) for row in rows.itertuples(index=False)]


def _detail(family: str, metadata_json: str | None, row: Any) -> str:
    rule = stored_rule(family, metadata_json)
    if rule is None:
        return ""
    if family == "injection":
        return f"canary: {rule.canary}"
    if family == "instructions":
        parts = [f"{side} breaks: {', '.join(failed_constraints(str(body), rule.constraints)) or 'none'}"
                 for side, body in (("baseline", row.b_text), ("candidate", row.c_text))]
        return "; ".join(parts)
    return "expected: refusal" if family == "harmful" else "expected: an answer"


def has_red_team_cases(checked: pd.DataFrame) -> bool:
    return bool(families(checked["category"]).notna().any())
