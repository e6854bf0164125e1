"""Digests of the evidence behind a decision, recomputable from the stored rows at any time.

The data digest covers, in a canonical order and with every stored column: each output of both runs
(baseline first, then by case, repeat and id), the golden cases they answer and both model
configurations, and (decisions that bind the chain head) the reviewers' refusal labels on those
outputs that the audit trail recorded up to the bound head: labels override the refusal rule and feed
the gate, and a label added after signing is not part of what was signed. The evidence digest combines
it with the digests of the report (which carries drift results when the comparison has them) and of the
verdict. A run resumed after a decision changes the data digest: the decision was made on other
evidence, and `verify` says so.
"""
from __future__ import annotations

import hashlib

from sqlalchemy.engine import Connection

from lib.review.entities import RefusalLabel
from lib.store.audit import canonical_json, raw_rows, sha256_hex
from lib.store.entities import Case, ModelConfig, Output

_CASES_WHERE = 'WHERE id IN (SELECT case_id FROM output WHERE run_id IN (:b, :c))'
_CONFIGS_WHERE = 'WHERE id IN (SELECT config_id FROM run WHERE id IN (:b, :c))'


_LABELS_WHERE = ("WHERE output_id IN (SELECT id FROM output WHERE run_id IN (:b, :c)) AND id IN "
                 "(SELECT json_extract(payload_json, '$.label_id') FROM auditevent "
                 "WHERE kind = 'refusal_labelled' AND seq <= :upto)")


def bound_label_rows(conn: Connection, baseline_run_id: int, candidate_run_id: int, upto: int) -> list[dict]:
    """The stored label rows on these runs' outputs whose audit event is at or before chain seq `upto`."""
    return list(raw_rows(conn, RefusalLabel, _LABELS_WHERE, b=baseline_run_id, c=candidate_run_id, upto=upto))


def bound_labels(conn: Connection, baseline_run_id: int, candidate_run_id: int, upto: int) -> dict[int, bool]:
    """output id -> label as the gate saw it at chain seq `upto` (latest per output; a cleared one dropped)."""
    latest: dict[int, bool | None] = {}
    for row in bound_label_rows(conn, baseline_run_id, candidate_run_id, upto):
        latest[int(row["output_id"])] = None if row["refused"] is None else bool(row["refused"])
    return {k: v for k, v in latest.items() if v is not None}


def data_digest(conn: Connection, baseline_run_id: int, candidate_run_id: int, labels_upto: int | None = None) -> str:
    """See the module docstring; `labels_upto`: the bound chain seq (None: a decision that binds no head,
    whose digest never covered labels)."""
    h = hashlib.sha256()

    def add(kind: str, row: dict) -> None:
        h.update(canonical_json({kind: row}).encode())
        h.update(b"\n")

    for side, run_id in (("baseline", baseline_run_id), ("candidate", candidate_run_id)):
        for row in raw_rows(conn, Output, "WHERE run_id = :run", order="case_id, repeat, id", run=run_id):
            add(f"{side}_output", row)
    for row in raw_rows(conn, Case, _CASES_WHERE, b=baseline_run_id, c=candidate_run_id):
        add("case", row)
    for row in raw_rows(conn, ModelConfig, _CONFIGS_WHERE, b=baseline_run_id, c=candidate_run_id):
        add("model_config", row)
    if labels_upto is not None:
        for row in bound_label_rows(conn, baseline_run_id, candidate_run_id, labels_upto):
            add("refusal_label", row)
    return h.hexdigest()


def evidence_digest(data: str, report_json: str, verdict_json: str) -> str:
    return sha256_hex(canonical_json({"data": data, "report": sha256_hex(report_json),
                                      "verdict": sha256_hex(verdict_json)}))
