"""System owners, comments, and signed go/no-go decisions.

Only the owner of a comparison's system may sign a decision for it; anyone may comment. A decision
signs (Ed25519) every one of its columns except `id` and `signature`: the decision, rationale,
conditions, signer and key fingerprint, the verdict and its policy's hash, the report, the digests
of the evidence, and the audit chain head at signing (seq and hash; message version 2). The bound head
makes any deletion or re-chaining of an event before the decision detectable without an anchor: the
attacker would have to re-sign. Decisions signed before (version 1) verify as they did and say that
they bind no chain head. Every check runs before anything is written, so a refused decision leaves no trace.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from lib.errors import ReviewInputError
from lib.governance.entities import Decision, ReviewComment
from lib.governance.evidence import data_digest, evidence_digest
from lib.governance.gate import Verdict, compute_verdict, last_gated_policy
from lib.governance.owners import current_owner_row
from lib.governance.owners import set_owner as set_owner  # re-exported: the owner rules live there
from lib.governance.policy import get_policy
from lib.governance.signing import load_private_key, registered_key
from lib.review.comparisons import get_comparison
from lib.store.audit import GENESIS_HASH, as_utc, canonical_json, chain_head, iso_now, record_row_event
from lib.store.engine import session_scope
from lib.store.entities import Comparison

DECISIONS = ("go", "no-go")
UNSIGNED_FIELDS = frozenset({"id", "signature"})
MESSAGE_VERSION = 2
CHAIN_FIELDS = frozenset({"message_version", "chain_seq", "chain_hash"})  # version 2 only
SIGNED_FIELDS = tuple(sorted(set(Decision.model_fields) - UNSIGNED_FIELDS))
V1_SIGNED_FIELDS = tuple(sorted(set(SIGNED_FIELDS) - CHAIN_FIELDS))


class NotOwnerError(ReviewInputError):
    """The signer does not own the comparison's system."""


class DecisionInputError(ReviewInputError):
    """A decision, comment or owner assignment with a missing or invalid field."""


@dataclass(frozen=True)
class DecisionRequest:
    comparison: str
    decision: str  # go | no-go
    signer: str
    rationale: str
    conditions: str | None = None  # e.g. canary share and rollback triggers
    policy: str | None = None  # latest version of this policy; None: the policy of the last gate run
    policy_version: int | None = None


def _required(value: str | None, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise DecisionInputError(f"{what} must not be empty")
    return value


def binds_chain_head(fields: dict[str, Any]) -> bool:
    """Whether a decision (new, or a raw stored row) was signed with message version 2 (the chain head)."""
    return fields.get("message_version") is not None


def signed_message(fields: dict[str, Any]) -> bytes:
    """The signed bytes, rebuilt the same way from a new decision or a raw stored row. Version 1 (no
    `message_version`) leaves the chain fields out; setting a version 2 row's fields to NULL to pass it off
    as version 1 changes the message, so its signature no longer verifies."""
    names = SIGNED_FIELDS if binds_chain_head(fields) else V1_SIGNED_FIELDS
    signed = {name: fields[name] for name in names}
    signed["post_hoc"] = bool(signed["post_hoc"])  # SQLite hands booleans back as 0/1
    return canonical_json(signed).encode()


def current_owner(session: Session, system: str) -> str | None:
    row = current_owner_row(session, system)
    return row.owner if row else None


def check_owner(session: Session, comp: Comparison, signer: str) -> None:
    owner = current_owner(session, comp.system)
    if owner is None:
        raise NotOwnerError(f"system '{comp.system}' has no owner: claim it (Decision page, or "
                            f"`./review system claim {comp.system} --owner NAME`)")
    if owner != signer:
        raise NotOwnerError(f"'{signer}' does not own system '{comp.system}' (owner: '{owner}'); "
                            "only the owner may sign, others may comment")


def add_comment(engine: Engine, comparison: str, author: str, text: str) -> int:
    author, text = _required(author, "author"), _required(text, "comment text")
    with session_scope(engine) as session:
        comp = get_comparison(session, comparison)
        row = ReviewComment(comparison_id=comp.id, author=author, text=text)
        session.add(row)
        record_row_event(session, "comment_added", row, author, comparison=comp.name)
        return row.id


def list_comments(engine: Engine, comparison: str) -> list[dict[str, Any]]:
    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        rows = session.exec(select(ReviewComment).where(ReviewComment.comparison_id == comp.id)
                            .order_by(ReviewComment.id)).all()
        return [{"id": c.id, "author": c.author, "text": c.text, "created_at": as_utc(c.created_at).isoformat()}
                for c in rows]


def _policy_for(engine: Engine, req: DecisionRequest) -> tuple[str, int | None]:
    if req.policy:
        return req.policy, req.policy_version
    last = last_gated_policy(engine, req.comparison)
    if last is None:
        raise DecisionInputError(f"no verdict recorded for '{req.comparison}': pass --policy NAME "
                                 "(or run `./review gate` first)")
    return last


def _validated(req: DecisionRequest) -> tuple[str, str]:
    if req.decision not in DECISIONS:
        raise DecisionInputError(f"decision must be one of {', '.join(DECISIONS)}, got '{req.decision}'")
    return _required(req.signer, "signer"), _required(req.rationale, "rationale")


def _decision_fields(session: Session, comp: Comparison, req: DecisionRequest, signer: str, rationale: str,
                     fingerprint: str, verdict: Verdict, report: dict) -> dict[str, Any]:
    """Every signed column. The data digest is taken under the write lock, so no output lands meanwhile."""
    verdict_json, report_json = canonical_json(verdict.to_dict()), canonical_json(report)
    conn = session.connection()
    head = chain_head(conn) or {"seq": 0, "hash": GENESIS_HASH}  # before this decision's own event
    data = data_digest(conn, comp.baseline_run_id, comp.candidate_run_id, labels_upto=head["seq"])
    policy = get_policy(session, verdict.policy_name, verdict.policy_version)
    return dict(comparison_id=comp.id, comparison=comp.name, system=comp.system,
                baseline_run_id=comp.baseline_run_id, candidate_run_id=comp.candidate_run_id,
                decision=req.decision, rationale=rationale, conditions=(req.conditions or "").strip() or None,
                signer=signer, key_fingerprint=fingerprint, policy_id=policy.id, policy_name=policy.name,
                policy_version=policy.version, policy_hash=policy.content_hash, verdict=verdict.verdict,
                post_hoc=verdict.post_hoc, verdict_json=verdict_json, report_json=report_json, data_digest=data,
                evidence_digest=evidence_digest(data, report_json, verdict_json), signed_at=iso_now(),
                message_version=MESSAGE_VERSION, chain_seq=head["seq"], chain_hash=head["hash"])


@dataclass(frozen=True)
class Signed:
    decision: Decision
    created: bool  # False: the same decision on the same evidence was already signed; this is that one


# What makes two decisions the same: who decided what, in which words, under which policy, on which evidence.
SAME_DECISION_FIELDS = ("comparison_id", "decision", "signer", "rationale", "conditions", "policy_id",
                        "evidence_digest")


def _already_signed(session: Session, fields: dict[str, Any]) -> Decision | None:
    query = select(Decision)
    for name in SAME_DECISION_FIELDS:
        query = query.where(getattr(Decision, name) == fields[name]) if fields[name] is not None \
            else query.where(getattr(Decision, name).is_(None))
    return session.exec(query.order_by(col(Decision.id))).first()


def sign_decision(engine: Engine, req: DecisionRequest, passphrase: str,
                  key_directory: Path | None = None) -> Signed:
    """Check the signer, unlock the key, compute the verdict, then sign and store in one transaction.
    A second request for the same decision on the same evidence returns the first (nothing written)."""
    signer, rationale = _validated(req)
    with Session(engine) as session:
        check_owner(session, get_comparison(session, req.comparison), signer)
        key_row = registered_key(session, signer)
    private = load_private_key(key_row, passphrase, key_directory)
    verdict, report = compute_verdict(engine, req.comparison, *_policy_for(engine, req))
    with session_scope(engine) as session:
        comp = get_comparison(session, req.comparison)
        check_owner(session, comp, signer)  # again under the write lock: ownership may have moved
        fields = _decision_fields(session, comp, req, signer, rationale, key_row.fingerprint, verdict, report)
        existing = _already_signed(session, fields)
        if existing is not None:
            return Signed(existing, created=False)
        row = Decision(**fields, signature=private.sign(signed_message(fields)).hex())
        session.add(row)
        record_row_event(session, "decision_signed", row, signer, comparison=comp.name, decision=row.decision,
                         verdict=row.verdict, policy_hash=row.policy_hash, evidence_digest=row.evidence_digest,
                         key_fingerprint=row.key_fingerprint)
        return Signed(row, created=True)


def decide(engine: Engine, req: DecisionRequest, passphrase: str, key_directory: Path | None = None) -> Decision:
    """sign_decision's decision: the new one, or the identical one signed before."""
    return sign_decision(engine, req, passphrase, key_directory).decision


def latest_decision(engine: Engine, comparison: str) -> Decision | None:
    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        return session.exec(select(Decision).where(Decision.comparison_id == comp.id)
                            .order_by(col(Decision.id).desc())).first()


def decision_summary(row: Decision) -> dict[str, Any]:
    return {"id": row.id, "comparison": row.comparison, "decision": row.decision, "verdict": row.verdict,
            "signer": row.signer, "key_fingerprint": row.key_fingerprint, "post_hoc": bool(row.post_hoc),
            "policy": f"{row.policy_name} v{row.policy_version}", "policy_hash": row.policy_hash,
            "rationale": row.rationale, "conditions": row.conditions, "signed_at": row.signed_at,
            "evidence_digest": row.evidence_digest, "signature": row.signature,
            "chain_head": {"seq": row.chain_seq, "hash": row.chain_hash} if row.message_version else None}


def list_decisions(engine: Engine, comparison: str) -> list[Decision]:
    """A comparison's decisions, newest first."""
    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        return list(session.exec(select(Decision).where(Decision.comparison_id == comp.id)
                                 .order_by(Decision.id.desc())).all())
