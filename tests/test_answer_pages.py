"""AppTest: the Overview states the answer (headline, verdict, decision, evidence colours, the broken-decision
banner) and the Decision page does sign-off in the browser (key, claim, transfer, sign once)."""
from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import func
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from lib.governance.decisions import DecisionRequest, decide
from lib.governance.entities import Decision, SigningKey, SystemOwner
from lib.governance.owners import claim_system
from lib.governance.policy import create_policy
from lib.governance.signing import create_key
from lib.governance.verify import verify_store
from tests.gov_helpers import make_comparison, pairs, tamper

ROOT = Path(__file__).resolve().parent.parent
PASS = "correct horse"


def _page(path: str) -> AppTest:
    return AppTest.from_file(str(ROOT / path), default_timeout=90)


def _count(engine, model) -> int:
    with Session(engine) as s:
        return s.exec(select(func.count()).select_from(model)).one()


@pytest.fixture
def worse(engine, tmp_path, monkeypatch):
    """Accuracy falls 25 pp (20 regressions in 80 pairs); a policy named after the system is in force."""
    monkeypatch.setenv("REVIEW_KEY_DIR", str(tmp_path / "keys"))
    make_comparison(engine, "cmp", pairs(60, 20, category="arithmetic"), system="search")
    create_policy(engine, "search", b"[criteria.accuracy]\nmax_decrease = 0.02\n")
    return engine


def test_overview_states_the_answer_first(worse) -> None:
    at = _page("pages/overview.py").run()
    assert not at.exception, at.exception
    texts = [m.value for m in at.markdown]
    headline = next(t for t in texts if t.startswith("#### "))
    assert headline.startswith("#### Accuracy fell 25\\.0 pp \\(95% CI ")
    assert "20 regressions, all arithmetic" in headline
    assert any(t.startswith("No significant change in Refusal rate") for t in texts)
    assert any(t.startswith("**Verdict: NO-GO** under policy search v1 · fails: accuracy") for t in texts)
    assert not at.error  # a NO-GO is an answer, not an error: the box is coloured, the banner stays for errors
    assert any("after the candidate's outputs were stored" in c.value for c in at.caption)  # the plain sentence
    assert any("No decision signed yet" in c.value for c in at.caption)
    assert at.button(key="overview_go_sign").proto.label == "Sign a decision"
    assert at.get("plotly_chart"), "the forest plot"


def test_overview_cards_are_coloured_by_evidence(worse) -> None:
    at = _page("pages/overview.py").run()
    assert not at.exception, at.exception
    assert len(at.metric) == len([m for m in at.metric if m.label])  # every card rendered
    words = [c.value for c in at.caption]
    assert words.count("significantly worse") == 1  # accuracy
    assert "no evidence either way" in words
    style = next(m.value for m in at.markdown if "st-key-card-" in m.value)
    assert 'st-key-card-worse-' in style and "#c62828" in style and 'st-key-card-no-evidence-' in style


def test_overview_without_policy_offers_to_lock_one(engine) -> None:
    make_comparison(engine, "cmp", pairs(30))
    at = _page("pages/overview.py").run()
    assert not at.exception, at.exception
    assert any(i.value.startswith("No policy locked") for i in at.info)
    assert at.button(key="overview_go_policy").proto.label == "Lock a policy"
    create_policy(engine, "other", b"[criteria.accuracy]\nmax_decrease = 0.02\n")  # not named after the system
    st.cache_data.clear()
    at = _page("pages/overview.py").run()
    assert any(i.value.startswith("No policy is in force for this comparison's system") for i in at.info)
    assert at.button(key="overview_go_choose").proto.label == "Choose a policy"


def test_overview_empty_store_offers_buttons(db_url) -> None:
    at = _page("pages/overview.py").run()
    assert not at.exception, at.exception
    assert {at.button(key=k).proto.label for k in ("overview_go_load", "overview_go_run")} == {
        "Load a recorded comparison", "Run a comparison"}
    assert not any("./review" in i.value or "python" in i.value for i in at.info)


def test_signed_decision_shows_on_overview_and_a_broken_one_is_a_red_banner(worse, db_url, tmp_path) -> None:
    create_key(worse, "alice", PASS, tmp_path / "keys")
    claim_system(worse, "search", "alice")
    decide(worse, DecisionRequest("cmp", "no-go", "alice", "accuracy fell", policy="search"), PASS, tmp_path / "keys")
    at = _page("pages/overview.py").run()
    assert any(m.value.startswith("**Decision #1: NO-GO** by alice") and "intact" in m.value for m in at.markdown)
    assert not at.error
    tamper(db_url, "UPDATE decision SET rationale = 'looked fine'")
    st.cache_data.clear()  # the pages re-verify every READ_TTL_S; a test does not wait for that
    for page in ("pages/overview.py", "pages/decision.py"):
        at = _page(page).run()
        assert not at.exception, at.exception
        banner = at.error[0].value
        assert banner.startswith("**Decision #1 fails verification: do not rely on it.**"), page
        assert "signature does not verify" in banner


def test_decision_page_creates_a_key_with_the_cli_rules(worse, tmp_path) -> None:
    at = _page("pages/decision.py").run()
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


def test_decision_page_claims_transfers_and_signs_once(worse, tmp_path) -> None:
    keys = tmp_path / "keys"
    create_key(worse, "alice", PASS, keys)
    create_key(worse, "bob", PASS, keys)
    at = _page("pages/decision.py").run()
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
