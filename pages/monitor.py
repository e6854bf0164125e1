"""Monitor: a pinned model over time — metrics per point with the baseline band, alerts, fingerprint
changes, and each point's comparison with the baseline snapshot."""
from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lib.errors import ReviewInputError
from lib.monitor import TRACKED, mark_baseline
from lib.report import METRIC_LABELS
from pages import _shared

st.title("Monitor")
st.caption("Each point re-runs the golden set against the same model identifier and is compared with the "
           "series' baseline snapshot (paired statistics). A metric leaves its band when the CI of its change "
           "lies wholly beyond the margin; a changed fingerprint under the same name is a finding.")


def _series_label(p: dict[str, Any]) -> str:
    return f"{p['dataset']} · config {p['config_hash'][:10]}"


def _pick_series(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    models = sorted({p["model"] for p in points})
    model = st.selectbox("Model", models, key="monitor_model")
    mine = [p for p in points if p["model"] == model]
    labels = list(dict.fromkeys(_series_label(p) for p in mine))
    label = st.selectbox("Series (golden set and exact configuration)", labels, key="monitor_series") if len(
        labels) > 1 else labels[0]
    return [p for p in mine if _series_label(p) == label]


def _render_status(series: list[dict[str, Any]]) -> None:
    latest = series[-1]
    n_alerts = sum(p["status"] == "alert" for p in series)
    cols = st.columns(4)
    cols[0].metric("Points", len(series))
    cols[1].metric("Latest", latest["status"])
    cols[2].metric("Points with alerts", n_alerts)
    cols[3].metric("Latest fingerprint", latest["system_fingerprint"] or "—")


def _metric_frame(series: list[dict[str, Any]], metric: str) -> pd.DataFrame:
    rows = []
    for p in series:
        m, band = p["metrics"].get(metric), p["bands"].get(metric) or {}
        if m:
            rows.append({"point": p["id"], "at": p["created_at"], "value": m["candidate"], "baseline": m["baseline"],
                         "ci_low": m["ci_low"] + m["baseline"], "ci_high": m["ci_high"] + m["baseline"],
                         "low": band.get("low"), "high": band.get("high"), "status": p["status"]})
    return pd.DataFrame(rows)


def _render_chart(series: list[dict[str, Any]]) -> None:
    judged = sorted({m for p in series for m in p["metrics"] if m.startswith("judge_")})
    available = [m for m in TRACKED if any(m in p["metrics"] for p in series)] + judged
    if not available:
        st.info("Only the baseline snapshot so far: the next `monitor run` adds the first compared point.")
        return
    metric = st.selectbox("Metric", available, format_func=lambda m: METRIC_LABELS.get(m, m), key="monitor_metric")
    frame = _metric_frame(series, metric)
    fig = go.Figure()
    if frame["low"].notna().any() or frame["high"].notna().any():
        low = frame["low"].fillna(frame["baseline"])
        high = frame["high"].fillna(frame["baseline"])
        fig.add_trace(go.Scatter(x=frame["at"], y=high, mode="lines", line={"width": 0}, showlegend=False,
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=frame["at"], y=low, mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor="rgba(120,160,220,0.25)", name="band"))
    fig.add_trace(go.Scatter(x=frame["at"], y=frame["baseline"], mode="lines", name="baseline",
                             line={"dash": "dash", "color": "grey"}))
    colors = frame["status"].map({"alert": "crimson", "ok": "seagreen"}).fillna("grey")
    fig.add_trace(go.Scatter(
        x=frame["at"], y=frame["value"], mode="markers+lines", name="point (95% CI)", marker={"color": colors},
        error_y={"type": "data", "symmetric": False, "array": frame["ci_high"] - frame["value"],
                 "arrayminus": frame["value"] - frame["ci_low"]}, customdata=frame["point"],
        hovertemplate="point %{customdata}<br>%{y:.4g}<extra></extra>"))
    fig.update_layout(height=360, margin={"t": 20, "b": 20}, yaxis_title=METRIC_LABELS.get(metric, metric))
    st.plotly_chart(fig, key="monitor_chart")
    st.caption("The CI is the baseline value plus the CI of the paired change; the band is the baseline value "
               "plus or minus the margins (policy or defaults).")


def _render_findings(series: list[dict[str, Any]]) -> None:
    alerts = [{"point": p["id"], "at": p["created_at"], "metric": a["metric"], "threshold": a["threshold"],
               "margin": a["margin"], "observed": a["observed"], "reason": a["reason"]}
              for p in series for a in p["alerts"]]
    findings = [{"point": p["id"], "at": p["created_at"], "kind": f["kind"], "against": f["against"],
                 "from": f["from"], "to": f["to"]} for p in series for f in p["findings"]]
    st.subheader("Alerts")
    if alerts:
        st.dataframe(pd.DataFrame(alerts), hide_index=True, key="monitor_alerts")
    else:
        st.caption("No metric has left its band.")
    st.subheader("Fingerprint and served-model changes")
    if findings:
        st.dataframe(pd.DataFrame(findings), hide_index=True, key="monitor_findings")
    else:
        st.caption("The provider reported the same fingerprint and model id at every point.")


def _open_comparison(name: str) -> None:
    _shared.set_active(name)
    st.switch_page("pages/overview.py")


def _render_points(series: list[dict[str, Any]]) -> None:
    st.subheader("Points")
    table = pd.DataFrame([{"point": p["id"], "at": p["created_at"], "status": p["status"],
                           "baseline": "yes" if p["is_baseline"] else "", "fingerprint": p["system_fingerprint"],
                           "served model": p["served_model"], "alerts": len(p["alerts"]) + len(p["findings"]),
                           "comparison": p["comparison"]} for p in series])
    st.dataframe(table, hide_index=True, key="monitor_points_table")
    ids = [p["id"] for p in series]
    chosen = st.selectbox("Point", ids, index=len(ids) - 1, key="monitor_point")
    point = next(p for p in series if p["id"] == chosen)
    left, right = st.columns(2)
    if left.button("Open its comparison with the baseline", key="monitor_open", disabled=not point["comparison"]):
        _open_comparison(point["comparison"])
    if right.button("Make it the baseline snapshot", key="monitor_mark", disabled=point["is_baseline"]):
        try:
            mark_baseline(_shared.engine(), point["id"])
        except ReviewInputError as exc:
            st.error(_shared.md(exc))
            return
        _shared.after_release_write()
        st.rerun()


def _render() -> None:
    points = _shared.monitor_points(_shared.database_url())
    if not points:
        st.info("No monitor points yet. Start a series from the command line (for cron):  \n"
                "`python -m lib monitor run --dataset NAME --model MODEL`")
        return
    series = _pick_series(points)
    _render_status(series)
    _render_chart(series)
    _render_findings(series)
    _render_points(series)


_render()
