"""The hash chain and the governed rows: every edit or deletion is named by verify."""
from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from lib.governance.decisions import add_comment, set_owner
from lib.governance.entities import Policy, ReviewComment, SigningKey, SystemOwner
from lib.governance.policy import create_policy
from lib.governance.signing import create_key
from lib.governance.verify import verify_store
from lib.store.audit import GENESIS_HASH, event_hash, record_event
from lib.store.engine import session_scope
from lib.store.entities import AuditEvent, AuditHead
from tests.gov_helpers import cli, make_comparison, pairs, perturb_sql, tamper

POLICY = b"[criteria.accuracy]\nmax_decrease = 0.02\n"


@pytest.fixture
def trail(engine, tmp_path):
    """One of each governed row, each through the trail: policy, key, owner, comment, plus a bare event."""
    make_comparison(engine, "cmp", pairs(4))
    create_policy(engine, "strict", POLICY)
    create_key(engine, "alice", "correct horse", tmp_path / "keys")
    set_owner(engine, "default", "alice")
    add_comment(engine, "cmp", "bob", "hello")
    with session_scope(engine) as s:
        record_event(s, "run_finished", {"run_id": 2})
    assert verify_store(engine).ok
    return engine


def _names(engine) -> list[str]:
    return [str(p) for p in verify_store(engine).problems]


def test_events_form_a_chain(trail) -> None:
    with Session(trail) as s:
        events = s.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()
        head = s.get(AuditHead, 1)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [e.kind for e in events] == ["policy_created", "key_registered", "owner_set", "comment_added",
                                        "run_finished"]
    prev = GENESIS_HASH
    for e in events:
        assert e.prev_hash == prev and e.hash == event_hash(prev, e.seq, e.at, e.kind, e.actor, e.payload_json)
        prev = e.hash
    assert (head.seq, head.hash) == (5, prev)
    assert events[3].actor == "bob" and '"digest":' in events[3].payload_json


def test_unknown_kind_and_rolled_back_transaction_leave_no_event(engine) -> None:
    with pytest.raises(ValueError), session_scope(engine) as s:
        record_event(s, "coffee_break", {})
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        record_event(s, "run_started", {"run_id": 1})
        raise RuntimeError("the caller's write failed")
    with Session(engine) as s:
        assert s.exec(select(func.count()).select_from(AuditEvent)).one() == 0
    assert verify_store(engine).ok


@pytest.mark.parametrize("column", list(AuditEvent.__table__.columns.keys()))
def test_editing_any_event_field_is_detected(trail, db_url, column: str) -> None:
    assert tamper(db_url, perturb_sql("auditevent", column, "WHERE seq = 3")) == 1
    names = _names(trail)
    assert any(n.startswith("audit event seq 3") or n.startswith(f"audit event seq {3 + 1_000_003}")
               for n in names), names


@pytest.mark.parametrize("seq, expected", [(3, "audit event seq 4"), (5, "audit head")])
def test_deleting_an_event_is_detected(trail, db_url, seq: int, expected: str) -> None:
    tamper(db_url, "DELETE FROM auditevent WHERE seq = ?", seq)
    assert any(n.startswith(expected) for n in _names(trail))


def test_editing_or_deleting_the_head_is_detected(trail, db_url) -> None:
    tamper(db_url, perturb_sql("audithead", "hash", ""))
    assert any(n.startswith("audit head") for n in _names(trail))
    tamper(db_url, "DELETE FROM audithead")
    assert any("audit head: missing" in n for n in _names(trail))


GOVERNED = [(Policy, "policy 1"), (SigningKey, "signing key 1"), (SystemOwner, "owner assignment 1"),
            (ReviewComment, "comment 1")]


@pytest.mark.parametrize("model, column, record", [(m, c, r) for m, r in GOVERNED for c in m.__table__.columns.keys()])
def test_editing_any_governed_field_is_detected(trail, db_url, model, column: str, record: str) -> None:
    table = model.__tablename__
    assert tamper(db_url, perturb_sql(table, column, "WHERE id = 1")) == 1
    names = _names(trail)
    moved = f"{record.rsplit(' ', 1)[0]} {1 + 1_000_003}"  # an edited id: the old one is gone, a new one appears
    assert any(n.startswith(record) for n in names), names
    assert column != "id" or any(n.startswith(moved) for n in names), names


@pytest.mark.parametrize("model, record", GOVERNED)
def test_deleting_a_governed_row_is_detected(trail, db_url, model, record: str) -> None:
    tamper(db_url, f'DELETE FROM "{model.__tablename__}" WHERE id = 1')
    assert any(n.startswith(record) and "deleted" in n for n in _names(trail)), _names(trail)


def test_a_row_inserted_outside_the_trail_is_named(trail, db_url) -> None:
    tamper(db_url, "INSERT INTO systemowner (system, owner, created_at) VALUES ('default', 'mallory', '2025-01-01')")
    assert any(n.startswith("owner assignment 2") and "not in the audit trail" in n for n in _names(trail))


@pytest.mark.slow
def test_verify_cli_exit_codes_and_json(trail, db_url, tmp_path) -> None:
    ok = cli(db_url, tmp_path, "verify")
    assert ok.returncode == 0 and ok.stdout.startswith("INTACT"), ok.stdout + ok.stderr
    tamper(db_url, "UPDATE policy SET content_toml = replace(content_toml, '0.02', '0.2')")
    broken = cli(db_url, tmp_path, "verify")
    assert broken.returncode == 1 and "broken: policy 1 ('strict' v1)" in broken.stdout
    as_json = cli(db_url, tmp_path, "verify", "--json")
    import json

    data = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and data["ok"] is False
    assert {"record": "policy 1 ('strict' v1)", "message": "content does not match its locked hash"} in data["problems"]
