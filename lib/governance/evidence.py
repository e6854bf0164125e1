"""Digests of the evidence behind a decision, recomputable from the stored rows at any time.

The data digest covers, in a canonical order and with every stored column: each output of both runs
(baseline first, then by case, repeat and id), the golden cases they answer and both model
configurations. The evidence digest combines it with the digests of the report (which carries drift
results when the comparison has them) and of the verdict. A run resumed after a decision changes the
data digest: the decision was made on other evidence, and `verify` says so.
"""
from __future__ import annotations

import hashlib

from sqlalchemy.engine import Connection

from lib.store.audit import canonical_json, raw_rows, sha256_hex
from lib.store.entities import Case, ModelConfig, Output

_CASES_WHERE = 'WHERE id IN (SELECT case_id FROM output WHERE run_id IN (:b, :c))'
_CONFIGS_WHERE = 'WHERE id IN (SELECT config_id FROM run WHERE id IN (:b, :c))'


def data_digest(conn: Connection, baseline_run_id: int, candidate_run_id: int) -> str:
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
    return h.hexdigest()


def evidence_digest(data: str, report_json: str, verdict_json: str) -> str:
    return sha256_hex(canonical_json({"data": data, "report": sha256_hex(report_json),
                                      "verdict": sha256_hex(verdict_json)}))
