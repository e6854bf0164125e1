"""Governance entities: policies, signing keys, owners, comments, decisions and the audit chain.

Every row here is written once and never updated: a change is a new row (a new policy version, a new
owner assignment). Each row is also covered by an audit event whose payload holds the row's digest, so
`lib.governance.verify` detects an edit or a deletion of any stored field. Timestamps that are hashed or signed
verbatim (`AuditEvent.at`, `Decision.signed_at`) are stored as ISO text so the stored value is exactly
the value that was hashed.
"""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from lib.store.columns import utcnow


class Policy(SQLModel, table=True):
    """One locked version of a named gate policy (canonical TOML and its sha256)."""

    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    version: int = 1
    content_hash: str  # sha256 of content_toml
    content_toml: str = Field(sa_column=Column(Text, nullable=False))  # canonical form
    source: Optional[str] = None  # file name it was created from, or "form"
    created_at: datetime = Field(default_factory=utcnow)  # the lock time


class SigningKey(SQLModel, table=True):
    """A signer's Ed25519 public key. The private key lives only in the signer's key directory."""

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    public_key: str  # hex of the 32 raw public bytes
    fingerprint: str = Field(unique=True)  # sha256 hex of the raw public bytes
    created_at: datetime = Field(default_factory=utcnow)


class SystemOwner(SQLModel, table=True):
    """An owner assignment; the latest row per system is the current owner (history is kept)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    system: str = Field(index=True)
    owner: str
    created_at: datetime = Field(default_factory=utcnow)


class ReviewComment(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True)
    author: str
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Decision(SQLModel, table=True):
    """A signed go/no-go decision. The signature covers every column except `id` and `signature`
    (message version 2; version 1, NULL `message_version`, was signed before the chain head was bound and
    covers every column but the three last ones, see lib.governance.decisions.signed_message)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True)
    comparison: str  # name at signing time
    system: str
    baseline_run_id: int
    candidate_run_id: int
    decision: str  # go | no-go
    rationale: str = Field(sa_column=Column(Text, nullable=False))
    conditions: Optional[str] = Field(default=None, sa_column=Column(Text))
    signer: str
    key_fingerprint: str
    policy_id: int
    policy_name: str
    policy_version: int
    policy_hash: str
    verdict: str  # the gate's overall verdict: go | no-go | inconclusive
    post_hoc: bool = False
    verdict_json: str = Field(sa_column=Column(Text, nullable=False))
    report_json: str = Field(sa_column=Column(Text, nullable=False))
    data_digest: str  # outputs of both runs and the cases they answer, all fields
    evidence_digest: str  # over data_digest, the report and the verdict
    signed_at: str  # ISO 8601 UTC, signed verbatim
    signature: str  # hex Ed25519 signature
    # Added columns (NULL in decisions signed before them; lib.store.migrate adds them to old stores):
    message_version: Optional[int] = None  # 2: the signed message binds the chain head below
    chain_seq: Optional[int] = None  # the audit chain head when it was signed: seq (0: empty chain) ...
    chain_hash: Optional[str] = None  # ... and that event's hash
