"""Production logs over time: log import, timeline windows and change points (false-alarm rate and detection
measured by simulation), compare-windows, similar, and the planted-change log end to end in the CLI."""
from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lib.data.loaders import LoadMapping
from lib.release.log_import import LogImportError, import_log
from lib.release.timeline import METRICS, _series, change_points, timeline
from lib.release.timeline_compare import compare_windows
from lib.release.timeline_demo import LLMDRIFT_FORMAT, log_csv, log_rows
from lib.release.timeline_search import similar

ROOT = Path(__file__).resolve().parents[1]
FMT = LoadMapping(timestamp_format=LLMDRIFT_FORMAT)


def sim_frame(rng: np.random.Generator, days: int = 20, per_day: int = 150, step_day: int | None = None,
              refusal: tuple[float, float] = (0.03, 0.03), length: tuple[float, float] = (300.0, 300.0)
              ) -> pd.DataFrame:
    """What read_log returns, simulated: one model, noisy metrics, optional step at `step_day`."""
    n = days * per_day
    day = np.repeat(np.arange(days), per_day)
    after = day >= step_day if step_day is not None else np.zeros(n, dtype=bool)
    ts = pd.Timestamp("2023-07-01", tz="UTC") + pd.to_timedelta(day * 86_400 + rng.integers(0, 86_400, n), unit="s")
    return pd.DataFrame({
        "ts": ts, "model": "m",
        "refused": (rng.random(n) < np.where(after, refusal[1], refusal[0])).astype(float),
        "empty": (rng.random(n) < 0.02).astype(float),
        "json_valid": np.where(rng.random(n) < 0.3, (rng.random(n) < 0.9).astype(float), np.nan),
        "length_chars": rng.gamma(4, np.where(after, length[1], length[0]) / 4),
        "errored": (rng.random(n) < 0.01).astype(float), "latency_s": rng.gamma(4, 0.15, n)})


def points_of(frame: pd.DataFrame) -> list[dict]:
    series = _series(frame, "day")
    return [p for s in series for metric in METRICS for p in change_points(s, metric, len(series) * len(METRICS))]


def test_no_change_point_in_at_least_95_percent_of_flat_logs() -> None:
    rng = np.random.default_rng(1)
    n_logs = 200
    alarms = sum(bool(points_of(sim_frame(rng))) for _ in range(n_logs))
    # Measured false-alarm rate (per log, over all six metrics): the docs state it.
    assert alarms / n_logs <= 0.05, f"false alarms in {alarms} of {n_logs} flat logs"


@pytest.mark.parametrize("kind", ["refusal_rate", "length_chars_mean"])
def test_a_step_is_found_within_one_window(kind: str) -> None:
    rng = np.random.default_rng(2)
    found = 0
    for _ in range(20):
        step_day = int(rng.integers(4, 16))
        kwargs = {"refusal": (0.03, 0.10)} if kind == "refusal_rate" else {"length": (300.0, 250.0)}
        frame = sim_frame(rng, per_day=400, step_day=step_day, **kwargs)
        points = [p for p in points_of(frame) if p["metric"] == kind]
        expected = pd.Timestamp("2023-07-01", tz="UTC") + pd.Timedelta(days=step_day)
        found += any(abs(pd.Timestamp(p["at"]) - expected) <= pd.Timedelta(days=1) for p in points)
        assert all(p["delta"] > 0 if kind == "refusal_rate" else p["delta"] < 0 for p in points)
    assert found == 20


def _import(engine, rows: list[dict], name: str, filename: str = "log.csv", mapping: LoadMapping = FMT):
    return import_log(engine, io.BytesIO(log_csv(rows)), filename, name, mapping)


def test_planted_change_yields_its_change_points_comparison_and_search(engine) -> None:
    result = _import(engine, log_rows(change_day=12), "planted")
    assert result.rows == 3000 and result.first.startswith("2023-07-01")
    doc = timeline(engine, "planted")
    assert set(doc) == {"log", "windows", "change_points"} and len(doc["windows"]) == 20
    window = doc["windows"][0]
    assert set(window) == {"model", "start", "end", "n"} | {"metrics"} and set(window["metrics"]) == set(METRICS)
    found = {(p["metric"], p["at"]) for p in doc["change_points"]}
    assert found == {("refusal_rate", "2023-07-13T00:00:00+00:00"), ("length_chars_mean", "2023-07-13T00:00:00+00:00")}
    for p in doc["change_points"]:
        assert set(p) == {"model", "metric", "at", "before", "after", "delta", "ci_low", "ci_high", "p_value"}
        assert p["ci_low"] <= p["delta"] <= p["ci_high"] and p["p_value"] < 0.05

    cmp, html = compare_windows(engine, "planted", "2023-07-01..2023-07-12", "2023-07-13..2023-07-20")
    refusal = cmp["metrics"]["refusal_rate"]
    assert (refusal["n_before"], refusal["n_after"]) == (1800, 1200) and refusal["ci_low"] > 0.05
    assert cmp["metrics"]["length_chars_mean"]["delta"] < -100
    assert cmp["drift"]["outputs"]["drifted_share"] > 0 and "<html" in html["outputs"].lower()
    assert len(cmp["examples"]["before"]) == 5 and cmp["examples"]["after"][0]["output"]

    hits = similar(engine, "planted", "my refund for the order was refused")
    assert hits["split_at"] == "2023-07-13T00:00:00+00:00"
    assert {r["period"] for r in hits["results"]} == {"before", "after"}
    assert all("refund" in r["input"] for r in hits["results"])


def test_a_flat_log_has_no_change_points(engine) -> None:
    _import(engine, log_rows(change_day=None), "flat")
    assert timeline(engine, "flat")["change_points"] == []
    assert timeline(engine, "flat", window="week")["windows"][0]["start"] == "2023-06-26T00:00:00+00:00"


def test_log_import_formats_and_errors(engine) -> None:
    rows = log_rows(days=3, per_day=5, change_day=None)
    for row in rows:
        del row["prompt"]
    gz = gzip.compress(log_csv(rows))
    assert import_log(engine, io.BytesIO(gz), "log.csv.gz", "gz", FMT).rows == 15
    table = pd.DataFrame(rows)
    buf = io.BytesIO()
    table.to_parquet(buf)
    buf.seek(0)
    res = import_log(engine, buf, "log.parquet", "pq", FMT)
    assert res.rows == 15 and any("no input column" in w for w in res.warnings)
    jsonl = "\n".join(json.dumps(r) for r in rows).encode()
    assert import_log(engine, io.BytesIO(jsonl), "log.jsonl", "jl", FMT).rows == 15
    with pytest.raises(LogImportError, match="already exists"):
        import_log(engine, io.BytesIO(jsonl), "log.jsonl", "jl", FMT)
    with pytest.raises(LogImportError) as info:
        import_log(engine, io.BytesIO(log_csv(rows)), "log.csv", "bad")
    assert info.value.line == 2 and "--timestamp-format" in str(info.value)
    no_ts = [{k: v for k, v in r.items() if k != "timestamp"} for r in rows]
    with pytest.raises(LogImportError, match="timestamp"):
        import_log(engine, io.BytesIO(log_csv(no_ts)), "log.csv", "nots")
    assert timeline(engine, "pq")["windows"][0]["n"] == 5


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_cli_planted_log_end_to_end(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "prod.csv"
    path.write_bytes(log_csv(log_rows(change_day=12)))
    bad = _cli(db_url, "log", "import", str(path), "--name", "p")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "line 2" in bad.stderr
    ok = _cli(db_url, "log", "import", str(path), "--name", "p", "--timestamp-format", LLMDRIFT_FORMAT)
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(_cli(db_url, "timeline", "p", "--json").stdout)
    assert {p["metric"] for p in doc["change_points"]} == {"refusal_rate", "length_chars_mean"}
    cmp = json.loads(_cli(db_url, "compare-windows", "p", "--before", "2023-07-01..2023-07-12", "--after",
                          "2023-07-13..2023-07-20", "--json").stdout)
    assert cmp["metrics"]["refusal_rate"]["p_value"] < 1e-6
    hits = json.loads(_cli(db_url, "similar", "p", "refund was refused", "--json").stdout)
    assert hits["results"] and hits["split_at"].startswith("2023-07-13")
    missing = _cli(db_url, "timeline", "nope")
    assert missing.returncode == 2 and "no log named 'nope'" in missing.stderr


def frame_with(at, column: str) -> pd.DataFrame:
    """The first table showing `column` (AppTest finds only selectable tables by key)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def test_timeline_page_shows_change_points_compares_periods_and_searches(engine) -> None:
    from datetime import date

    from streamlit.testing.v1 import AppTest

    _import(engine, log_rows(change_day=12), "planted")
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("pages/timeline.py").run()
    assert not at.exception, at.exception
    points = at.dataframe(key="timeline_points").value
    assert set(points["metric"]) == {"Refusal rate", "Length (chars)"}
    assert set(points["at"]) == {"2023-07-13T00:00:00+00:00"}
    at.date_input(key="timeline_before").set_value((date(2023, 7, 1), date(2023, 7, 12)))
    at.date_input(key="timeline_after").set_value((date(2023, 7, 13), date(2023, 7, 20)))
    at.button(key="timeline_compare_pick").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    table = frame_with(at, "n before").set_index("metric")
    assert table.loc["Refusal rate", "n before"] == 1800 and table.loc["Refusal rate", "delta [CI]"].startswith("+12")
    assert len(frame_with(at, "request_id")) == 5
    at.text_area(key="timeline_complaint").set_value("my refund for the order was refused").run()
    at.button(key="timeline_search").click().run()
    assert not at.exception, at.exception
    found = frame_with(at, "score")
    assert set(found["period"]) == {"before", "after"} and found["input"].str.contains("refund").all()


def test_timeline_page_without_logs_says_how_to_import(engine) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    at.switch_page("pages/timeline.py").run()
    assert not at.exception and "import one below" in at.info[0].value


def test_timeline_page_imports_a_log_from_the_browser(engine) -> None:
    """From an empty store to change points without a terminal: upload, name the timestamp format, import."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=120).run()
    at.switch_page("pages/timeline.py").run()
    assert at.button(key="timeline_import").disabled  # nothing uploaded yet
    at.file_uploader(key="timeline_upload").set_value(("prod.csv", log_csv(log_rows(change_day=12)), "text/csv"))
    at.text_input(key="timeline_import_ts_format").set_value(LLMDRIFT_FORMAT).run()
    assert at.text_input(key="timeline_import_name").value == "prod"
    at.button(key="timeline_import").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert at.success and "3,000 calls" in at.success[0].value
    assert set(at.dataframe(key="timeline_points").value["metric"]) == {"Refusal rate", "Length (chars)"}
    at.button(key="timeline_import").click().run()  # the same name again: refused, nothing lost
    assert "already exists" in at.error[0].value


def test_similar_by_embeddings_finds_the_same_request(engine, llm_server) -> None:
    rows = log_rows(days=4, per_day=10, change_day=2)
    _import(engine, rows, "small")
    target = rows[25]
    doc = similar(engine, "small", target["prompt"], at="2023-07-03", k=1, embeddings="openai/test-embed",
                  api_base=llm_server.url)
    assert doc["method"] == "embeddings (openai/test-embed)"
    best = max(doc["results"], key=lambda r: r["score"])
    assert best["request_id"] == target["request_id"] and best["score"] == pytest.approx(1.0, abs=1e-4)
