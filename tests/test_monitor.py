"""Watching a pinned model: baseline snapshot, points compared with it, bands, fingerprint findings."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from conftest import ROOT
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.errors import DatasetNotFound
from lib.governance.policy import PolicyNotFound, create_policy
from lib.release.entities import MonitorPoint
from lib.release.monitor import (
    MonitorInputError,
    MonitorPointNotFound,
    current_bands,
    list_points,
    mark_baseline,
    monitor_run,
)
from lib.review.comparisons import get_comparison
from lib.run.runner import ModelSpec, RunOptions
from lib.store.audit import check_chain, event_payload, list_events
from lib.store.engine import session_scope
from lib.store.entities import Case, Dataset
from tests.llm_server import LLMServer

REFUSAL = "I'm sorry, but I can't help with that."
FAST = RunOptions(concurrency=8, timeout=10, max_retries=1, backoff_base=0.02, backoff_cap=0.1)


def make_dataset(engine: Engine, name: str = "golden", n: int = 40, version: int = 1) -> None:
    with session_scope(engine) as session:
        ds = Dataset(name=name, version=version, content_hash=f"{name}-{version}-{n}", n_cases=n)
        session.add(ds)
        session.flush()
        session.add_all(Case(dataset_id=ds.id, case_key=f"c{i}", position=i, input_text=f"v{version} question {i}")
                        for i in range(n))


def point(engine: Engine, server: LLMServer, options: RunOptions = FAST, **kwargs: Any):
    spec = ModelSpec("openai/pinned", api_base=server.url, temperature=0.0)
    return monitor_run(engine, dataset="golden", spec=spec, options=options, **kwargs)


def events(engine: Engine, kind: str) -> list[dict]:
    with engine.connect() as conn:
        return [event_payload(e) for e in list_events(conn, kind)]


def test_first_run_is_the_baseline_then_points_compare_with_it(engine, llm_server: LLMServer) -> None:
    make_dataset(engine)
    llm_server.set_fingerprint("pinned", "fp_a")
    first = point(engine, llm_server)
    assert (first.status, first.is_baseline, first.comparison, first.exit_code) == ("baseline", True, None, 0)
    second = point(engine, llm_server)
    assert (second.status, second.exit_code, second.baseline_point_id) == ("ok", 0, first.point_id)
    assert second.alerts == [] and second.findings == []
    assert second.comparison.startswith("monitor/openai/pinned/")
    refusal = second.metrics["refusal_rate"]
    assert (refusal["baseline"], refusal["candidate"], refusal["delta"], refusal["n"]) == (0.0, 0.0, 0.0, 40)
    with Session(engine) as s:
        comp = get_comparison(s, second.comparison)
        rows = s.exec(select(MonitorPoint).order_by(MonitorPoint.id)).all()
    assert comp.source == "monitor"
    assert comp.baseline_run_id == rows[0].run_id and comp.candidate_run_id == rows[1].run_id
    assert [e["status"] for e in events(engine, "monitor_point")] == ["baseline", "ok"]
    assert [e["reason"] for e in events(engine, "monitor_baseline_set")] == ["first point"]


def test_a_changed_fingerprint_under_the_same_name_is_an_alert(engine, llm_server: LLMServer) -> None:
    make_dataset(engine)
    llm_server.set_fingerprint("pinned", "fp_a")
    point(engine, llm_server)
    llm_server.set_fingerprint("pinned", "fp_b")
    changed = point(engine, llm_server)
    assert changed.status == "alert" and changed.exit_code == 1 and changed.alerts == []  # outputs unchanged
    assert [(f["kind"], f["against"], f["from"], f["to"]) for f in changed.findings] == [
        ("fingerprint", "baseline", "fp_a", "fp_b")]
    alert = events(engine, "monitor_alert")[-1]
    assert alert["point_id"] == changed.point_id and alert["findings"][0]["to"] == "fp_b"
    llm_server.set_served_model("pinned", "pinned-2025-09")
    served = point(engine, llm_server)
    kinds = {(f["kind"], f["against"]) for f in served.findings}
    assert ("served_model", "previous point") in kinds and ("fingerprint", "baseline") in kinds


def test_refusal_change_leaves_the_default_band(engine, llm_server: LLMServer) -> None:
    make_dataset(engine)
    point(engine, llm_server)
    llm_server.script(REFUSAL, contains="question 1", model="pinned")  # question 1 and 10-19: 11 of 40
    worse = point(engine, llm_server)
    assert worse.status == "alert" and worse.exit_code == 1 and worse.findings == []
    refusal = next(a for a in worse.alerts if a["metric"] == "refusal_rate")
    assert refusal["threshold"] == "max_increase" and refusal["ci"][0] > 0.05
    assert worse.metrics["refusal_rate"]["candidate"] == pytest.approx(11 / 40)
    assert events(engine, "monitor_alert")[-1]["alerts"][0]["metric"] in {a["metric"] for a in worse.alerts}
    with engine.connect() as conn:
        assert check_chain(conn) == []


def test_a_policy_sets_the_bands(engine, llm_server: LLMServer) -> None:
    make_dataset(engine)
    create_policy(engine, "loose", b"[criteria.refusal_rate]\nmax_increase = 0.5\n")
    point(engine, llm_server)
    llm_server.script(REFUSAL, contains="question 1", model="pinned")
    within = point(engine, llm_server, policy="loose")
    assert within.status == "ok" and within.alerts == []
    points = list_points(engine, "openai/pinned")
    assert points[-1]["policy"] == "loose v1"
    assert points[-1]["bands"]["refusal_rate"] == {"baseline": 0.0, "low": None, "high": 0.5}
    with pytest.raises(PolicyNotFound):
        point(engine, llm_server, policy="absent")


def test_a_changed_golden_set_needs_a_new_baseline(engine, llm_server: LLMServer) -> None:
    make_dataset(engine)
    point(engine, llm_server)
    make_dataset(engine, version=2)
    calls = llm_server.calls()
    with pytest.raises(MonitorInputError, match="changed since the baseline"):
        point(engine, llm_server)
    assert llm_server.calls() == calls  # refused before any call
    fresh = point(engine, llm_server, make_baseline=True)
    assert fresh.is_baseline and fresh.dataset_version == 2
    assert point(engine, llm_server).baseline_point_id == fresh.point_id
    with pytest.raises(DatasetNotFound):
        monitor_run(engine, dataset="absent", spec=ModelSpec("openai/pinned", api_base=llm_server.url), options=FAST)


def test_mark_baseline_moves_the_snapshot(engine, llm_server: LLMServer) -> None:
    make_dataset(engine)
    point(engine, llm_server)
    llm_server.script(REFUSAL, contains="question 1", model="pinned")
    changed = point(engine, llm_server)
    info = mark_baseline(engine, changed.point_id, actor="alice")
    assert info["is_baseline"] is True
    after = point(engine, llm_server)  # the refusals are the new normal
    assert after.baseline_point_id == changed.point_id and after.status == "ok"
    listed = list_points(engine)
    assert [p["is_baseline"] for p in listed] == [False, True, False]
    # one "baseline" per series; each compared point names the baseline current when it ran
    assert [p["status"] for p in listed] == ["former baseline", "baseline", "ok"]
    assert [p["recorded_status"] for p in listed] == ["baseline", "alert", "ok"]
    assert [p["compared_with"] for p in listed] == [None, "point 1 (former baseline)", "point 2 (baseline)"]
    current = current_bands(engine, "openai/pinned", "golden", listed[0]["config_hash"])
    assert current["baseline_point_id"] == changed.point_id
    assert current["values"]["refusal_rate"] == pytest.approx(11 / 40)  # the band follows the new baseline
    assert current["bands"]["refusal_rate"]["high"] == pytest.approx(11 / 40 + 0.05)
    with pytest.raises(MonitorPointNotFound):
        mark_baseline(engine, 999)


def cli(db_url: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    env.pop("REVIEW_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "lib", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.slow
def test_cli_monitor_run_exit_codes_list_and_baseline(db_url: str, engine, llm_server: LLMServer) -> None:
    make_dataset(engine, n=12)
    args = ("monitor", "run", "--dataset", "golden", "--model", "openai/pinned", "--api-base", llm_server.url,
            "--temperature", "0", "--max-retries", "1", "--system-prompt", "You are ACME's assistant.")
    first = cli(db_url, *args)
    assert first.returncode == 0, first.stderr
    assert "BASELINE" in first.stdout
    assert all(r.messages[0] == {"role": "system", "content": "You are ACME's assistant."} for r in llm_server.log)
    llm_server.set_fingerprint("pinned", "fp_new")
    alert = cli(db_url, *args, "--json")
    assert alert.returncode == 1, alert.stderr
    body = json.loads(alert.stdout)
    assert body["status"] == "alert" and body["findings"][0]["kind"] == "fingerprint"
    listed = cli(db_url, "monitor", "list", "--json")
    assert [p["status"] for p in json.loads(listed.stdout)] == ["baseline", "alert"]
    marked = cli(db_url, "monitor", "baseline", str(body["point_id"]))
    assert marked.returncode == 0 and "is now the baseline" in marked.stdout
    again = cli(db_url, *args)
    assert again.returncode == 0 and ": OK (compared with baseline point 2" in again.stdout, again.stdout
    bad = cli(db_url, "monitor", "run", "--dataset", "absent", "--model", "openai/pinned")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.strip().splitlines()) == 1
    missing = cli(db_url, "monitor", "baseline", "999")
    assert missing.returncode == 2 and "no monitor point 999" in missing.stderr


# ---------------------------------------------------------------- the page

def _app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    return at.switch_page("pages/monitor.py").run()


def test_monitor_page_empty(db_url) -> None:
    at = _app()
    assert not at.exception, at.exception
    assert any("No monitor points yet" in i.value for i in at.info)


def test_monitor_page_shows_alerts_findings_and_opens_a_point_comparison(engine, llm_server: LLMServer) -> None:
    make_dataset(engine, n=20)
    point(engine, llm_server)
    llm_server.set_fingerprint("pinned", "fp_<script>")
    llm_server.script(REFUSAL, contains="question 1", model="pinned")
    changed = point(engine, llm_server)
    at = _app()
    assert not at.exception, at.exception
    assert at.selectbox(key="monitor_model").value == "openai/pinned"
    alerts, findings, points = (d.value for d in at.dataframe)  # page order (AppTest drops dataframe keys)
    assert "refusal_rate" in alerts["metric"].tolist()
    assert findings["to"].tolist() == ["fp_<script>"]  # shown as data in a table, never as HTML
    assert points["status"].tolist() == ["baseline", "alert"]
    at.selectbox(key="monitor_metric").set_value("refusal_rate").run()
    assert not at.exception, at.exception
    at.selectbox(key="monitor_point").set_value(changed.point_id).run()
    at.button(key="monitor_open").click().run()
    assert not at.exception, at.exception
    # AppTest runs only the page script after switch_page; the router applies the pending choice next run.
    assert at.session_state["pending_active_comparison"] == changed.comparison


def test_monitor_page_marks_a_baseline_after_confirming(engine, llm_server: LLMServer) -> None:
    make_dataset(engine, n=5)
    point(engine, llm_server)
    llm_server.set_fingerprint("pinned", "fp_b")
    second = point(engine, llm_server)
    at = _app()
    at.selectbox(key="monitor_point").set_value(second.point_id).run()
    assert "point 1 (baseline)" in at.button(key="monitor_open").label
    at.button(key="monitor_mark").click().run()
    assert not at.exception, at.exception
    assert [p["is_baseline"] for p in list_points(engine)] == [True, False]  # asked, not done
    assert at.warning and f"Make point {second.point_id} the baseline" in at.warning[0].value
    at.button(key="monitor_mark_confirm").click().run()
    assert not at.exception, at.exception
    assert [p["is_baseline"] for p in list_points(engine)] == [False, True]
    assert events(engine, "monitor_baseline_set")[-1]["reason"] == "marked"
    assert at.success and f"Point {second.point_id} is now the baseline" in at.success[0].value
    findings, points = (d.value for d in at.dataframe)
    assert points["status"].tolist() == ["former baseline", "baseline"]  # one baseline, the current one
    assert points["compared with"].tolist() == ["", "point 1 (former baseline)"]
    assert findings["against"].tolist() == ["point 1 (former baseline)"]
    assert "point 1 (former baseline)" in at.button(key="monitor_open").label
    assert at.button(key="monitor_mark").disabled
    at.run()
    assert not at.success  # the message is shown once


def test_monitor_page_mark_can_be_cancelled(engine, llm_server: LLMServer) -> None:
    make_dataset(engine, n=5)
    point(engine, llm_server)
    second = point(engine, llm_server)
    at = _app()
    at.selectbox(key="monitor_point").set_value(second.point_id).run()
    at.button(key="monitor_mark").click().run()
    at.button(key="monitor_mark_cancel").click().run()
    assert not at.exception and not at.warning
    assert [p["is_baseline"] for p in list_points(engine)] == [True, False]


def _chart(at) -> dict:  # the figure as the browser receives it
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def test_monitor_page_names_alerts_and_colours_each_metric_by_its_own_band(engine, llm_server: LLMServer) -> None:
    import streamlit as st

    make_dataset(engine)
    point(engine, llm_server)
    llm_server.set_fingerprint("pinned", "fp_b")
    point(engine, llm_server)  # a fingerprint alert, refusals unchanged
    at = _app()
    assert not at.exception, at.exception
    alerts = next(m for m in at.metric if m.label == "Alerts")
    assert alerts.value == "1 (fingerprint changes)"
    assert any("fingerprint or served-model changes" in c.value for c in at.caption)  # not "no alert"
    llm_server.script(REFUSAL, contains="question 1", model="pinned")
    point(engine, llm_server)  # refusals out of band, and the fingerprint still differs from the baseline's
    st.cache_data.clear()  # the page's reads are cached for 30 s
    at = _app()
    assert next(m for m in at.metric if m.label == "Alerts").value == "2 (1 metric out of band, 2 fingerprint changes)"
    at.selectbox(key="monitor_metric").set_value("refusal_rate").run()
    traces = _chart(at)["data"]
    markers = next(t for t in traces if t.get("name") == "point (95% CI)")
    assert markers["marker"]["color"] == ["seagreen", "crimson"]  # the fingerprint alert is not a refusal alert
    band = [t for t in traces if t.get("fill") == "tonexty" or t.get("hoverinfo") == "skip"]
    assert min(y for t in band for y in t["y"]) == 0.0  # 0 - 0.05 clipped: a rate cannot be negative
    low = [v - m for v, m in zip(markers["y"], markers["error_y"]["arrayminus"])]
    assert min(low) >= 0.0


def _judge_reply(score: int) -> str:
    return json.dumps({"scores": {"accuracy": score, "format_adherence": 5, "safety": 5}, "rationale": "r"})


def test_a_judge_tracks_scores_and_a_drop_alerts(engine, llm_server: LLMServer) -> None:
    make_dataset(engine)
    llm_server.script(json.dumps({"preference": "tie", "rationale": "r"}), contains="[Answer A]", model="judge")
    llm_server.script(_judge_reply(5), contains="", model="judge")
    llm_server.script(_judge_reply(1), contains="I'm sorry", model="judge")  # refusals score low
    from lib.release.monitor import JudgeRequest

    judge = JudgeRequest("openai/judge", api_base=llm_server.url)
    point(engine, llm_server)
    same = point(engine, llm_server, judge=judge)
    assert same.status == "ok" and same.metrics["judge_accuracy"]["delta"] == 0.0
    # 22 of 40 answers refused (questions 1, 10-19, 2, 20-29): with 11 the paired sign-flip interval's upper
    # end lands exactly on the -0.5 margin (its quantiles sit on a lattice of k/m * -4), not below it.
    llm_server.script(REFUSAL, contains="question 1", model="pinned")
    llm_server.script(REFUSAL, contains="question 2", model="pinned")
    worse = point(engine, llm_server, judge=judge)
    accuracy = worse.metrics["judge_accuracy"]
    assert accuracy["delta"] == pytest.approx(-4 * 22 / 40)
    assert "judge:accuracy" in {a["metric"] for a in worse.alerts}, (accuracy["ci_high"], worse.alerts)
