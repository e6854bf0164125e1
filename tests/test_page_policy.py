"""AppTest: the Policy page: locking from rows, uploads, hints and units."""
from __future__ import annotations

import pytest
from sqlmodel import Session, select

from lib.governance.entities import Policy
from lib.governance.policy import parse_policy
from tests.page_helpers import alone, routed


def test_policy_judge_score_shows_a_hint_not_an_error_until_the_dimension_is_typed(engine) -> None:
    at = routed("pages/policy.py")
    at.text_input(key="policy_name").set_value("judged")
    at.selectbox(key="policy_row_0_metric").set_value("judge_score").run()
    assert not at.error, [e.value for e in at.error]
    assert any("Type the judge dimension" in i.value for i in at.info)
    assert at.button(key="policy_create").disabled
    at.text_input(key="policy_row_0_category").set_value("accuracy").run()
    assert not at.error and not any("judge dimension" in i.value for i in at.info)
    assert not at.button(key="policy_create").disabled


def test_policy_other_rows_errors_stay_red_while_a_dimension_is_awaited(engine) -> None:
    at = routed("pages/policy.py")
    at.selectbox(key="policy_row_0_metric").set_value("accuracy")
    at.number_input(key="policy_row_0_value").set_value(1.5).run()  # a rate above 1
    assert at.error and "fraction" in at.error[0].value
    at.button(key="policy_add_row").click().run()
    at.selectbox(key="policy_row_1_metric").set_value("judge_score").run()
    assert at.error and "fraction" in at.error[0].value  # the real error is still shown


@pytest.mark.parametrize("metric, words", [("accuracy", "2 percentage points"), ("judge_score", "1-5"),
                                           ("latency_s_mean", "Seconds"), ("cost_usd_total", "US dollars")])
def test_policy_value_help_says_the_units(engine, metric: str, words: str) -> None:
    at = routed("pages/policy.py")
    at.selectbox(key="policy_row_0_metric").set_value(metric).run()
    assert words in at.number_input(key="policy_row_0_value").help


def test_policy_page_renders_empty(db_url) -> None:
    at = alone("pages/policy.py").run()
    assert not at.exception, at.exception
    assert any("No policy yet" in i.value for i in at.info)


def test_policy_page_locks_from_criteria_rows(engine) -> None:
    at = alone("pages/policy.py").run()
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
    at = alone("pages/policy.py").run()
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
    at = alone("pages/policy.py").run()
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
