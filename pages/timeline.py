"""Timeline: one model over time from a production log; change points, before/after, complaint search."""
from __future__ import annotations

import io
from datetime import date, timedelta
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lib.data.loaders import LoadMapping
from lib.errors import ReviewInputError
from lib.release.log_import import import_log, list_logs
from lib.release.timeline import METRICS
from lib.release.timeline_compare import compare_windows
from lib.release.timeline_search import similar
from lib.review import fmt
from pages import _shared

st.title("Timeline")
LABELS = {"refusal_rate": "Refusal rate", "empty_rate": "Empty outputs", "json_valid_rate": "JSON valid",
          "length_chars_mean": "Length (chars)", "error_rate": "Errors", "latency_s_mean": "Latency (s)"}
PERIODS_KEY = "timeline_periods"  # (before, after) as START..END strings, set by a change point or the pickers


def _charts(doc: dict[str, Any]) -> None:
    windows = pd.DataFrame([{"model": w["model"], "start": w["start"], "n": w["n"], **w["metrics"]}
                            for w in doc["windows"]])
    windows["start"] = pd.to_datetime(windows["start"])
    cols = st.columns(2)
    for i, metric in enumerate(METRICS):
        if windows[metric].isna().all():
            continue
        fig = go.Figure()
        for model, rows in windows.groupby("model"):
            fig.add_trace(go.Scatter(x=rows["start"], y=rows[metric], mode="lines+markers", name=str(model),
                                     customdata=rows["n"], hovertemplate="%{x}<br>%{y}<br>n=%{customdata}"))
        for p in (p for p in doc["change_points"] if p["metric"] == metric):
            fig.add_vline(x=pd.Timestamp(p["at"]).timestamp() * 1000, line_dash="dash", line_color="red")
        fig.update_layout(title=LABELS[metric], height=260, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                          yaxis_tickformat=".0%" if metric.endswith("_rate") else None)
        with cols[i % 2]:
            st.plotly_chart(fig, width="stretch", key=f"timeline_chart_{metric}")


def _change_points(doc: dict[str, Any], first: date, last: date) -> None:
    points = doc["change_points"]
    if not points:
        st.info("No change points: no metric moved beyond what chance explains (see docs/timeline.md).")
        return
    rate = [p["metric"].endswith("_rate") for p in points]
    view = pd.DataFrame({"model": [p["model"] for p in points], "metric": [LABELS[p["metric"]] for p in points],
                         "at": [p["at"] for p in points],
                         "before": [fmt.metric_value(p["before"], r) for p, r in zip(points, rate)],
                         "after": [fmt.metric_value(p["after"], r) for p, r in zip(points, rate)],
                         "delta [CI]": [fmt.metric_delta(p["delta"], p["ci_low"], p["ci_high"], r)
                                        for p, r in zip(points, rate)],
                         "p": [fmt.p_value(p["p_value"]) for p in points]})
    st.caption("Select a change point to compare the periods before and after it.")
    event = st.dataframe(view, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                         key="timeline_points")
    row = _shared.selected_row(event, len(points))
    if row is not None:
        at = pd.Timestamp(points[row]["at"]).date()
        st.session_state[PERIODS_KEY] = (f"{first}..{at - timedelta(days=1)}", f"{at}..{last}")


def _period_pickers(first: date, last: date) -> None:
    with st.expander("Or pick two periods"):
        left, right = st.columns(2)
        before = left.date_input("Before", value=(first, first), min_value=first, max_value=last,
                                 key="timeline_before")
        after = right.date_input("After", value=(last, last), min_value=first, max_value=last, key="timeline_after")
        if st.button("Compare these periods", key="timeline_compare_pick") and len(before) == 2 and len(after) == 2:
            st.session_state[PERIODS_KEY] = (f"{before[0]}..{before[1]}", f"{after[0]}..{after[1]}")


def _comparison(name: str, model: str | None) -> None:
    periods = st.session_state.get(PERIODS_KEY)
    if not periods:
        return
    st.subheader(f"Before {periods[0]} vs after {periods[1]}")
    try:
        with st.spinner("Comparing the periods (the drift report takes a few seconds)…"):
            doc, html = compare_windows(_shared.engine(), name, periods[0], periods[1], model)
    except ReviewInputError as exc:
        st.error(_shared.md(exc))
        return
    rows = []
    for metric, m in doc["metrics"].items():
        if m is None:
            continue
        r = metric.endswith("_rate")
        rows.append({"metric": LABELS[metric], "before": fmt.metric_value(m["before"], r),
                     "after": fmt.metric_value(m["after"], r),
                     "delta [CI]": fmt.metric_delta(m["delta"], m["ci_low"], m["ci_high"], r),
                     "p": fmt.p_value(m["p_value"]), "n before": m["n_before"], "n after": m["n_after"]})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="timeline_compare_table")
    ex_before, ex_after = st.columns(2)
    for col, side in ((ex_before, "before"), (ex_after, "after")):
        col.caption(f"Example requests {side}")
        col.dataframe(pd.DataFrame(doc["examples"][side]).astype("string"), hide_index=True, width="stretch",
                      key=f"timeline_examples_{side}")
    for kind in ("outputs", "inputs"):
        block = doc["drift"][kind]
        if block and "skipped" in block:
            st.caption(f"Drift of {kind}: skipped ({_shared.md(block['skipped'])}).")
        elif block:
            st.caption(f"Drift of {kind}: {fmt.pct(block['drifted_share'])} of the compared columns drifted.")
    if "outputs" in html:
        with st.expander("Output drift report (Evidently)"):
            st.iframe(html["outputs"], height=700)


def _search(name: str, model: str | None) -> None:
    st.subheader("Find requests like this complaint")
    text = st.text_area("Paste a complaint or an example request", key="timeline_complaint")
    if not st.button("Search", key="timeline_search", disabled=not text.strip()):
        return
    try:
        doc = similar(_shared.engine(), name, text, model)
    except ReviewInputError as exc:
        st.error(_shared.md(exc))
        return
    split = doc["split_at"] or "no change point: nearest overall"
    st.caption(f"Nearest requests by their {doc['searched']} (lexical), split at {_shared.md(split)}.")
    if not doc["results"]:
        st.info("No logged request shares a word with this text.")
        return
    st.dataframe(pd.DataFrame(doc["results"]).astype("string"), hide_index=True, width="stretch",
                 key="timeline_similar")


IMPORT_COLUMNS = (("timestamp_col", "timestamp"), ("model_col", "model"), ("output_col", "output"),
                  ("input_col", "input"), ("id_col", "request id"))


def _import_mapping() -> LoadMapping:
    st.caption("Columns are found by their usual names (timestamp / created_at, model, output / response, input / "
               "prompt, request_id); name them here when yours differ.")
    grid = st.columns(3)
    fields = {field: grid[i % 3].text_input(f"{label} column", key=f"timeline_import_{field}").strip() or None
              for i, (field, label) in enumerate(IMPORT_COLUMNS)}
    fields["timestamp_format"] = st.text_input("timestamp format (strftime; empty: ISO 8601 or epoch s/ms)",
                                               key="timeline_import_ts_format").strip() or None
    return LoadMapping(**fields)


def _render_import(first: bool) -> None:
    """Bring a production log in from the browser (very large logs: `log import` in docs/timeline.md)."""
    with st.expander("Import a production log", expanded=first, icon=":material/upload_file:"):
        st.caption("An upload is read in memory; for logs of several GB use `./review log import` from a terminal "
                   "(it streams the file; see docs/timeline.md).")
        upload = st.file_uploader("Log file (CSV, JSONL, JSON, Parquet; .gz too)", key="timeline_upload",
                                  type=["csv", "jsonl", "json", "parquet", "gz"])
        mapping = _import_mapping()
        if upload is not None and st.session_state.get("timeline_import_file") != upload.name:
            st.session_state["timeline_import_file"] = upload.name  # a new file: its name is the default
            st.session_state["timeline_import_name"] = upload.name.split(".", 1)[0]
        name = st.text_input("Log name", key="timeline_import_name").strip()
        if not st.button("Import", type="primary", key="timeline_import", disabled=upload is None or not name):
            return
        assert upload is not None  # the button is disabled without one
        try:
            with st.spinner("Importing and checking every call…"):
                result = import_log(_shared.engine(), io.BytesIO(upload.getvalue()), upload.name, name, mapping)
        except ReviewInputError as exc:
            st.error(f"Nothing was imported. {_shared.md(exc)}")
            return
        st.session_state["timeline_log"] = result.name
        models = ", ".join(f"{model} ({n:,})" for model, n in result.models.items())
        st.success(f"Imported {_shared.md(result.name)}: {result.rows:,} calls ({_shared.md(models)}).")
        for warning in result.warnings:
            st.warning(_shared.md(warning))


def _render() -> None:
    logs = list_logs(_shared.engine())
    if not logs:
        st.info("No production log yet: import one below (one row per call, with a timestamp, the model and "
                "its output), and the timeline shows how each model behaved over time.")
    _render_import(first=not logs)
    logs = logs or list_logs(_shared.engine())
    if not logs:
        return
    name = st.selectbox("Log", [log["name"] for log in logs], key="timeline_log")
    models = next(log["models"] for log in logs if log["name"] == name)
    left, right = st.columns(2)
    model = left.selectbox("Model", ["(all)", *models], key="timeline_model")
    model = None if model == "(all)" else model
    window = right.radio("Window", ["hour", "day", "week"], index=1, horizontal=True, key="timeline_window")
    try:
        doc = _shared.timeline(_shared.database_url(), name, model, window)
    except ReviewInputError as exc:
        st.error(_shared.md(exc))
        return
    starts = [pd.Timestamp(w["start"]) for w in doc["windows"]]
    ends = [pd.Timestamp(w["end"]) - pd.Timedelta(seconds=1) for w in doc["windows"]]
    first, last = min(starts).date(), max(ends).date()
    _charts(doc)
    _change_points(doc, first, last)
    _period_pickers(first, last)
    _comparison(name, model)
    _search(name, model)


_render()
