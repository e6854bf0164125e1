"""The traps a new user hit loading a production log (issue "Triage after complaints"): each loads without a
silent wrong result."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from lib.data.loaders import LoadMapping, load_recorded
from lib.errors import RecordedLoadError
from lib.review.browse import BrowseQuery, select_cases
from lib.review.checked import checked_frame
from lib.review.report import build_report
from lib.review.settings import stored_settings
from lib.store.entities import AuditEvent, Case, Output

GPT4O, GPT41 = "gpt-4o-2024-08-06", "gpt-4.1-2025-04-14"


def log_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def label_log(n: int = 30, stamp: str = "07/{day:02d}/2023, 21:28:41") -> bytes:
    """request_id, model, response, timestamp, expected: short labels inside long answers, no prompt column."""
    rows = []
    for i in range(n):
        for model in (GPT4O, GPT41):
            answer = "yes" if (i % 2 or model == GPT41) else "no"
            rows.append({"request_id": f"r{i}", "model": model, "timestamp": stamp.format(day=i % 28 + 1),
                         "response": f"Having weighed the evidence carefully, my answer is [{answer}].",
                         "expected": "yes"})
    return log_csv(rows)


SIDES = LoadMapping(baseline=GPT4O, candidate=GPT41)


def test_a_log_without_an_input_column_loads_and_says_what_is_skipped(engine) -> None:
    result = load_recorded(engine, label_log(), "prod.csv", "noinput", None, SIDES)
    assert result.n_pairs == 30
    assert any("no input column" in w and "input drift" in w for w in result.warnings)
    with Session(engine) as session:
        assert {c.input_text for c in session.exec(select(Case)).all()} == {""}


def test_an_input_token_limit_on_a_log_without_inputs_is_refused(engine) -> None:
    from lib.review.settings import ReviewSettings

    mapping = LoadMapping(baseline=GPT4O, candidate=GPT41, review=ReviewSettings(input_token_limit=100))
    with pytest.raises(RecordedLoadError, match="input token limit cannot be checked"):
        load_recorded(engine, label_log(), "prod.csv", "limit", None, mapping)
    with pytest.raises(RecordedLoadError, match="input token limit cannot be checked"):
        load_recorded(engine, label_log(), "prod.csv", "limit", "shadow", mapping)


def test_a_log_with_neither_id_nor_input_is_refused() -> None:
    from lib.store.engine import get_engine

    data = log_csv([{"model": GPT4O, "response": "a"}, {"model": GPT41, "response": "b"}])
    with pytest.raises(RecordedLoadError, match="neither an id column"):
        load_recorded(get_engine("sqlite://"), data, "prod.csv", "x", None, SIDES)


def test_two_models_and_no_choice_lists_each_model_never_guesses(engine) -> None:
    with pytest.raises(RecordedLoadError) as info:
        load_recorded(engine, label_log(), "prod.csv", "guess", None,
                      LoadMapping(timestamp_format="%m/%d/%Y, %H:%M:%S"))
    message = str(info.value)
    assert "which is the baseline and which the candidate" in message
    for model in (GPT4O, GPT41):
        assert f"'{model}' (30 rows, 2023-07-01T21:28:41+00:00 .. 2023-07-28T21:28:41+00:00)" in message


def test_an_auto_picked_timestamp_that_does_not_parse_is_ignored_with_a_warning(engine) -> None:
    result = load_recorded(engine, label_log(), "prod.csv", "ts", None, SIDES)
    warning = next(w for w in result.warnings if "column 'timestamp' ignored" in w)
    assert "07/01/2023, 21:28:41" in warning and "--timestamp-format" in warning
    with Session(engine) as session:
        assert all(o.logged_at is None for o in session.exec(select(Output)).all())


def test_a_named_timestamp_column_that_does_not_parse_fails_naming_the_row(engine) -> None:
    with pytest.raises(RecordedLoadError) as info:
        load_recorded(engine, label_log(), "prod.csv", "ts", None,
                      LoadMapping(baseline=GPT4O, candidate=GPT41, timestamp_col="timestamp"))
    assert (info.value.line, info.value.field) == (2, "timestamp")
    assert "day/month order is never guessed" in str(info.value)


@pytest.mark.parametrize("stamp, fmt, first", [
    ("07/{day:02d}/2023, 21:28:41", "%m/%d/%Y, %H:%M:%S", "2023-07-01 21:28:41"),
    ("{day:02d}/07/2023 21:28", "%d/%m/%Y %H:%M", "2023-07-01 21:28:00"),
    ("2023-07-{day:02d}T21:28:41+02:00", None, "2023-07-01 19:28:41"),
    ("168850{day:02d}00", None, "2023-07-04 19:48:20"),  # epoch seconds
    ("168850{day:02d}00000", None, "2023-07-04 19:48:20"),  # epoch milliseconds
])
def test_timestamp_formats(engine, stamp: str, fmt: str | None, first: str) -> None:
    mapping = LoadMapping(baseline=GPT4O, candidate=GPT41, timestamp_format=fmt)
    load_recorded(engine, label_log(stamp=stamp), "prod.csv", "ts", None, mapping)
    with Session(engine) as session:
        stamps = sorted(o.logged_at for o in session.exec(select(Output)).all())
    assert stamps[0].strftime("%Y-%m-%d %H:%M:%S") == first


def test_the_default_rule_is_said_and_a_far_better_rule_is_named_with_its_accuracy(engine) -> None:
    result = load_recorded(engine, label_log(), "prod.csv", "rule", None, SIDES)
    assert any("'normalized' (the default: no --match given)" in n and "0.0%" in n for n in result.notes)
    warning = next(w for w in result.warnings if "agrees with the expected answers" in w)
    assert "--match contains" in warning and "75.0%" in warning  # 45 of 60 outputs say yes
    chosen = load_recorded(engine, label_log(), "prod.csv", "rule2", None,
                           LoadMapping(baseline=GPT4O, candidate=GPT41, match="contains"))
    assert chosen.notes == [] and not any("agrees" in w for w in chosen.warnings)


def _cli(*args: str):
    from lib.cli import _register
    from lib.cli.app import app

    _register()
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_settings_set_is_stored_audited_and_used_by_report_and_gate(engine) -> None:
    from lib.governance.policy import create_policy

    load_recorded(engine, label_log(), "prod.csv", "cmp", None, SIDES)
    assert build_report(engine, "cmp")["metrics"]["accuracy"]["candidate"] == 0.0
    flagged = build_report(engine, "cmp", match="contains")
    assert flagged["metrics"]["accuracy"]["candidate"] == 1.0 and "the gate" in flagged["settings_note"]

    out = _cli("settings", "set", "cmp", "--match", "contains", "--refusal-pattern", "cannot comply")
    assert out.exit_code == 0 and "match contains" in out.output
    assert stored_settings(engine, "cmp").match == "contains"
    with Session(engine) as session:
        event = session.exec(select(AuditEvent).where(AuditEvent.kind == "settings_changed")).all()[-1]
    payload = json.loads(event.payload_json)
    assert payload["settings"]["match"] == "contains" and payload["previous"]["match"] is None
    report = build_report(engine, "cmp")
    assert report["metrics"]["accuracy"]["candidate"] == 1.0 and "settings_note" not in report

    create_policy(engine, "p", b'[criteria.accuracy]\nmax_decrease = 0.05\n')
    gate = _cli("gate", "cmp", "--policy", "p")
    assert "settings: match contains; refusal patterns 'cannot comply'" in gate.output


def test_empty_outputs_are_a_metric_and_a_filter(engine) -> None:
    rows = []
    for i in range(40):
        rows.append({"id": i, "model": "a", "output": f"answer {i}"})
        rows.append({"id": i, "model": "b", "output": "" if i < 10 else ("   " if i < 15 else f"answer {i}")})
    load_recorded(engine, log_csv(rows), "log.csv", "empty", None, LoadMapping(baseline="a", candidate="b"))
    m = build_report(engine, "empty")["metrics"]["empty_rate"]
    assert (m["baseline"], m["candidate"], m["n"], m["flips"]["to_true"]) == (0.0, 15 / 40, 40, 15)
    assert m["ci_low"] > 0 and m["p_value"] < 0.05
    frame = checked_frame(engine, "empty", stored_settings(engine, "empty"))
    assert len(select_cases(frame, BrowseQuery(filter="empty"))) == 15


def test_load_page_preselects_no_model_and_takes_a_timestamp_format(engine) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app.py"), default_timeout=60).run()
    at.switch_page("pages/load.py").run()
    at.radio(key="load_format").set_value("long").run()
    at.file_uploader(key="load_upload").set_value(("prod.csv", label_log(), "text/csv")).run()
    assert at.selectbox(key="load_baseline").value is None and at.selectbox(key="load_candidate").value is None
    assert at.button(key="load_submit").disabled
    at.selectbox(key="load_baseline").set_value(GPT4O)
    at.selectbox(key="load_candidate").set_value(GPT41)
    at.text_input(key="load_timestamp_format").set_value("%m/%d/%Y, %H:%M:%S")
    at.text_input(key="load_name").set_value("from-page").run()
    at.button(key="load_submit").click().run()
    assert not at.exception, at.exception
    assert at.success, [e.value for e in at.error]
    assert any("agrees with the expected answers" in w.value for w in at.warning)
    with Session(engine) as session:
        assert all(o.logged_at is not None for o in session.exec(select(Output)).all())
