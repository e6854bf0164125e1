"""System owners: who may sign decisions for a system, and the one way that changes.

An owner changes only by a **claim** when the system has none, or by a **transfer** signed with the
current owner's key (Ed25519, the key the store holds for that name). Each change is a new `SystemOwner`
row (history kept) with an `owner_set` audit event; a transfer's event carries its signature, so `verify`
re-checks that every change in the trail followed this rule (`check_owner_changes`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from lib.errors import ReviewInputError
from lib.governance.entities import SigningKey, SystemOwner
from lib.governance.signing import load_private_key, registered_key, verify_signature
from lib.store.audit import Problem, canonical_json, event_payload, iso_now, raw_rows, record_row_event
from lib.store.engine import session_scope

CLAIM, TRANSFER = "claim", "transfer"


class OwnerChangeError(ReviewInputError):
    """An owner change that is neither a claim of an unowned system nor a transfer by its owner."""


@dataclass(frozen=True)
class OwnerChange:
    system: str
    owner: str
    previous: str | None
    how: str  # claim | transfer | unchanged


def _required(value: str | None, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise OwnerChangeError(f"{what} must not be empty")
    return value


def current_owner_row(session: Session, system: str) -> SystemOwner | None:
    query = select(SystemOwner).where(SystemOwner.system == system).order_by(col(SystemOwner.id).desc())
    return session.exec(query).first()


def transfer_message(system: str, previous: str, owner: str, after_id: int, fingerprint: str, at: str) -> bytes:
    """The signed bytes of a transfer: bound to the assignment it replaces, so it cannot be replayed later."""
    return canonical_json({"action": TRANSFER, "system": system, "from": previous, "to": owner,
                           "after_assignment": after_id, "key_fingerprint": fingerprint, "at": at}).encode()


def claim_system(engine: Engine, system: str, owner: str, actor: str | None = None) -> OwnerChange:
    """Make `owner` the owner of an unowned system; refused when it has one (a transfer is the only way)."""
    system, owner = _required(system, "system"), _required(owner, "owner")
    with session_scope(engine) as session:
        current = current_owner_row(session, system)
        if current is not None:
            if current.owner == owner:
                return OwnerChange(system, owner, owner, "unchanged")
            raise OwnerChangeError(f"system '{system}' is owned by '{current.owner}': only they can transfer it "
                                   f"(`./review system transfer {system} --to {owner}` with their passphrase)")
        registered_key(session, owner)  # an owner without a key could never sign nor transfer: the system stuck
        row = SystemOwner(system=system, owner=owner)
        session.add(row)
        record_row_event(session, "owner_set", row, actor or owner, system=system, owner=owner, how=CLAIM)
    return OwnerChange(system, owner, None, CLAIM)


def transfer_system(engine: Engine, system: str, new_owner: str, passphrase: str,
                    key_directory: Path | None = None) -> OwnerChange:
    """Move ownership to `new_owner`, signed with the current owner's key (unlocked with `passphrase`)."""
    system, new_owner = _required(system, "system"), _required(new_owner, "new owner")
    with Session(engine) as session:
        current = current_owner_row(session, system)
        if current is None:
            raise OwnerChangeError(f"system '{system}' has no owner to transfer from: claim it instead")
        if current.owner == new_owner:
            return OwnerChange(system, new_owner, new_owner, "unchanged")
        key = registered_key(session, current.owner)
        registered_key(session, new_owner)  # checked before the passphrase is: the new owner must be able to sign
    private = load_private_key(key, passphrase, key_directory)
    with session_scope(engine) as session:
        latest = current_owner_row(session, system)
        if latest is None or latest.id != current.id:  # someone else moved it meanwhile
            raise OwnerChangeError(f"the owner of system '{system}' changed meanwhile: reload and try again")
        at, after_id = iso_now(), int(current.id or 0)  # a stored row: its id is set
        signature = private.sign(transfer_message(system, current.owner, new_owner, after_id, key.fingerprint, at))
        row = SystemOwner(system=system, owner=new_owner)
        session.add(row)
        record_row_event(session, "owner_set", row, current.owner, system=system, owner=new_owner, how=TRANSFER,
                         previous_owner=current.owner, after_assignment=after_id,
                         key_fingerprint=key.fingerprint, signed_at=at, signature=signature.hex())
    return OwnerChange(system, new_owner, current.owner, TRANSFER)


def set_owner(engine: Engine, system: str, owner: str, actor: str | None = None,
              passphrase: str | None = None, key_directory: Path | None = None) -> OwnerChange:
    """A claim when the system has no owner; otherwise a transfer, which needs the current owner's passphrase."""
    with Session(engine) as session:
        current = current_owner_row(session, _required(system, "system"))
    if current is None or current.owner == (owner or "").strip():
        return claim_system(engine, system, owner, actor)
    if passphrase is None:
        raise OwnerChangeError(f"system '{system}' is owned by '{current.owner}': an owner changes only by a "
                               f"transfer signed with the owner's key (`./review system transfer {system} "
                               f"--to {owner}`)")
    return transfer_system(engine, system, owner, passphrase, key_directory)


# ---- verification ---------------------------------------------------------------------------------
def _transfer_problem(conn: Connection, payload: dict[str, Any], previous: tuple[Any, str]) -> str | None:
    """Why a recorded transfer does not hold (None when it does)."""
    after_id, prev_owner = previous
    if payload.get("previous_owner") != prev_owner or payload.get("after_assignment") != after_id:
        return f"transfer names '{payload.get('previous_owner')}' as owner, but the owner then was '{prev_owner}'"
    key = next(raw_rows(conn, SigningKey, "WHERE fingerprint = :fp", fp=payload.get("key_fingerprint")), None)
    if key is None or key["name"] != prev_owner:
        return f"transfer is not signed with the key registered for '{prev_owner}'"
    message = transfer_message(str(payload.get("system")), prev_owner, str(payload.get("owner")), after_id,
                               str(payload.get("key_fingerprint")), str(payload.get("signed_at")))
    if not verify_signature(key["public_key"], str(payload.get("signature")), message):
        return "transfer signature does not verify"
    return None


def check_owner_changes(conn: Connection, events: list[dict]) -> list[Problem]:
    """Every owner change in the trail, in order: a claim only of an unowned system, a transfer only when
    signed by the owner it replaces. (Row-vs-event digests are checked with the other governed rows.)"""
    owners: dict[str, tuple[Any, str]] = {}  # system -> (assignment id as recorded, owner)
    problems = []
    for ev in events:
        if ev["kind"] != "owner_set":
            continue
        payload = event_payload(ev)
        system, owner = str(payload.get("system")), str(payload.get("owner"))
        row_id = (payload.get("record") or {}).get("id")
        previous = owners.get(system)
        how = payload.get("how")  # absent: written before owner changes were signed (a claim or an override)
        if previous is None:
            why = None if how in (CLAIM, None) else "transfer of a system that had no owner"
        elif how == TRANSFER:
            why = _transfer_problem(conn, payload, previous)
        else:
            why = f"ownership moved from '{previous[1]}' without a transfer signed by their key"
        if why:
            problems.append(Problem(f"owner assignment {row_id} (system '{system}', audit seq {ev['seq']})", why))
        owners[system] = (row_id, owner)
    return problems
