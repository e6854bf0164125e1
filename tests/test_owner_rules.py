"""Owner rules (a claim when there is none, a transfer signed by the current owner's key; verify re-checks
each change) and idempotent signing (the same decision on the same evidence is stored once)."""
from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from lib.governance.decisions import DecisionRequest, NotOwnerError, decide, sign_decision
from lib.governance.entities import Decision, SystemOwner
from lib.governance.owners import OwnerChangeError, claim_system, set_owner, transfer_system
from lib.governance.policy import create_policy
from lib.governance.signing import SigningKeyError, create_key
from lib.governance.verify import verify_store
from lib.store.audit import record_row_event
from lib.store.engine import session_scope
from tests.gov_helpers import cli, make_comparison, pairs, tamper

PASS = "correct horse"


def _count(engine, model) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


@pytest.fixture
def owned(engine, tmp_path):
    make_comparison(engine, "cmp", pairs(20), system="search")
    create_policy(engine, "strict", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    for name in ("alice", "bob"):
        create_key(engine, name, PASS, tmp_path)
    claim_system(engine, "search", "alice")
    return engine


def test_claim_only_when_unowned(owned) -> None:
    with pytest.raises(OwnerChangeError, match="owned by 'alice'"):
        claim_system(owned, "search", "bob")
    with pytest.raises(OwnerChangeError, match="transfer signed with the owner's key"):
        set_owner(owned, "search", "bob")
    assert claim_system(owned, "search", "alice").how == "unchanged"
    assert _count(owned, SystemOwner) == 1


def test_only_an_owner_with_a_key_can_be_named(engine, owned, tmp_path) -> None:
    """Claiming or transferring to a name without a key would leave a system nobody can sign for or move."""
    make_comparison(engine, "other", pairs(5), system="billing")
    with pytest.raises(SigningKeyError, match="no key registered for 'carol'"):
        claim_system(engine, "billing", "carol")
    with pytest.raises(SigningKeyError, match="no key registered for 'carol'"):
        transfer_system(owned, "search", "carol", PASS, tmp_path)
    assert _count(owned, SystemOwner) == 1


def test_transfer_needs_the_current_owners_key(owned, tmp_path) -> None:
    with pytest.raises(SigningKeyError, match="wrong passphrase"):
        transfer_system(owned, "search", "bob", "not the passphrase", tmp_path)
    assert _count(owned, SystemOwner) == 1
    change = transfer_system(owned, "search", "bob", PASS, tmp_path)
    assert (change.how, change.previous, change.owner) == ("transfer", "alice", "bob")
    with pytest.raises(NotOwnerError):
        decide(owned, DecisionRequest("cmp", "go", "alice", "ship", policy="strict"), PASS, tmp_path)
    decide(owned, DecisionRequest("cmp", "go", "bob", "ship", policy="strict"), PASS, tmp_path)
    assert verify_store(owned).ok


def test_verify_flags_an_owner_change_outside_the_rules(owned) -> None:
    with session_scope(owned) as session:  # the old unsigned set-owner, as a store written before the rule
        row = SystemOwner(system="search", owner="mallory")
        session.add(row)
        record_row_event(session, "owner_set", row, "mallory", system="search", owner="mallory")
    problems = [str(p) for p in verify_store(owned).problems]
    assert len(problems) == 1 and "moved from 'alice' without a transfer signed by their key" in problems[0]


def test_verify_flags_a_transfer_with_a_forged_signature(owned, db_url, tmp_path) -> None:
    transfer_system(owned, "search", "bob", PASS, tmp_path)
    assert verify_store(owned).ok
    # forge: the signed payload now names carol (the chain is re-hashed by nobody: both checks fire)
    tamper(db_url, "UPDATE auditevent SET payload_json = replace(payload_json, '\"owner\":\"bob\"', "
                   "'\"owner\":\"carol\"') WHERE kind = 'owner_set'")
    messages = " ".join(str(p) for p in verify_store(owned).problems)
    assert "transfer signature does not verify" in messages


@pytest.mark.slow
def test_cli_set_owner_refuses_a_change_claim_and_transfer_work(engine, db_url, tmp_path) -> None:
    keys = tmp_path / "keys"
    make_comparison(engine, "cmp", pairs(5))
    assert cli(db_url, keys, "keys", "create", "alice").returncode == 0
    assert cli(db_url, keys, "keys", "create", "bob").returncode == 0
    claimed = cli(db_url, keys, "system", "set-owner", "default", "--owner", "alice")
    assert claimed.returncode == 0 and "alice now owns system default (claimed)" in claimed.stdout
    refused = cli(db_url, keys, "system", "set-owner", "default", "--owner", "bob")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: system 'default' is owned by 'alice'")
    again = cli(db_url, keys, "system", "claim", "default", "--owner", "bob")
    assert again.returncode == 2 and "owned by 'alice'" in again.stderr
    wrong = cli(db_url, keys, "system", "transfer", "default", "--to", "bob", passphrase="wrong passphrase")
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr
    moved = cli(db_url, keys, "system", "transfer", "default", "--to", "bob")
    assert moved.returncode == 0 and "bob now owns system default (transferred by alice, signed)" in moved.stdout
    verified = cli(db_url, keys, "verify")
    assert verified.returncode == 0 and verified.stdout.startswith("INTACT")


def test_signing_twice_stores_one_decision(owned, tmp_path) -> None:
    req = DecisionRequest("cmp", "no-go", "alice", "accuracy fell", policy="strict")
    first = sign_decision(owned, req, PASS, tmp_path)
    second = sign_decision(owned, req, PASS, tmp_path)
    assert first.created and not second.created and second.decision.id == first.decision.id
    assert _count(owned, Decision) == 1
    other = sign_decision(owned, DecisionRequest("cmp", "go", "alice", "accuracy fell", policy="strict"), PASS,
                          tmp_path)
    assert other.created and _count(owned, Decision) == 2  # another decision is another decision


@pytest.mark.slow
def test_cli_decide_twice_says_already_signed(engine, db_url, tmp_path) -> None:
    keys = tmp_path / "keys"
    make_comparison(engine, "cmp", pairs(20))
    create_policy(engine, "strict", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    assert cli(db_url, keys, "keys", "create", "alice").returncode == 0
    assert cli(db_url, keys, "system", "claim", "default", "--owner", "alice").returncode == 0
    args = ["decide", "cmp", "--decision", "no-go", "--signer", "alice", "--rationale", "no", "--policy", "strict"]
    first = cli(db_url, keys, *args)
    assert first.returncode == 0 and first.stdout.startswith("Signed decision 1: no-go")
    second = cli(db_url, keys, *args)
    assert second.returncode == 0 and second.stdout.startswith("Already signed as decision #1")
    assert _count(engine, Decision) == 1
