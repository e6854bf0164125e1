"""Re-check everything the audit trail vouches for, from the stored rows as they are now.

1. The event chain: every hash, every link, contiguous seq, the head (a truncated tail).
2. Every governed row (policy, key, owner, comment, decision) against the digest its event recorded, and
   every refusal label against the fields its event recorded: an edited field, a deleted row and a row
   that never went through the trail are all named.
3. Every policy's content against its locked hash; every owner change a claim or a signed transfer.
4. Every decision: its signature with the registered key, its evidence recomputed from the stored
   outputs, cases and configurations, its report/verdict digests, its policy's hash, the stored
   drift result its report cites (when it cites one), that its comparison still points at the signed
   runs and system, its report's metrics recomputed from the raw outputs (not the check store) with the
   refusal labels it was signed on, and (message version 2) that the chain still holds the head it bound
   at signing: deleting or re-chaining any event before a signed decision is detected without an anchor.
5. With an anchor (`verify --anchor FILE`, or REVIEW_ANCHOR_FILE): the chain still holds every anchored
   head, so a truncated tail or a re-chained history is detected (see docs/security.md for what an
   attacker with write access can still do without one).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from lib.drift.entities import DriftResult
from lib.errors import ReviewError, ReviewInputError
from lib.governance.decisions import binds_chain_head, signed_message
from lib.governance.entities import Decision, Policy, ReviewComment, SigningKey, SystemOwner
from lib.governance.evidence import bound_labels, data_digest, evidence_digest
from lib.governance.owners import check_owner_changes
from lib.governance.signing import verify_signature
from lib.review.entities import RefusalLabel
from lib.store.audit import (
    ANCHOR_ENV,
    Problem,
    check_anchor,
    check_chain,
    event_hash_at,
    event_payload,
    list_events,
    raw_rows,
    read_anchors,
    row_digest,
    sha256_hex,
    table_name,
)
from lib.store.entities import Comparison

GOVERNED: tuple[type[SQLModel], ...] = (Policy, SigningKey, SystemOwner, ReviewComment, Decision)
_LABELS = {"policy": "policy", "signingkey": "signing key", "systemowner": "owner assignment",
           "reviewcomment": "comment", "decision": "decision", "refusal_label": "refusal label"}
UNBOUND = "signed before chain heads were bound: it does not bind the audit chain head (only an anchor " \
          "detects events removed or re-chained before it)"


@dataclass
class VerifyResult:
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # each: id, comparison, chain_head|None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "counts": self.counts,
                "problems": [{"record": p.record, "message": p.message} for p in self.problems],
                "decisions": self.decisions}


def chain_binding(row: dict) -> dict[str, Any]:
    """What verify shows of one decision's bound chain head (None: signed before heads were bound)."""
    head = {"seq": row["chain_seq"], "hash": row["chain_hash"]} if binds_chain_head(row) else None
    return {"id": row["id"], "comparison": row["comparison"], "chain_head": head,
            **({} if head else {"note": UNBOUND})}


def label(table: str, row_id: Any, row: dict | None = None) -> str:
    text = f"{_LABELS.get(table, table)} {row_id}"
    if row and table == "policy":
        text += f" ('{row.get('name')}' v{row.get('version')})"
    elif row and table == "decision":
        text += f" (comparison '{row.get('comparison')}')"
    elif row and table == "signingkey":
        text += f" ('{row.get('name')}')"
    return text


def check_records(conn: Connection, events: list[dict]) -> list[Problem]:
    """Each governed row must match the digest its audit event recorded; each recorded row must exist."""
    recorded: dict[tuple[str, Any], tuple[str, Any]] = {}
    for ev in events:
        rec = event_payload(ev).get("record")
        if isinstance(rec, dict):
            recorded[(rec.get("table"), rec.get("id"))] = (rec.get("digest"), ev["seq"])
    problems = []
    for model in GOVERNED:
        table = table_name(model)
        for row in raw_rows(conn, model):
            digest, _seq = recorded.pop((table, row["id"]), (None, None))
            if digest is None:
                problems.append(Problem(label(table, row["id"], row), "not in the audit trail (inserted outside it)"))
            elif digest != row_digest(row):
                problems.append(Problem(label(table, row["id"], row),
                                        "stored fields differ from the audit trail (edited)"))
    for (table, row_id), (_digest, seq) in recorded.items():
        problems.append(Problem(label(table, row_id), f"deleted (recorded by audit event seq {seq})"))
    return problems


def _label_fields(refused: Any, output_id: Any, by: Any) -> tuple:
    return (None if refused is None else bool(refused), output_id, by)


def check_labels(conn: Connection, events: list[dict]) -> list[Problem]:
    """Each refusal label (it overrides the rule and feeds the gate) against its `refusal_labelled` event:
    the output, the value and the reviewer must be what the trail recorded; none added or deleted outside it."""
    recorded: dict[Any, tuple[tuple, int]] = {}
    for ev in events:
        if ev["kind"] == "refusal_labelled":
            payload = event_payload(ev)
            recorded[payload.get("label_id")] = (_label_fields(payload.get("refused"), payload.get("output_id"),
                                                               ev["actor"]), ev["seq"])
    problems = []
    for row in raw_rows(conn, RefusalLabel):
        name = f"refusal label {row['id']} (output {row['output_id']})"
        fields, _seq = recorded.pop(row["id"], (None, None))
        if fields is None:
            problems.append(Problem(name, "not in the audit trail (inserted outside it)"))
        elif fields != _label_fields(row["refused"], row["output_id"], row["labelled_by"]):
            problems.append(Problem(name, "stored fields differ from the audit trail (edited)"))
    for label_id, (_fields, seq) in recorded.items():
        problems.append(Problem(f"refusal label {label_id}", f"deleted (recorded by audit event seq {seq})"))
    return problems


def check_chain_binding(conn: Connection, row: dict) -> list[Problem]:
    """A version-2 decision's bound head must still be in the chain, at its seq, with its hash."""
    if not binds_chain_head(row):
        return []
    seq, stored = row["chain_seq"], event_hash_at(conn, int(row["chain_seq"]))
    if stored == row["chain_hash"]:
        return []
    what = "is gone" if stored is None else "has another hash"
    return [Problem(label("decision", row["id"], row),
                    f"the audit chain it was signed on was rewritten: the event at seq {seq} it binds {what} "
                    "(events before the decision were deleted, edited or re-chained)")]


def check_policies(conn: Connection) -> list[Problem]:
    return [Problem(label("policy", p["id"], p), "content does not match its locked hash")
            for p in raw_rows(conn, Policy) if sha256_hex(str(p["content_toml"])) != p["content_hash"]]


def check_decision(conn: Connection, row: dict, data_cache: dict[tuple, str] | None = None) -> list[Problem]:
    """Signature, evidence and policy of one stored decision."""
    name, problems = label("decision", row["id"], row), []
    key = next(raw_rows(conn, SigningKey, "WHERE fingerprint = :fp", fp=row["key_fingerprint"]), None)
    if key is None:
        problems.append(Problem(name, "signed with a key that is not registered"))
    elif key["name"] != row["signer"] or not verify_signature(key["public_key"], row["signature"], signed_message(row)):
        problems.append(Problem(name, "signature does not verify: a signed field or the signature was changed"))
    runs = (row["baseline_run_id"], row["candidate_run_id"])
    upto = row["chain_seq"] if binds_chain_head(row) else None
    cache = {} if data_cache is None else data_cache
    if (*runs, upto) not in cache:
        cache[(*runs, upto)] = data_digest(conn, *runs, labels_upto=upto)
    if cache[(*runs, upto)] != row["data_digest"]:
        problems.append(Problem(name, f"evidence changed: the stored outputs, cases, model configurations or "
                                      f"refusal labels of runs {runs[0]} and {runs[1]} differ from what was signed"))
    recomputed = evidence_digest(str(row["data_digest"]), str(row["report_json"]), str(row["verdict_json"]))
    if recomputed != row["evidence_digest"]:
        problems.append(Problem(name, "evidence digest does not match its report and verdict"))
    policy = next(raw_rows(conn, Policy, "WHERE id = :id", id=row["policy_id"]), None)
    if policy is None or policy["content_hash"] != row["policy_hash"]:
        problems.append(Problem(name, f"its policy (id {row['policy_id']}) is missing or no longer has the "
                                      "signed hash"))
    return problems + _check_drift(conn, row, name) + check_chain_binding(conn, row)


def _check_drift(conn: Connection, row: dict, name: str) -> list[Problem]:
    """The stored drift result a decision's report cites must still exist and hash to the cited digest."""
    try:
        digest = (json.loads(row["report_json"]).get("drift") or {}).get("digest")
    except (TypeError, ValueError, AttributeError):
        return [Problem(name, "its stored report is not valid JSON")]
    if digest is None:
        return []
    stored = [r for r in raw_rows(conn, DriftResult, "WHERE comparison_id = :c AND digest = :d",
                                  c=row["comparison_id"], d=digest)
              if sha256_hex(str(r["summary_json"])) == digest]
    return [] if stored else [Problem(name, f"the drift result it cites (digest {digest[:16]}) is missing or altered")]


_COMPARED = ("baseline", "candidate", "n")  # per metric: what a swapped or edited check cache would move


def labels_at_signing(conn: Connection, row: dict) -> dict[int, bool]:
    """The refusal labels the decision's gate saw: recorded up to its bound head (version 2), else up to the
    event before its own `decision_signed` event (version 1; every label when that event is gone)."""
    upto = row["chain_seq"] if binds_chain_head(row) else None
    if upto is None:
        signed_at = [ev["seq"] for ev in list_events(conn, "decision_signed")
                     if (event_payload(ev).get("record") or {}).get("id") == row["id"]]
        upto = signed_at[0] - 1 if signed_at else 2**62
    return bound_labels(conn, row["baseline_run_id"], row["candidate_run_id"], int(upto))


def recompute_report(engine: Engine, row: dict) -> dict[str, Any]:
    """The decision's report metrics recomputed from the raw outputs (never the stored check segments),
    under the review settings, alpha and refusal labels the signed report was computed with."""
    from lib.review.comparisons import load_pairs
    from lib.review.compute import checked_pairs
    from lib.review.labels import apply_labels
    from lib.review.report import report_from_checked
    from lib.review.settings import settings_from_dict
    from lib.review.tokens import run_prompts

    signed = json.loads(row["report_json"])
    settings = settings_from_dict(signed.get("settings") or {})
    prompts = {side: p for side, p in run_prompts(engine, row["comparison"]).items() if p is not None}
    checked = checked_pairs(load_pairs(engine, row["comparison"]), settings, prompts)
    with engine.connect() as conn:
        labels = labels_at_signing(conn, row)
    checked = apply_labels(checked.assign(b_output_id=checked["b_id"], c_output_id=checked["c_id"]), labels)
    return report_from_checked(checked, row["comparison"], signed.get("alpha", 0.05))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b)) or (a != a and b != b)
    return a == b


def check_report(engine: Engine, row: dict) -> list[Problem]:
    """Recompute the signed report's metrics from the outputs and name every metric that differs."""
    name = label("decision", row["id"], row)
    try:
        signed = json.loads(row["report_json"])
        fresh = recompute_report(engine, row)
    except (TypeError, ValueError, AttributeError):
        return [Problem(name, "its stored report is not valid JSON")]
    except ReviewError as exc:
        return [Problem(name, f"its report cannot be recomputed from the outputs ({exc})")]
    differ = [] if signed.get("n_pairs") == fresh["n_pairs"] else ["n_pairs"]
    for metric, block in (signed.get("metrics") or {}).items():
        other = fresh["metrics"].get(metric)
        if other is None or not all(_same(block.get(k), other.get(k)) for k in _COMPARED):
            differ.append(metric)
    if not differ:
        return []
    first = differ[0]
    detail = ""
    if first != "n_pairs" and fresh["metrics"].get(first):
        s, f = signed["metrics"][first], fresh["metrics"][first]
        detail = (f" (signed {first} {s.get('baseline')} -> {s.get('candidate')}, "
                  f"recomputed {f.get('baseline')} -> {f.get('candidate')})")
    return [Problem(name, f"its report does not match the outputs: {', '.join(differ)} differ when recomputed "
                          f"from the raw outputs{detail}; the stored checks or outputs were altered")]


def check_comparison_binding(conn: Connection, row: dict) -> list[Problem]:
    """The comparison a decision names must still point at the signed runs and system."""
    comp = next(raw_rows(conn, Comparison, "WHERE id = :id", id=row["comparison_id"]), None)
    name = label("decision", row["id"], row)
    if comp is None:
        return [Problem(name, f"its comparison (id {row['comparison_id']}) is missing")]
    signed = (row["comparison"], row["system"], row["baseline_run_id"], row["candidate_run_id"])
    now = (comp["name"], comp["system"], comp["baseline_run_id"], comp["candidate_run_id"])
    if signed == now:
        return []
    fields = [f for f, a, b in zip(("name", "system", "baseline run", "candidate run"), signed, now, strict=True)
              if a != b]
    return [Problem(name, f"its comparison was repointed: {', '.join(fields)} no longer what was signed")]


def anchors_from(path: Path | None) -> list[tuple[int, str]]:
    """Anchored heads in `path` (an anchor file or an exported change record), else in REVIEW_ANCHOR_FILE
    when it is set and exists; none without either. AnchorFileError (exit 2) when unreadable."""
    if path is None:
        env = os.environ.get(ANCHOR_ENV)
        if not env or not Path(env).is_file():
            return []
        path = Path(env)
    try:
        return read_anchors(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise AnchorFileError(f"{path}: cannot read the anchor ({exc})") from None
    except ValueError as exc:
        raise AnchorFileError(str(exc)) from None


class AnchorFileError(ReviewInputError):
    """The anchor given to `verify --anchor` is missing, unreadable or holds no head."""


def verify_store(engine: Engine, anchors: list[tuple[int, str]] | None = None) -> VerifyResult:
    """The whole store: chain, governed rows, policies and decisions (see module docstring), and that the
    chain still extends every anchored head (`anchors`; default: REVIEW_ANCHOR_FILE's)."""
    anchors = anchors_from(None) if anchors is None else anchors
    with engine.connect() as conn:
        events = list_events(conn)
        result = VerifyResult(check_chain(conn) + check_anchor(conn, anchors) + check_records(conn, events)
                              + check_labels(conn, events) + check_policies(conn))
        result.problems += check_owner_changes(conn, events)  # claims and signed transfers only
        cache: dict[tuple, str] = {}
        decisions = list(raw_rows(conn, Decision))
        result.decisions = [chain_binding(row) for row in decisions]
        for row in decisions:
            result.problems += check_decision(conn, row, cache) + check_comparison_binding(conn, row)
    for row in decisions:
        result.problems += check_report(engine, row)
    with engine.connect() as conn:
        result.counts = {"events": len(events), "decisions": len(decisions),
                         "policies": sum(1 for _ in raw_rows(conn, Policy)),
                         "refusal labels": sum(1 for _ in raw_rows(conn, RefusalLabel)), "anchors": len(anchors)}
    return result


def verify_decision(engine: Engine, decision_id: int) -> list[Problem]:
    """One decision's signature and evidence (the export's integrity line and the Decision page)."""
    with engine.connect() as conn:
        row = next(raw_rows(conn, Decision, "WHERE id = :id", id=decision_id), None)
        if row is None:
            return [Problem(label("decision", decision_id), "not found")]
        problems = check_decision(conn, row) + check_comparison_binding(conn, row)
    return problems + check_report(engine, row)
