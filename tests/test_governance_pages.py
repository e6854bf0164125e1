"""AppTest: the Policy and Decision pages render and their forms write through the library."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from lib.governance.decisions import set_owner
from lib.governance.entities import Decision, Policy
from lib.governance.policy import create_policy, parse_policy
from lib.governance.signing import create_key
from lib.store.columns import utcnow
from tests.gov_helpers import make_comparison, pairs

ROOT = Path(__file__).resolve().parent.parent


def _page(path: str) -> AppTest:
    return AppTest.from_file(str(ROOT / path), default_timeout=60)


def test_policy_page_renders_empty(db_url) -> None:
    at = _page("pages/policy.py").run()
    assert not at.exception, at.exception
    assert any("No policy yet" in i.value for i in at.info)


def test_policy_page_locks_from_criteria_rows(engine) -> None:
    at = _page("pages/policy.py").run()
    at.text_input(key="policy_name").set_value("strict")
    at.selectbox(key="policy_row_0_metric").set_value("accuracy")
    at.selectbox(key="policy_row_0_key").set_value("max_decrease")
    at.number_input(key="policy_row_0_value").set_value(0.03).run()
    at.button(key="policy_add_row").click().run()
    at.selectbox(key="policy_row_1_metric").set_value("json_valid_rate")
    at.selectbox(key="policy_row_1_key").set_value("min")
    at.number_input(key="policy_row_1_value").set_value(0.9)
    at.checkbox(key="policy_row_1_blocking").uncheck().run()
    at.button(key="policy_create").click().run()
    assert not at.exception, at.exception
    assert at.success and "Locked strict v1" in at.success[0].value, [e.value for e in at.error]
    with Session(engine) as s:
        stored = s.exec(select(Policy)).one()
    spec = parse_policy(stored.content_toml)
    assert {c.name: (c.thresholds, c.blocking) for c in spec.criteria} == {
        "accuracy": ({"max_decrease": 0.03}, True), "json_valid_rate": ({"min": 0.9}, False)}
    assert at.dataframe[0].value["content_hash"].tolist() == [stored.content_hash]


def test_policy_page_locks_a_judge_score_criterion_on_a_dimension(engine) -> None:
    at = _page("pages/policy.py").run()
    at.text_input(key="policy_name").set_value("judged")
    at.selectbox(key="policy_row_0_metric").set_value("judge_score").run()
    assert at.text_input(key="policy_row_0_category").label == "judge dimension"
    at.selectbox(key="policy_row_0_key").set_value("max_decrease")
    at.number_input(key="policy_row_0_value").set_value(0.3).run()
    assert "names its rubric dimension" in at.error[0].value and at.button(key="policy_create").disabled
    at.text_input(key="policy_row_0_category").set_value("accuracy").run()
    at.button(key="policy_create").click().run()
    assert not at.exception and at.success and "Locked judged v1" in at.success[0].value
    with Session(engine) as s:
        [criterion] = parse_policy(s.exec(select(Policy)).one().content_toml).criteria
    assert (criterion.name, criterion.dimension, criterion.thresholds) == (
        "judge_score:accuracy", "accuracy", {"max_decrease": 0.3})


def test_policy_page_upload_and_errors(engine) -> None:
    at = _page("pages/policy.py").run()
    at.text_input(key="policy_name").set_value("uploaded")
    at.radio(key="policy_mode").set_value("TOML file").run()
    bad = b"[criteria.acuracy]\nmin = 0.9\n"
    at.file_uploader(key="policy_upload").set_value(("gate.toml", bad, "application/toml")).run()
    at.button(key="policy_create").click().run()
    assert not at.exception and "acuracy" in at.error[0].value and "Nothing was locked" in at.error[0].value
    good = b"[criteria.refusal_rate]\nmax_increase = 0.02\n"
    at.file_uploader(key="policy_upload").set_value(("gate.toml", good, "application/toml")).run()
    at.button(key="policy_create").click().run()
    assert at.success and "uploaded v1" in at.success[0].value
    with Session(engine) as s:
        assert s.exec(select(Policy.source)).one() == "gate.toml"


def test_decision_page_without_comparison(db_url) -> None:
    at = _page("pages/decision.py").run()
    assert not at.exception and "No comparison yet" in at.info[0].value


def test_decision_page_without_policy(engine) -> None:
    make_comparison(engine, "cmp", pairs(5))
    at = _page("pages/decision.py").run()
    assert not at.exception, at.exception
    assert any("No policy yet" in i.value for i in at.info)


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


def test_decision_page_shows_the_verdict_and_signs(ready) -> None:
    at = _page("pages/decision.py").run()
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
    assert at.success[-1].value.startswith("Intact")


def test_decision_page_non_owner_cannot_sign_but_comments(ready) -> None:
    at = _page("pages/decision.py").run()
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
    at = _page("pages/decision.py").run()
    assert not at.exception, at.exception
    assert at.warning and at.warning[0].value.startswith("POST-HOC")
# (Rendering through the router, with every other page: tests/test_pages.py.)

