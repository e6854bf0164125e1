"""AppTest: the Decision page: keys, ownership, signing, safeguards."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from lib.governance.decisions import set_owner
from lib.governance.entities import Decision, SigningKey, SystemOwner
from lib.governance.policy import create_policy
from lib.governance.signing import create_key
from lib.governance.verify import verify_store
from lib.store.columns import utcnow
from tests.gov_helpers import make_comparison, pairs
from tests.page_helpers import PASS, alone, routed


def _decisions(engine) -> list[Decision]:
    with Session(engine) as s:
        return list(s.exec(select(Decision)).all())


def _fill(at: AppTest, rationale: str, conditions: str) -> None:
    at.text_area(key="decision_rationale").set_value(rationale)
    at.text_area(key="decision_conditions").set_value(conditions)
    at.text_input(key="decision_passphrase").input("correct horse")


@pytest.fixture
def no_go(engine, tmp_path, monkeypatch):
    """A comparison whose accuracy drops (NO-GO under a pre-registered policy), owned by alice."""
    monkeypatch.setenv("REVIEW_KEY_DIR", str(tmp_path / "keys"))
    create_policy(engine, "strict", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    make_comparison(engine, "cmp", pairs(60, n_worse=40), outputs_at=utcnow() + timedelta(minutes=1))
    create_key(engine, "alice", "correct horse", tmp_path / "keys")
    set_owner(engine, "default", "alice")
    return engine


def _count(engine, model) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


@pytest.fixture
def ready(engine, tmp_path, monkeypatch):
    """A comparison owned by alice (key in REVIEW_KEY_DIR) and a policy locked before its outputs."""
    monkeypatch.setenv("REVIEW_KEY_DIR", str(tmp_path / "keys"))
    create_policy(engine, "strict", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    make_comparison(engine, "cmp", pairs(300), outputs_at=utcnow() + timedelta(minutes=1))
    create_key(engine, "alice", "correct horse", tmp_path / "keys")
    set_owner(engine, "default", "alice")
    return engine


def _sign(at: AppTest, passphrase: str) -> AppTest:
    at.radio(key="decision_choice").set_value("go")
    at.text_area(key="decision_rationale").set_value("non-inferior")
    at.text_area(key="decision_conditions").set_value("canary 5%")
    at.text_input(key="decision_passphrase").input(passphrase)
    return at.button(key="decision_sign").click().run()


def test_decision_has_no_default_and_an_override_needs_a_confirmation(no_go) -> None:
    at = routed("pages/decision.py")
    assert at.subheader[0].value == "Verdict: NO-GO"
    assert at.radio(key="decision_choice").value is None  # not "go"
    _fill(at, "ship it", "")
    at.button(key="decision_sign").click().run()
    assert "Choose go or no-go" in at.error[0].value and not _decisions(no_go)

    at.radio(key="decision_choice").set_value("go").run()
    assert any("against the verdict (NO-GO)" in w.value for w in at.warning)
    _fill(at, "ship it", "")
    at.button(key="decision_sign").click().run()
    assert not at.exception, at.exception
    assert any("Nothing was signed" in e.value and "against the NO-GO verdict" in e.value for e in at.error)
    assert not _decisions(no_go)

    at.checkbox(key="decision_confirm_against").check()
    _fill(at, "ship it", "")
    at.button(key="decision_sign").click().run()
    assert not at.exception, at.exception
    assert at.success and "Signed decision 1: go by alice" in at.success[0].value
    [row] = _decisions(no_go)
    assert (row.decision, row.verdict) == ("go", "no-go")


def test_decision_following_the_verdict_needs_no_confirmation(no_go) -> None:
    at = routed("pages/decision.py")
    at.radio(key="decision_choice").set_value("no-go").run()
    assert not at.warning or not any("against the verdict" in w.value for w in at.warning)
    _fill(at, "accuracy dropped", "")
    at.button(key="decision_sign").click().run()
    assert at.success and [d.decision for d in _decisions(no_go)] == ["no-go"]


def test_decision_comments_keep_line_breaks_and_history_shows_the_signed_words(no_go) -> None:
    at = routed("pages/decision.py")
    at.text_input(key="decision_comment_author").set_value("bob")
    at.text_area(key="decision_comment_text").set_value("first line\nsecond *line*\n    <b>indented</b>")
    at.button(key="decision_comment_add").click().run()
    assert not at.exception, at.exception
    [comment] = [m.value for m in at.markdown if "first line" in m.value]
    assert comment.endswith("first line  \nsecond \\*line\\*  \n\\<b\\>indented\\</b\\>")

    at.radio(key="decision_choice").set_value("no-go").run()
    _fill(at, "Accuracy fell 40 pp.\nSee http://wiki.local/x_y", "rerun after\nthe fix")
    at.button(key="decision_sign").click().run()
    assert at.success, [e.value for e in at.error]
    history = next(df.value for df in at.dataframe if "integrity" in df.value.columns)
    assert history["rationale"].tolist() == ["Accuracy fell 40 pp.\nSee http://wiki.local/x_y"]
    assert history["conditions"].tolist() == ["rerun after\nthe fix"]
    [details] = [e for e in at.expander if e.label.startswith("Decision 1: no-go")]
    shown = [m.value for m in details.markdown]
    assert shown == ["**Rationale**  \nAccuracy fell 40 pp\\.  \nSee http\\://wiki\\.local/x\\_y",
                     "**Conditions**  \nrerun after  \nthe fix"]
    [bound] = [c.value for c in details.caption]
    assert bound.startswith("Binds the audit chain head at signing: seq ")


def test_decision_page_creates_a_key_with_the_cli_rules(worse, tmp_path) -> None:
    at = alone("pages/decision.py").run()
    assert not at.exception, at.exception

    def create(name: str, first: str, second: str) -> AppTest:
        at.text_input(key="decision_key_name").input(name)
        at.text_input(key="decision_key_pass").input(first)
        at.text_input(key="decision_key_pass2").input(second)
        return at.button(key="decision_key_create").click().run()

    assert at.text_input(key="decision_key_pass").proto.type == at.text_input(key="decision_key_pass").proto.PASSWORD
    create("alice", PASS, "correct horsE")
    assert "the two passphrases differ" in at.error[-1].value and _count(worse, SigningKey) == 0
    create("alice", "short", "short")
    assert "at least 8 characters" in at.error[-1].value and _count(worse, SigningKey) == 0
    create("alice", PASS, PASS)
    assert not at.exception, at.exception
    assert any(s.value.startswith("Created key alice · fingerprint sha256") for s in at.success)
    pem = (tmp_path / "keys" / "alice.pem").read_text()
    assert "ENCRYPTED PRIVATE KEY" in pem
    page_text = " ".join(str(e.value) for e in [*at.markdown, *at.success, *at.caption, *at.info])
    assert pem.splitlines()[1] not in page_text  # the private key is never shown


def test_a_failed_signature_keeps_the_typed_rationale(worse, tmp_path) -> None:
    keys = tmp_path / "keys"
    create_key(worse, "alice", PASS, keys)
    at = alone("pages/decision.py").run()
    at.selectbox(key="decision_claim_owner").set_value("alice")
    at.button(key="decision_claim").click().run()
    at.radio(key="decision_choice").set_value("no-go")
    at.text_area(key="decision_rationale").set_value("accuracy fell by 14 pp")
    at.text_input(key="decision_passphrase").input("wrong passphrase")
    at.button(key="decision_sign").click().run()
    assert "Nothing was signed" in at.error[-1].value and _count(worse, Decision) == 0
    assert at.text_area(key="decision_rationale").value == "accuracy fell by 14 pp"  # not lost to the error
    at.text_input(key="decision_passphrase").input(PASS)
    at.button(key="decision_sign").click().run()
    assert _count(worse, Decision) == 1 and any(s.value.startswith("Signed decision 1") for s in at.success)
    at.text_input(key="decision_key_name").input("bo")  # the name is kept after a short passphrase
    at.text_input(key="decision_key_pass").input("short")
    at.text_input(key="decision_key_pass2").input("short")
    at.button(key="decision_key_create").click().run()
    assert "at least 8 characters" in at.error[-1].value and at.text_input(key="decision_key_name").value == "bo"


def test_decision_page_claims_transfers_and_signs_once(worse, tmp_path) -> None:
    keys = tmp_path / "keys"
    create_key(worse, "alice", PASS, keys)
    create_key(worse, "bob", PASS, keys)
    at = alone("pages/decision.py").run()
    assert any("has no owner yet" in i.value for i in at.info)
    at.selectbox(key="decision_claim_owner").set_value("alice")
    at.button(key="decision_claim").click().run()
    assert not at.exception, at.exception
    assert any("alice now owns system search (claim)" in s.value.replace("\\", "") for s in at.success)
    # sign no-go (with the NO-GO verdict): the form clears and shows the decision; a second submit does not sign
    for attempt in range(2):
        at.radio(key="decision_choice").set_value("no-go")
        at.text_area(key="decision_rationale").set_value("accuracy fell")
        at.text_input(key="decision_passphrase").input(PASS)
        at.button(key="decision_sign").click().run()
        assert not at.exception, at.exception
        if attempt == 0:
            assert any(s.value == "Signed decision 1: no-go by alice." for s in at.success)
        else:
            assert any(i.value.startswith("Already signed as decision #1") for i in at.info)
    assert _count(worse, Decision) == 1
    assert at.text_area(key="decision_rationale").value == ""  # cleared after the success
    # a double click: the second submit arrives with the cleared form; the signed decision stays in view
    at.button(key="decision_sign").click().run()
    assert any(i.value.startswith("Already signed as decision #1") for i in at.info)
    assert _count(worse, Decision) == 1
    # transfer: a wrong passphrase changes nothing, alice's passphrase moves it to bob
    at.selectbox(key="decision_transfer_to").set_value("bob")
    at.text_input(key="decision_transfer_pass").input("wrong passphrase")
    at.button(key="decision_transfer").click().run()
    assert "Ownership unchanged" in at.error[-1].value and _count(worse, SystemOwner) == 1
    at.selectbox(key="decision_transfer_to").set_value("bob")
    at.text_input(key="decision_transfer_pass").input(PASS)
    at.button(key="decision_transfer").click().run()
    assert any("bob now owns system search (transfer)" in s.value.replace("\\", "") for s in at.success)
    assert verify_store(worse).ok


def test_decision_page_without_comparison(db_url) -> None:
    at = alone("pages/decision.py").run()
    assert not at.exception and "No comparison yet" in at.info[0].value


def test_decision_page_without_policy(engine) -> None:
    make_comparison(engine, "cmp", pairs(5))
    at = alone("pages/decision.py").run()
    assert not at.exception, at.exception
    assert any("No policy yet" in i.value for i in at.info)


def test_decision_page_shows_the_verdict_and_signs(ready) -> None:
    at = alone("pages/decision.py").run()
    assert not at.exception, at.exception
    assert at.subheader[0].value == "Verdict: GO" and not at.warning
    verdict_table = at.dataframe[0].value
    assert verdict_table[["criterion", "threshold", "result"]].values.tolist() == [["accuracy", "max_decrease", "pass"]]
    passphrase = at.text_input(key="decision_passphrase").proto
    assert passphrase.type == passphrase.PASSWORD
    assert at.text_input(key="decision_signer").value == "alice"
    _sign(at, "wrong")
    assert not at.exception and "Nothing was signed" in at.error[0].value and "wrong passphrase" in at.error[0].value
    with Session(ready) as s:
        assert s.exec(select(Decision)).first() is None
    _sign(at, "correct horse")
    assert not at.exception and at.success and "Signed decision 1: go by alice" in at.success[0].value
    with Session(ready) as s:
        row = s.exec(select(Decision)).one()
    assert (row.conditions, row.verdict, row.post_hoc) == ("canary 5%", "go", False)
    history = at.dataframe[1].value
    assert history["integrity"].tolist() == ["intact"]
    assert [b.proto.label for b in at.get("download_button")] == ["Change record (Markdown)", "Change record (JSON)"]
    at.button(key="decision_verify").click().run()
    assert at.success[-1].value.startswith("Intact") and "0 refusal labels checked" in at.success[-1].value


def test_decision_page_non_owner_cannot_sign_but_comments(ready) -> None:
    at = alone("pages/decision.py").run()
    at.text_input(key="decision_signer").set_value("mallory")
    _sign(at, "correct horse")
    assert "does not own system 'default'" in at.error[0].value
    at.text_input(key="decision_comment_author").set_value("mallory")
    at.text_area(key="decision_comment_text").set_value("<script>alert(1)</script> **bold**")
    at.button(key="decision_comment_add").click().run()
    assert not at.exception, at.exception
    assert any("\\<script\\>" in m.value and "\\*\\*bold\\*\\*" in m.value for m in at.markdown)


def test_decision_page_marks_post_hoc(engine, tmp_path) -> None:
    make_comparison(engine, "cmp", pairs(30))  # outputs an hour old
    create_policy(engine, "late", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    at = alone("pages/decision.py").run()
    assert not at.exception, at.exception
    assert at.warning and at.warning[0].value.startswith("POST-HOC")
