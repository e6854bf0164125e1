"""Signing keys (file mode, encryption, registration), owners, comments, and refused decisions."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func
from sqlmodel import Session, select

from lib.governance.decisions import DecisionRequest, NotOwnerError, add_comment, decide, list_comments, set_owner
from lib.governance.entities import Decision, ReviewComment, SigningKey
from lib.governance.owners import transfer_system
from lib.governance.signing import SigningKeyError, create_key
from lib.store.audit import sha256_hex
from lib.store.entities import AuditEvent
from tests.gov_helpers import cli, make_comparison, pairs

PASS = "correct horse"


def _count(engine, model) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


@pytest.mark.slow
def test_keys_create_writes_an_encrypted_0600_file_and_registers_the_public_key(engine, db_url, tmp_path) -> None:
    keys = tmp_path / "keys"
    done = cli(db_url, keys, "keys", "create", "alice")
    assert done.returncode == 0, done.stderr
    pem_path = keys / "alice.pem"
    assert stat.S_IMODE(pem_path.stat().st_mode) == 0o600
    pem = pem_path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # encrypted: unusable without the passphrase
        serialization.load_pem_private_key(pem, None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, b"wrong")
    private = serialization.load_pem_private_key(pem, PASS.encode())
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with Session(engine) as s:
        row = s.exec(select(SigningKey)).one()
        event = s.exec(select(AuditEvent).where(AuditEvent.kind == "key_registered")).one()
    assert (row.name, row.public_key, row.fingerprint) == ("alice", raw.hex(), sha256_hex(raw))
    assert row.fingerprint in done.stdout and row.fingerprint in event.payload_json
    assert b"PRIVATE KEY" not in Path(db_url.split("///", 1)[1]).read_bytes()  # never in the store


@pytest.mark.slow
def test_existing_key_name_exits_2_and_keeps_the_key(engine, db_url, tmp_path) -> None:
    keys = tmp_path / "keys"
    assert cli(db_url, keys, "keys", "create", "alice").returncode == 0
    before = (keys / "alice.pem").read_bytes()
    again = cli(db_url, keys, "keys", "create", "alice", passphrase="other passphrase")
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "already registered" in again.stderr
    assert (keys / "alice.pem").read_bytes() == before and _count(engine, SigningKey) == 1


def test_key_file_present_but_unregistered_is_refused(engine, tmp_path) -> None:
    (tmp_path / "bob.pem").write_text("not mine")
    with pytest.raises(SigningKeyError, match="already exists"):
        create_key(engine, "bob", PASS, tmp_path)
    assert (tmp_path / "bob.pem").read_text() == "not mine" and _count(engine, SigningKey) == 0


@pytest.mark.parametrize("name", ["../evil", "", "a/b", ".hidden"])
def test_key_names_are_safe_file_names(engine, tmp_path, name: str) -> None:
    with pytest.raises(SigningKeyError):
        create_key(engine, name, PASS, tmp_path)


@pytest.mark.slow
def test_prompted_passphrase_asked_twice(engine, db_url, tmp_path) -> None:
    keys = tmp_path / "keys"
    mismatch = cli(db_url, keys, "keys", "create", "carol", passphrase=None, stdin="one\ntwo\n")
    assert mismatch.returncode != 0 and not (keys / "carol.pem").exists()
    done = cli(db_url, keys, "keys", "create", "carol", passphrase=None, stdin="s3cret-pass\ns3cret-pass\n")
    assert done.returncode == 0, done.stderr
    serialization.load_pem_private_key((keys / "carol.pem").read_bytes(), b"s3cret-pass")


@pytest.mark.slow
def test_owner_and_comment_commands(engine, db_url, tmp_path) -> None:
    make_comparison(engine, "cmp", pairs(5), system="search")
    keyless = cli(db_url, tmp_path, "system", "set-owner", "search", "--owner", "alice")
    assert keyless.returncode == 2 and "no key registered for 'alice'" in keyless.stderr  # never a stuck system
    assert cli(db_url, tmp_path, "keys", "create", "alice").returncode == 0
    assert cli(db_url, tmp_path, "system", "set-owner", "search", "--owner", "alice").returncode == 0
    done = cli(db_url, tmp_path, "comment", "cmp", "--author", "bob", "--text", "looks fine to me")
    assert done.returncode == 0, done.stderr
    assert [(c["author"], c["text"]) for c in list_comments(engine, "cmp")] == [("bob", "looks fine to me")]
    assert cli(db_url, tmp_path, "comment", "nope", "--author", "bob", "--text", "x").returncode == 2
    assert cli(db_url, tmp_path, "comment", "cmp", "--author", " ", "--text", "x").returncode == 2


def _refused(engine, req: DecisionRequest, passphrase: str, key_dir: Path, error: type[Exception]) -> None:
    events = _count(engine, AuditEvent)
    with pytest.raises(error):
        decide(engine, req, passphrase, key_dir)
    assert _count(engine, Decision) == 0 and _count(engine, AuditEvent) == events


def test_only_the_owner_may_sign_others_may_comment(engine, tmp_path) -> None:
    make_comparison(engine, "cmp", pairs(5), system="search")
    create_key(engine, "alice", PASS, tmp_path)
    create_key(engine, "bob", PASS, tmp_path)
    req = DecisionRequest("cmp", "go", "bob", "ship it", policy="any")
    _refused(engine, req, PASS, tmp_path, NotOwnerError)  # no owner yet
    set_owner(engine, "search", "alice")
    _refused(engine, req, PASS, tmp_path, NotOwnerError)
    add_comment(engine, "cmp", "bob", "I'd ship it")
    assert _count(engine, ReviewComment) == 1
    transfer_system(engine, "search", "bob", PASS, tmp_path)  # a signed transfer moves it: the latest counts
    _refused(engine, DecisionRequest("cmp", "go", "alice", "ship", policy="any"), PASS, tmp_path, NotOwnerError)


@pytest.mark.slow
def test_wrong_passphrase_missing_key_bad_decision_write_nothing(engine, db_url, tmp_path) -> None:
    make_comparison(engine, "cmp", pairs(5))
    keys = tmp_path / "keys"
    assert cli(db_url, keys, "keys", "create", "alice").returncode == 0
    assert cli(db_url, keys, "system", "set-owner", "default", "--owner", "alice").returncode == 0
    events = _count(engine, AuditEvent)
    base = ["decide", "cmp", "--signer", "alice", "--rationale", "fine", "--policy", "strict"]
    wrong = cli(db_url, keys, *base, "--decision", "go", passphrase="nope")
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr
    moved = cli(db_url, tmp_path / "elsewhere", *base, "--decision", "go")
    assert moved.returncode == 2 and "no private key" in moved.stderr
    bad = cli(db_url, keys, *base, "--decision", "maybe")
    assert bad.returncode == 2 and "go, no-go" in bad.stderr
    unregistered = cli(db_url, keys, "decide", "cmp", "--decision", "go", "--signer", "zoe", "--rationale", "x",
                       "--policy", "strict")
    assert unregistered.returncode == 2
    assert _count(engine, Decision) == 0 and _count(engine, AuditEvent) == events
