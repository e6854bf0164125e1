"""Reviewer refusal labels: a reviewer's "refusal" / "not a refusal" for one output overrides the rule.

Labels are stored per output (who, when), append-only: the latest row for an output is its label, and a
row with `refused` None clears it (the rule applies again). Each label is an audit event
("refusal_labelled"). `apply_labels` runs where the checked frame is built (lib/review/checked.py), so
every count downstream (report, pages, gate, change counts) sees the labelled value; drift's refusal
descriptor uses `label_overrides`. After applying, each side has `{side}_refused` (label or rule),
`{side}_refused_rule` (the rule's own verdict) and `{side}_refused_source` ("rule" | "label", NA where
the output is missing).
"""
from __future__ import annotations

import json
from typing import TypedDict

import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lib.errors import ReviewInputError
from lib.review.entities import RefusalLabel
from lib.store.audit import record_event
from lib.store.engine import session_scope
from lib.store.entities import Output

SOURCE_RULE, SOURCE_LABEL = "rule", "label"


class LabelInputError(ReviewInputError):
    """A label names no stored output, or no reviewer."""


def set_label(engine: Engine, output_id: int, refused: bool | None, labelled_by: str) -> RefusalLabel:
    """Store (and audit) a reviewer's label for one output; None clears it."""
    who = (labelled_by or "").strip()
    if not who:
        raise LabelInputError("a label needs the reviewer's name")
    with session_scope(engine) as session:
        output = session.get(Output, int(output_id))
        if output is None:
            raise LabelInputError(f"no output with id {output_id}")
        label = RefusalLabel(output_id=int(output_id), refused=refused, labelled_by=who)
        session.add(label)
        session.flush()
        record_event(session, "refusal_labelled", {"output_id": int(output_id), "run_id": output.run_id,
                                                   "case_id": output.case_id, "repeat": output.repeat,
                                                   "refused": refused, "label_id": label.id}, actor=who)
        session.expunge(label)
    return label


def labels_for_runs(engine: Engine, run_ids: tuple[int, ...]) -> dict[int, bool]:
    """output id -> labelled value, for the outputs of these runs that carry a (not cleared) label."""
    sql = text("SELECT l.output_id, l.refused FROM refusal_label l JOIN output o ON o.id = l.output_id "
               "WHERE o.run_id IN (SELECT value FROM json_each(:runs)) ORDER BY l.id")
    with engine.connect() as conn:
        rows = conn.execute(sql, {"runs": json.dumps(list(run_ids))}).all()
    latest: dict[int, bool | None] = {}
    for output_id, refused in rows:
        latest[int(output_id)] = None if refused is None else bool(refused)
    return {k: v for k, v in latest.items() if v is not None}


def label_history(engine: Engine, output_id: int) -> list[dict]:
    """Every label of one output, oldest first: who said what, when."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT refused, labelled_by, created_at FROM refusal_label "
                                 "WHERE output_id = :o ORDER BY id"), {"o": int(output_id)}).all()
    return [{"refused": None if r[0] is None else bool(r[0]), "by": r[1], "at": r[2]} for r in rows]


def apply_labels(frame: pd.DataFrame, labels: dict[int, bool]) -> pd.DataFrame:
    """The checked frame with labels overriding the rule's `{side}_refused` (see module docstring)."""
    for side in ("b", "c"):
        rule = frame[f"{side}_refused"].astype("boolean")
        ids = frame[f"{side}_output_id"].astype("Int64")
        labelled = pd.Series(ids.map(labels) if labels else pd.NA, index=frame.index, dtype="boolean")
        has_label = labelled.notna() & ids.notna()
        frame[f"{side}_refused_rule"] = rule
        frame[f"{side}_refused"] = labelled.where(has_label, rule).astype("boolean")
        source = pd.Series(SOURCE_RULE, index=frame.index, dtype=object).where(ids.notna(), None)
        frame[f"{side}_refused_source"] = source.where(~has_label.to_numpy(), SOURCE_LABEL)
    return frame


class Agreement(TypedDict):
    n: int  # labelled outputs where the rule also gave a verdict
    labelled_refusals: int
    rule_refusals: int
    precision: float | None  # of the rule's refusals, the share the reviewers call refusals
    recall: float | None  # of the reviewers' refusals, the share the rule found
    agreement: float | None


def agreement(frame: pd.DataFrame) -> Agreement:
    """How the rule agrees with the reviewers' labels in this (label-applied) checked frame."""
    rule = pd.concat([frame[f"{s}_refused_rule"] for s in "bc"], ignore_index=True)
    label = pd.concat([frame[f"{s}_refused"] for s in "bc"], ignore_index=True)
    source = pd.concat([frame[f"{s}_refused_source"] for s in "bc"], ignore_index=True)
    keep = (source == SOURCE_LABEL).to_numpy() & rule.notna().to_numpy()
    r, t = rule[keep].astype(bool).to_numpy(), label[keep].astype(bool).to_numpy()
    both = int((r & t).sum())
    return Agreement(n=int(keep.sum()), labelled_refusals=int(t.sum()), rule_refusals=int(r.sum()),
                     precision=both / int(r.sum()) if r.sum() else None,
                     recall=both / int(t.sum()) if t.sum() else None,
                     agreement=float((r == t).mean()) if keep.any() else None)


def count_labelled(frame: pd.DataFrame) -> int:
    """Outputs in this checked frame whose refusal value is a reviewer's label."""
    return int(sum((frame[f"{s}_refused_source"] == SOURCE_LABEL).sum() for s in "bc"
                   if f"{s}_refused_source" in frame))


def label_overrides(engine: Engine, run_ids: tuple[int, ...], output_ids: pd.Series) -> pd.Series:
    """Per output id: its label (boolean), NA where unlabelled; for callers that flag texts themselves."""
    labels = labels_for_runs(engine, run_ids)
    return pd.Series(output_ids.astype("Int64").map(labels) if labels else pd.NA, index=output_ids.index,
                     dtype="boolean")
