"""AppTest: the Monitor page."""
from __future__ import annotations

from lib.store.engine import session_scope
from lib.store.entities import Case, Dataset
from tests.llm_server import LLMServer
from tests.page_helpers import REFUSAL, metric_rows, routed


def _golden(engine, n: int) -> None:
    with session_scope(engine) as session:
        ds = Dataset(name="golden", version=1, content_hash=f"golden-{n}", n_cases=n)
        session.add(ds)
        session.flush()
        session.add_all(Case(dataset_id=ds.id, case_key=f"c{i}", position=i, input_text=f"question {i}")
                        for i in range(n))


def _point(engine, server: LLMServer):
    from lib.release.monitor import monitor_run
    from lib.run.runner import ModelSpec, RunOptions

    spec = ModelSpec("openai/pinned", api_base=server.url, temperature=0.0)
    options = RunOptions(concurrency=8, timeout=10, max_retries=1, backoff_base=0.02, backoff_cap=0.1)
    return monitor_run(engine, dataset="golden", spec=spec, options=options)


def test_monitor_alerts_card_agrees_with_the_points_table(engine, llm_server: LLMServer) -> None:
    _golden(engine, 40)
    llm_server.set_fingerprint("pinned", "fp_a")
    _point(engine, llm_server)
    _point(engine, llm_server)  # unchanged: ok
    llm_server.set_fingerprint("pinned", "fp_b")
    llm_server.set_served_model("pinned", "pinned-2025-09")
    llm_server.script(REFUSAL, contains="question 1", model="pinned")
    last = _point(engine, llm_server)
    # one point, many alert rows: a band alert, and each change found against the baseline and the previous point
    assert last.alerts and len(last.findings) == 4
    at = routed("pages/monitor.py")
    card = next(m for m in at.metric if m.label == "Alerts")
    assert card.value == "1 (1 metric out of band, 1 fingerprint change)"
    points = next(df.value for df in at.dataframe if "served model" in df.value.columns)
    alerting = points[points["alerts"] != ""]
    assert len(alerting) == int(card.value.split()[0])  # the card counts the points the table marks
    [row] = alerting["alerts"].tolist()
    assert row == "metric out of band (Refusal rate) · fingerprint change (fingerprint, served model)"
    latest = next(m for m in at.metric if m.label == "Latest point")
    assert latest.value == "alert"  # the kinds go below the value, which is never cut off
    assert metric_rows(at)[0] == 3
