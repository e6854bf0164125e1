"""The 33 tamperings of the issue's attack run, one by one, each with the exact outcome `verify` gives.

The attacker writes the SQLite file directly (tests.gov_helpers.tamper), knows every algorithm and can
recompute the unkeyed hash chain (`_rechain`). A signed decision binds the chain head at signing, so
deleting or re-chaining any event *before* it is detected without an anchor (the attacker would have to
re-sign). What stays undetectable without an anchor (docs/security.md): the tail after the last decision
(a truncated tail, an edited and re-chained decision event), and a replaced public key with a decision
re-signed by the attacker's key and the whole chain re-computed. With an anchor (REVIEW_ANCHOR_FILE, or
the exported change record) every one of them is detected. The 33rd, a swapped check cache before
signing, is `test_swapped_check_cache_fools_the_report_but_not_verify`.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gov_helpers import db_path, make_comparison, pairs, tamper

from lib.governance.decisions import DecisionRequest, add_comment, decide, set_owner, signed_message
from lib.governance.export import change_record
from lib.governance.gate import compute_verdict, record_verdict
from lib.governance.policy import create_policy
from lib.governance.signing import create_key, fingerprint, raw_public
from lib.governance.verify import verify_store
from lib.review.labels import set_label
from lib.review.report import build_report
from lib.store.audit import GENESIS_HASH, event_hash, read_anchors, row_digest
from lib.store.columns import utcnow

POLICY = "alpha = 0.05\n[criteria.accuracy]\nmax_decrease = 0.02\n"
PASSPHRASE = "correct horse"
LABELLED_OUTPUT = 4  # the candidate's answer to case 1 (outputs alternate baseline, candidate)
N_EVENTS = 7  # policy, key, owner, comment, label, verdict, decision


@pytest.fixture
def store(engine, db_url, tmp_path, monkeypatch) -> dict:
    """A policy, alice's key and ownership, a 60-pair comparison, a comment, a refusal label, a gate verdict
    and alice's signed GO (bound to the head after the verdict, seq 6); every head anchored."""
    anchor = tmp_path / "anchor.log"
    monkeypatch.setenv("REVIEW_ANCHOR_FILE", str(anchor))
    create_policy(engine, "strict", POLICY)
    create_key(engine, "alice", PASSPHRASE, tmp_path / "keys")
    set_owner(engine, "default", "alice")
    make_comparison(engine, "cmp", pairs(60), outputs_at=utcnow() + timedelta(minutes=1))
    add_comment(engine, "cmp", "bob", "looks fine")
    set_label(engine, LABELLED_OUTPUT, True, "bob")
    record_verdict(engine, compute_verdict(engine, "cmp", "strict")[0], "bob")
    decide(engine, DecisionRequest("cmp", "go", "alice", "ok", None, "strict"), PASSPHRASE, tmp_path / "keys")
    return {"engine": engine, "url": db_url, "anchor": anchor, "keys": tmp_path / "keys",
            "record": json.dumps(change_record(engine, "cmp"))}


def _problems(engine, anchors: list | None = None) -> list[str]:
    engine.dispose()
    return [f"{p.record}: {p.message}" for p in verify_store(engine, anchors).problems]


def _rechain(db_url: str) -> None:
    """What an attacker with the algorithm does after editing: re-digest every governed row an event
    records, recompute every event hash in order and move the head to the end."""
    conn = sqlite3.connect(db_path(db_url))
    conn.row_factory = sqlite3.Row
    prev, last = GENESIS_HASH, (0, GENESIS_HASH)
    for ev in conn.execute("SELECT * FROM auditevent ORDER BY seq").fetchall():
        payload = json.loads(ev["payload_json"])
        rec = payload.get("record")
        if isinstance(rec, dict):
            row = conn.execute(f'SELECT * FROM "{rec["table"]}" WHERE id = ?', (rec["id"],)).fetchone()
            if row is not None:
                rec["digest"] = row_digest(dict(row))
        payload_json = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest = event_hash(prev, ev["seq"], ev["at"], ev["kind"], ev["actor"], payload_json)
        conn.execute("UPDATE auditevent SET payload_json = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                     (payload_json, prev, digest, ev["seq"]))
        prev, last = digest, (ev["seq"], digest)
    conn.execute("UPDATE audithead SET seq = ?, hash = ?", last)
    conn.commit()
    conn.close()


def _truncate_tail(db_url: str) -> None:
    """Delete the latest decision and every event from its signing on, and move the head back."""
    tamper(db_url, "DELETE FROM decision")
    first = sqlite3.connect(db_path(db_url)).execute(
        "SELECT min(seq) FROM auditevent WHERE kind = 'decision_signed'").fetchone()[0]
    tamper(db_url, "DELETE FROM auditevent WHERE seq >= ?", first)
    seq, digest = sqlite3.connect(db_path(db_url)).execute(
        "SELECT seq, hash FROM auditevent ORDER BY seq DESC LIMIT 1").fetchone()
    tamper(db_url, "UPDATE audithead SET seq = ?, hash = ?", seq, digest)


def _swap_check_cache(db_url: str) -> None:
    """The candidate's stored check segment replaced by the baseline's (keyed by the candidate's outputs)."""
    conn = sqlite3.connect(db_path(db_url))
    rows = conn.execute("SELECT id, run_id, data FROM checksegment WHERE other_run_id IS NULL ORDER BY run_id")
    (_b_id, _b_run, b_blob), (c_id, _c_run, c_blob) = rows.fetchall()[:2]
    base, cand = (pa.ipc.open_stream(blob).read_all() for blob in (b_blob, c_blob))
    swapped = base.set_column(base.schema.get_field_index("output_id"), "output_id", cand.column("output_id"))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, swapped.schema) as writer:
        writer.write_table(swapped)
    conn.execute("UPDATE checksegment SET data = ? WHERE id = ?", (sink.getvalue().to_pybytes(), c_id))
    conn.commit()
    conn.close()


def _sql(*statements: str) -> Callable[[str], None]:
    def run(db_url: str) -> None:
        for statement in statements:
            tamper(db_url, statement)
    return run


def _then_rechain(edit: Callable[[str], None]) -> Callable[[str], None]:
    def run(db_url: str) -> None:
        edit(db_url)
        _rechain(db_url)
    return run


def _replace_key_and_resign(db_url: str) -> None:
    """Mallory's public key in place of alice's, the decision turned into a NO-GO re-signed with it, bound
    to the re-chained head: everything a verifier could compare is recomputed, except an anchor."""
    mallory = Ed25519PrivateKey.generate()
    tamper(db_url, "UPDATE signingkey SET public_key = ?, fingerprint = ? WHERE name = 'alice'",
           raw_public(mallory.public_key()).hex(), fingerprint(mallory.public_key()))
    _rechain(db_url)
    conn = sqlite3.connect(db_path(db_url))
    conn.row_factory = sqlite3.Row
    conn.execute("UPDATE decision SET decision = 'no-go', rationale = 'never', key_fingerprint = ?, chain_hash = "
                 "(SELECT hash FROM auditevent WHERE seq = decision.chain_seq)", (fingerprint(mallory.public_key()),))
    row = dict(conn.execute("SELECT * FROM decision").fetchone())
    conn.execute("UPDATE decision SET signature = ?", (mallory.sign(signed_message(row)).hex(),))
    conn.commit()
    conn.close()
    _rechain(db_url)


def _edit_event(kind: str, path: str, value: object) -> Callable[[str], None]:
    return _sql(f"UPDATE auditevent SET payload_json = json_set(payload_json, '{path}', json('{json.dumps(value)}')) "
                f"WHERE kind = '{kind}'")


ANCHOR_ONLY = None  # undetectable without an anchor (docs/security.md); detected with one
REWRITTEN = "the audit chain it was signed on was rewritten"
# (id, tampering, a fragment of what verify without an anchor reports, or ANCHOR_ONLY)
TAMPERINGS: list[tuple[str, Callable[[str], None], str | None]] = [
    # the signed decision row
    ("edit-decision-rationale", _sql("UPDATE decision SET rationale = 'changed'"), "signature does not verify"),
    ("edit-decision-settings", _sql("UPDATE decision SET report_json = json_set(report_json, '$.settings.match', "
                                    "'contains')"), "signature does not verify"),
    ("edit-decision-chain-head", _sql("UPDATE decision SET chain_seq = chain_seq - 1, chain_hash = (SELECT hash "
                                      "FROM auditevent WHERE seq = decision.chain_seq - 1)"),
     "signature does not verify"),
    ("downgrade-decision-to-unbound", _sql("UPDATE decision SET message_version = NULL, chain_seq = NULL, "
                                           "chain_hash = NULL"), "signature does not verify"),
    ("delete-decision", _sql("DELETE FROM decision"), "deleted (recorded by audit event"),
    # the evidence it rests on
    ("edit-output-text", _sql("UPDATE output SET text = 'wrong' WHERE id = 40"), "evidence changed"),
    ("swap-output-texts", _sql("UPDATE output SET text = CASE id WHEN 1 THEN (SELECT text FROM output WHERE id = 3) "
                               "ELSE (SELECT text FROM output WHERE id = 1) END WHERE id IN (1, 3)"),
     "evidence changed"),
    ("edit-case-expected", _sql("UPDATE \"case\" SET expected = 'x' WHERE id = 3"), "evidence changed"),
    ("edit-model-config", _sql("UPDATE modelconfig SET model = 'other' WHERE id = 2"), "evidence changed"),
    ("repoint-candidate-run", _sql("UPDATE comparison SET candidate_run_id = baseline_run_id"),
     "its comparison was repointed: candidate run"),
    ("repoint-system", _sql("UPDATE comparison SET system = 'other'"), "its comparison was repointed: system"),
    # governed rows against their audit events
    ("edit-comment", _sql("UPDATE reviewcomment SET text = 'rejected'"), "stored fields differ"),
    ("delete-comment", _sql("DELETE FROM reviewcomment"), "deleted (recorded by audit event"),
    ("edit-owner", _sql("UPDATE systemowner SET owner = 'mallory'"), "stored fields differ"),
    ("edit-policy-content", _sql("UPDATE policy SET content_toml = content_toml || '#'"), "does not match its locked"),
    ("edit-policy-content-and-hash", _sql("UPDATE policy SET content_toml = content_toml || '#', content_hash = "
                                          "'0' || substr(content_hash, 2)"), "no longer has the signed hash"),
    ("replace-public-key", _sql("UPDATE signingkey SET public_key = '00' || substr(public_key, 3)"),
     "signing key 1 ('alice'): stored fields differ"),
    ("edit-label", _sql("UPDATE refusal_label SET refused = 0"), "refusal label 1 (output 4): stored fields differ"),
    ("delete-label", _sql("DELETE FROM refusal_label"), "refusal label 1: deleted"),
    ("insert-label-outside-trail", _sql("INSERT INTO refusal_label (output_id, refused, labelled_by, created_at) "
                                        "VALUES (6, 1, 'mallory', '2026-01-01 00:00:00')"),
     "refusal label 2 (output 6): not in the audit trail"),
    # the chain itself
    ("edit-verdict-event", _edit_event("verdict_computed", "$.verdict", "no-go"), "(edited)"),
    ("delete-middle-event", _sql("DELETE FROM auditevent WHERE seq = 2"), "an event is missing or reordered"),
    ("reorder-events", _sql("UPDATE auditevent SET seq = -1 WHERE seq = 2", "UPDATE auditevent SET seq = 2 "
                            "WHERE seq = 3", "UPDATE auditevent SET seq = 3 WHERE seq = -1"), "prev_hash"),
    ("head-moved-back", _sql("UPDATE audithead SET seq = seq - 1"), "audit head"),
    # re-chained before the decision: its bound head no longer matches
    ("rechain-after-comment-edit", _then_rechain(_sql("UPDATE reviewcomment SET text = 'rejected'")), REWRITTEN),
    ("rechain-after-comment-delete", _then_rechain(_sql("DELETE FROM reviewcomment",
                                                        "DELETE FROM auditevent WHERE kind = 'comment_added'")),
     REWRITTEN),
    ("rechain-after-owner-change", _then_rechain(_sql("UPDATE systemowner SET owner = 'mallory'")), REWRITTEN),
    ("rechain-after-verdict-event-edit", _then_rechain(_edit_event("verdict_computed", "$.verdict", "no-go")),
     REWRITTEN),
    ("rechain-after-label-edit", _then_rechain(_sql("UPDATE refusal_label SET refused = 0", "UPDATE auditevent SET "
                                                    "payload_json = json_set(payload_json, '$.refused', json('false'))"
                                                    " WHERE kind = 'refusal_labelled'")), REWRITTEN),
    # after the last decision's bound head, or with the signing key replaced: only an anchor sees these
    ("replace-key-resign-rechain", _replace_key_and_resign, ANCHOR_ONLY),
    ("rechain-after-decision-event-edit", _then_rechain(_edit_event("decision_signed", "$.decision", "no-go")),
     ANCHOR_ONLY),
    ("truncated-tail", _truncate_tail, ANCHOR_ONLY),
]
_UNCHAINED_DELETE_FIX = {"rechain-after-comment-delete"}  # seq must stay contiguous after a deletion


def test_the_suite_holds_the_issues_33_tamperings() -> None:
    ids = [t[0] for t in TAMPERINGS]
    assert len(ids) == len(set(ids)) == 32  # + the swapped check cache (its own test below)
    assert sum(t[2] is ANCHOR_ONLY for t in TAMPERINGS) == 3


@pytest.mark.parametrize(("tampering", "fragment"), [t[1:] for t in TAMPERINGS], ids=[t[0] for t in TAMPERINGS])
def test_tampering_outcome_without_and_with_an_anchor(store, tampering, fragment, request) -> None:
    engine, db_url = store["engine"], store["url"]
    assert _problems(engine) == []
    anchored = read_anchors(store["anchor"].read_text(), "anchor")
    assert anchored[-1][0] == N_EVENTS  # every committed head appended
    tampering(db_url)
    if request.node.callspec.id in _UNCHAINED_DELETE_FIX:
        _renumber(db_url)
    found = _problems(engine, anchors=[])
    if fragment is ANCHOR_ONLY:
        assert found == []  # undetectable without an anchor (docs/security.md)
    else:
        assert any(fragment in p for p in found), found
    with_anchor = _problems(engine, anchors=anchored)
    assert with_anchor, "an anchored store must detect every tampering"
    if fragment is ANCHOR_ONLY:
        assert any("anchored head" in p for p in with_anchor), with_anchor
        from_export = read_anchors(store["record"], "record.json")
        assert any("anchored head" in p for p in _problems(engine, anchors=from_export))


def _renumber(db_url: str) -> None:
    conn = sqlite3.connect(db_path(db_url))
    for new, (old,) in enumerate(conn.execute("SELECT seq FROM auditevent ORDER BY seq").fetchall(), start=1):
        conn.execute("UPDATE auditevent SET seq = ? WHERE seq = ?", (new, old))
    conn.commit()
    conn.close()
    _rechain(db_url)


def test_swapped_check_cache_fools_the_report_but_not_verify(store) -> None:
    """The attack of the issue: the report reads the swapped cache; verify recomputes from the outputs."""
    engine, db_url = store["engine"], store["url"]
    make_comparison(engine, "worse", pairs(300, n_worse=50), outputs_at=utcnow() + timedelta(minutes=1))
    before = build_report(engine, "worse")["metrics"]["accuracy"]
    assert (before["baseline"], round(before["candidate"], 3)) == (1.0, 0.857)
    conn = sqlite3.connect(db_path(db_url))
    c_run = conn.execute("SELECT candidate_run_id FROM comparison WHERE name = 'worse'").fetchone()[0]
    b_run = conn.execute("SELECT baseline_run_id FROM comparison WHERE name = 'worse'").fetchone()[0]
    conn.execute("DELETE FROM checksegment WHERE run_id IN (1, 2)")  # leave only 'worse' segments to swap
    conn.commit()
    conn.close()
    assert (b_run, c_run) == (3, 4)
    _swap_check_cache(db_url)
    engine.dispose()
    fooled = build_report(engine, "worse")["metrics"]["accuracy"]
    assert (fooled["baseline"], fooled["candidate"]) == (1.0, 1.0)  # the cache lies
    set_owner(engine, "default", "alice")
    decide(engine, DecisionRequest("worse", "go", "alice", "ok", None, "strict"), PASSPHRASE, store["keys"])
    problems = _problems(engine)
    assert any("its report does not match the outputs: accuracy" in p and "recomputed 1.0 -> 0.857" in p
               for p in problems), problems


def test_anchor_file_and_exported_record_agree_with_an_intact_store(store, db_url: str) -> None:
    engine = store["engine"]
    anchored = read_anchors(store["anchor"].read_text(), "anchor")
    exported = read_anchors(store["record"], "record.json")
    assert exported[0] == anchored[-1]
    assert _problems(engine, anchors=anchored) == [] and _problems(engine, anchors=exported) == []
    assert _problems(engine) == []  # REVIEW_ANCHOR_FILE is read by default


@pytest.mark.slow
def test_cli_verify_anchor_detects_truncation(store, db_url: str, tmp_path: Path) -> None:
    from gov_helpers import cli

    record = tmp_path / "record.json"
    record.write_text(store["record"])
    _truncate_tail(db_url)
    plain = cli(db_url, store["keys"], "verify", "--json")
    # REVIEW_ANCHOR_FILE is in the environment (monkeypatched): the default anchor already catches it.
    assert plain.returncode == 1 and "tail truncated" in plain.stdout
    anchored = cli(db_url, store["keys"], "verify", "--anchor", str(record))
    assert anchored.returncode == 1 and "anchored head seq" in anchored.stdout and "tail truncated" in anchored.stdout
    bad = cli(db_url, store["keys"], "verify", "--anchor", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1


def test_labels_before_signing_count_and_labels_after_do_not_break_the_decision(store) -> None:
    """The signed report counted the label set before signing (verify recomputes it with that label: before,
    an honest labelled decision failed with 'refusal_rate differ'); a label added after signing is not part of
    what was signed, so the decision stays intact, and the new label is checked against its own event."""
    engine = store["engine"]
    assert _problems(engine, anchors=[]) == []
    set_label(engine, 6, True, "carol")  # after the decision: another refusal on the candidate
    result = verify_store(engine, anchors=[])
    assert result.ok, result.problems
    assert result.counts["refusal labels"] == 2
    assert build_report(engine, "cmp")["metrics"]["refusal_rate"]["candidate"] == pytest.approx(2 / 60)
