"""A signed decision binds the audit chain head at signing (message version 2), and a store written before
that keeps working: its columns are added on open, its decisions verify as before and say they bind no head."""
from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

import pytest
from gov_helpers import cli, db_path, make_comparison, pairs
from sqlmodel import Session, select

from lib.governance.decisions import DecisionRequest, decide, set_owner, signed_message
from lib.governance.entities import Decision
from lib.governance.export import change_record, record_markdown
from lib.governance.policy import create_policy
from lib.governance.signing import create_key, load_private_key, registered_key
from lib.governance.verify import UNBOUND, verify_store
from lib.store.audit import chain_head
from lib.store.columns import utcnow
from lib.store.engine import _engine, get_engine
from tests.test_tamper import _rechain

PASSPHRASE = "correct horse"
CHAIN_COLUMNS = ("message_version", "chain_seq", "chain_hash")


@pytest.fixture
def signed(engine, db_url, tmp_path) -> dict:
    create_policy(engine, "strict", "alpha = 0.05\n[criteria.accuracy]\nmax_decrease = 0.02\n")
    create_key(engine, "alice", PASSPHRASE, tmp_path / "keys")
    set_owner(engine, "default", "alice")
    make_comparison(engine, "cmp", pairs(40), outputs_at=utcnow() + timedelta(minutes=1))
    with engine.connect() as conn:
        head = chain_head(conn)
    row = decide(engine, DecisionRequest("cmp", "go", "alice", "ok", None, "strict"), PASSPHRASE, tmp_path / "keys")
    return {"engine": engine, "url": db_url, "keys": tmp_path / "keys", "head": head, "row": row}


def test_the_signed_message_binds_the_head_before_the_decision(signed) -> None:
    row, head = signed["row"], signed["head"]
    assert head["seq"] == 3 and (row.message_version, row.chain_seq, row.chain_hash) == (2, 3, head["hash"])
    fields = row.model_dump()
    assert signed_message(fields) != signed_message({**fields, "chain_seq": 2})
    assert b'"chain_hash":"' + head["hash"].encode() in signed_message(fields)
    result = verify_store(signed["engine"], anchors=[])
    assert result.ok and result.decisions == [{"id": 1, "comparison": "cmp", "chain_head": head}]
    assert result.to_dict()["decisions"][0]["chain_head"] == head


def test_the_export_shows_the_bound_head(signed) -> None:
    record = change_record(signed["engine"], "cmp")
    assert record["decision"]["chain_head"] == signed["head"] and record["decision"]["integrity"] == "intact"
    assert f"audit chain head at signing: seq 3, sha256 `{signed['head']['hash']}`" in record_markdown(record)


def _as_signed_before_binding(store: dict) -> None:
    """Rewrite the store as the previous version wrote it: the decision signed with message version 1 (same
    key), its table without the chain columns, the audit trail digesting that row."""
    with Session(store["engine"]) as s:
        private = load_private_key(registered_key(s, "alice"), PASSPHRASE, store["keys"])
    store["engine"].dispose()
    conn = sqlite3.connect(db_path(store["url"]))
    conn.row_factory = sqlite3.Row
    old = {k: v for k, v in dict(conn.execute("SELECT * FROM decision").fetchone()).items() if k not in CHAIN_COLUMNS}
    conn.execute("UPDATE decision SET signature = ?", (private.sign(signed_message(old)).hex(),))
    for column in CHAIN_COLUMNS:
        conn.execute(f"ALTER TABLE decision DROP COLUMN {column}")
    conn.commit()
    conn.close()
    _rechain(store["url"])


def test_a_store_from_before_keeps_working_and_its_decision_verifies_unbound(signed) -> None:
    _as_signed_before_binding(signed)
    columns = {r[1] for r in sqlite3.connect(db_path(signed["url"])).execute("PRAGMA table_info(decision)")}
    assert not columns & set(CHAIN_COLUMNS)
    _engine.cache_clear()  # open the file again, as a new process would
    engine = get_engine(signed["url"])
    columns = {r[1] for r in sqlite3.connect(db_path(signed["url"])).execute("PRAGMA table_info(decision)")}
    assert set(CHAIN_COLUMNS) <= columns  # added on open
    result = verify_store(engine, anchors=[])
    assert result.ok, result.problems
    assert result.decisions == [{"id": 1, "comparison": "cmp", "chain_head": None, "note": UNBOUND}]
    assert change_record(engine, "cmp")["decision"]["chain_head"] is None
    # A new decision in the old store binds the head; both verify.
    new = decide(engine, DecisionRequest("cmp", "no-go", "alice", "changed my mind", None, "strict"), PASSPHRASE,
                 signed["keys"])
    assert new.message_version == 2 and new.chain_seq == 4
    result = verify_store(engine, anchors=[])
    assert result.ok and [d["chain_head"] is not None for d in result.decisions] == [False, True]
    with Session(engine) as s:
        assert [d.message_version for d in s.exec(select(Decision).order_by(Decision.id))] == [None, 2]


def test_an_old_decision_passed_off_as_signed_before_binding_fails(signed) -> None:
    """Nulling a version-2 decision's chain columns changes its message: the signature no longer verifies."""
    from gov_helpers import tamper

    tamper(signed["url"], "UPDATE decision SET message_version = NULL, chain_seq = NULL, chain_hash = NULL")
    _rechain(signed["url"])  # even with the trail's digest made to match
    signed["engine"].dispose()
    problems = [str(p) for p in verify_store(signed["engine"], anchors=[]).problems]
    assert problems == ["decision 1 (comparison 'cmp'): signature does not verify: a signed field or the "
                        "signature was changed"]


@pytest.mark.slow
def test_verify_prints_each_decisions_bound_head(signed) -> None:
    text = cli(signed["url"], signed["keys"], "verify")
    assert text.returncode == 0, text.stderr
    assert f"decision 1 (comparison 'cmp'): binds audit chain head seq 3 ({signed['head']['hash'][:16]})" in text.stdout
    as_json = json.loads(cli(signed["url"], signed["keys"], "verify", "--json").stdout)
    assert as_json["decisions"] == [{"id": 1, "comparison": "cmp", "chain_head": signed["head"]}]
    assert set(as_json) == {"ok", "counts", "problems", "decisions"}
