"""Append-only, hash-chained audit events, and the canonical forms everything here hashes.

`record_event` appends inside the caller's write transaction (`lib.store.engine.session_scope`): on SQLite that
transaction began with BEGIN IMMEDIATE, so concurrent writers queue instead of reading the same chain
head; the unique `seq` is the backstop if they ever did. Each event's hash is
sha256(prev_hash + canonical content), so editing, deleting or reordering any event breaks the chain,
and `AuditHead` (updated in the same transaction) exposes a truncated tail.

The chain is unkeyed and its head lives in the same database: someone who can write the file can delete
the tail and move the head back, or edit an event and recompute every hash after it. Only a copy of a
head kept elsewhere detects that. So each committed head is appended to `REVIEW_ANCHOR_FILE` when set
(an append-only file outside the database, one `seq hash` line per head), the exported change record
carries the head, and `check_anchor` checks that the store still extends an anchored head.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, SQLModel, select

from lib.store.columns import utcnow
from lib.store.entities import AuditEvent, AuditHead

GENESIS_HASH = "0" * 64
ANCHOR_ENV = "REVIEW_ANCHOR_FILE"
_PENDING_HEAD = "audit_pending_head"  # session.info key: the head to anchor once the transaction commits
EVENT_KINDS = ("dataset_imported", "policy_created", "run_started", "run_finished", "comparison_loaded",
               "verdict_computed", "decision_signed", "comment_added", "key_registered", "owner_set",
               "judge_run_finished", "canary_checked", "monitor_point", "monitor_alert", "monitor_baseline_set",
               "refusal_labelled",
               "settings_changed", "log_imported", "credentials_scrubbed")


@dataclass(frozen=True)
class Problem:
    """One broken record found by verification: which record, and what is wrong with it."""

    record: str
    message: str

    def __str__(self) -> str:
        return f"{self.record}: {self.message}"


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "item"):  # numpy scalars in reports
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed or signed: sorted keys, no whitespace, UTF-8 text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def sha256_hex(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def iso_now() -> str:
    return utcnow().isoformat()


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were written as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def table_name(model: type[SQLModel]) -> str:
    return str(model.__tablename__)


def raw_rows(conn: Connection, model: type[SQLModel], where: str = "", order: str = "id",
             **params: Any) -> Iterator[dict]:
    """Rows exactly as stored (no type conversion), so a digest covers the stored bytes, even garbage."""
    sql = f'SELECT * FROM "{table_name(model)}" {where} ORDER BY {order}'
    for row in conn.execute(text(sql), params).mappings():
        yield dict(row)


# Columns added to governed tables after rows were already recorded (lib.store.migrate adds them to old
# store files as NULL): a NULL there is left out of the digest, so a row recorded before the column existed
# keeps its digest. A row written with a value is digested with it (setting it to NULL later is an edit).
LATE_COLUMNS = frozenset({"message_version", "chain_seq", "chain_hash"})


def row_digest(row: dict) -> str:
    return sha256_hex(canonical_json({k: v for k, v in row.items() if v is not None or k not in LATE_COLUMNS}))


def event_hash(prev_hash: str, seq: int, at: str, kind: str, actor: str | None, payload_json: str) -> str:
    content = canonical_json({"seq": seq, "at": at, "kind": kind, "actor": actor, "payload": payload_json})
    return sha256_hex(prev_hash + content)


def record_event(session: Session, kind: str, payload: dict, actor: str | None = None) -> AuditEvent:
    """Append one event to the chain inside the caller's write transaction (see module docstring)."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown audit event kind '{kind}'")
    head = session.exec(select(AuditHead).with_for_update()).first()
    seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS_HASH)
    at, payload_json = iso_now(), canonical_json(payload)
    event = AuditEvent(seq=seq, at=at, kind=kind, actor=actor, payload_json=payload_json, prev_hash=prev,
                       hash=event_hash(prev, seq, at, kind, actor, payload_json))
    session.add(event)
    if head is None:
        session.add(AuditHead(id=1, seq=seq, hash=event.hash))
    else:
        head.seq, head.hash = seq, event.hash
        session.add(head)
    session.flush()
    session.info[_PENDING_HEAD] = (seq, event.hash)
    return event


@sa_event.listens_for(OrmSession, "after_commit")
def _anchor_committed_head(session: OrmSession) -> None:
    """Append the committed head to REVIEW_ANCHOR_FILE: after commit, so a rolled-back event is never anchored."""
    head = session.info.pop(_PENDING_HEAD, None)
    path = os.environ.get(ANCHOR_ENV)
    if head is None or not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{head[0]} {head[1]}\n".encode())
    finally:
        os.close(fd)


@sa_event.listens_for(OrmSession, "after_rollback")
def _forget_rolled_back_head(session: OrmSession) -> None:
    session.info.pop(_PENDING_HEAD, None)


def event_hash_at(conn: Connection, seq: int) -> str | None:
    """The stored hash of the event at `seq` (GENESIS_HASH for seq 0, the empty chain), None when absent."""
    if seq == 0:
        return GENESIS_HASH
    row = conn.execute(text("SELECT hash FROM auditevent WHERE seq = :s"), {"s": seq}).first()
    return None if row is None else str(row[0])


def chain_head(conn: Connection) -> dict[str, Any] | None:
    """The stored head as {"seq", "hash"}: what an anchor or an exported record keeps."""
    head = next(raw_rows(conn, AuditHead), None)
    return None if head is None else {"seq": head["seq"], "hash": head["hash"]}


_ANCHOR_LINE = re.compile(r"^\s*(\d+)\s+([0-9a-f]{64})\s*$")


def read_anchors(text: str, source: str) -> list[tuple[int, str]]:
    """Anchored heads from an anchor file (`seq hash` lines) or an exported change record (JSON with
    `chain_head`); ValueError naming `source` when it holds none."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            head = json.loads(stripped).get("chain_head") or {}
            return [(int(head["seq"]), str(head["hash"]))]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ValueError(f"{source}: an exported record without a valid chain_head") from None
    anchors = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _ANCHOR_LINE.match(line)
        if m is None:
            raise ValueError(f"{source}, line {number}: not a 'seq hash' anchor line")
        anchors.append((int(m[1]), m[2]))
    if not anchors:
        raise ValueError(f"{source}: no anchored head in it")
    return anchors


def check_anchor(conn: Connection, anchors: list[tuple[int, str]]) -> list[Problem]:
    """Every anchored (seq, hash) must still be in the chain with that hash: a truncated tail or a chain
    rewritten (re-hashed) at or before an anchored event is detected."""
    hashes = {ev["seq"]: ev["hash"] for ev in list_events(conn)}
    last = max(hashes, default=0)
    problems = []
    for seq, digest in anchors:
        if seq > last:
            problems.append(Problem(f"anchored head seq {seq}", f"the store's chain ends at seq {last}: events "
                                                                "after it were removed (tail truncated)"))
        elif hashes.get(seq) != digest:
            problems.append(Problem(f"anchored head seq {seq}", "the store's event at this seq has another hash: "
                                                                "the chain was rewritten (re-chained or replaced)"))
    return problems


def record_row_event(session: Session, kind: str, row: SQLModel, actor: str | None = None,
                     **summary: Any) -> AuditEvent:
    """Record an event covering a governed row: its payload holds the digest of the row as stored."""
    session.flush()  # the row must be in the store to digest its stored form
    conn = session.connection()
    stored = next(raw_rows(conn, type(row), "WHERE id = :id", id=row.id))
    record = {"table": table_name(type(row)), "id": row.id, "digest": row_digest(stored)}
    return record_event(session, kind, {"record": record, **summary}, actor)


def list_events(conn: Connection, kind: str | None = None) -> list[dict]:
    if kind:
        return list(raw_rows(conn, AuditEvent, "WHERE kind = :kind", order="seq", kind=kind))
    return list(raw_rows(conn, AuditEvent, order="seq"))


def check_chain(conn: Connection) -> list[Problem]:
    """Re-hash every event in seq order; check links, contiguous seq and the head."""
    problems: list[Problem] = []
    prev_hash, expected_seq = GENESIS_HASH, 1
    for ev in list_events(conn):
        name = f"audit event seq {ev['seq']}"
        if ev["seq"] != expected_seq:
            problems.append(Problem(name, f"expected seq {expected_seq}: an event is missing or reordered"))
        if ev["prev_hash"] != prev_hash:
            problems.append(Problem(name, "prev_hash does not match the previous event's hash"))
        recomputed = event_hash(ev["prev_hash"], ev["seq"], ev["at"], ev["kind"], ev["actor"], ev["payload_json"])
        if recomputed != ev["hash"]:
            problems.append(Problem(name, "content does not match its hash (edited)"))
        prev_hash, expected_seq = ev["hash"], expected_seq + 1
    return problems + _check_head(conn, prev_hash, expected_seq - 1)


def _check_head(conn: Connection, last_hash: str, last_seq: int) -> list[Problem]:
    head = next(raw_rows(conn, AuditHead), None)
    if head is None:
        return [Problem("audit head", "missing while events exist")] if last_seq else []
    if head["seq"] != last_seq or head["hash"] != last_hash:
        return [Problem("audit head", f"points at seq {head['seq']} but the chain ends at seq {last_seq}: "
                                      "events were removed from the end, or the head was edited")]
    return []


def event_payload(event: dict) -> dict:
    """An event's payload; a payload that no longer parses counts as empty (the chain check names it)."""
    try:
        payload = json.loads(event["payload_json"])
    except (TypeError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}
