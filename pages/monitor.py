"""Monitor: a pinned model over time — metrics per point with the current baseline's band, alerts
(metrics out of band, fingerprint changes), and each point's comparison with the baseline it ran against."""
from __future__ import annotations

import shlex
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lib.data.golden import list_datasets
from lib.errors import ReviewInputError
from lib.release.monitor import TRACKED, mark_baseline
from lib.review.report import METRIC_LABELS
from pages import _model_picker, _shared

CONFIRM_KEY = "monitor_mark_pending"  # the point awaiting confirmation to become the baseline
FLASH_KEY = "monitor_flash"  # a success message shown once after the rerun
IN_BAND, OUT_OF_BAND, FORMER = "seagreen", "crimson", "grey"

st.title("Monitor")
st.caption("Each point re-runs the golden set against the same model identifier and is compared with the "
           "series' baseline snapshot at the time (paired statistics). A metric leaves its band when the CI of "
           "its change lies wholly beyond the margin; a changed fingerprint under the same name is also an alert.")


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


ALERT_KINDS = {"metric out of band": "metrics out of band", "fingerprint change": "fingerprint changes"}


def _alert_kinds(p: dict[str, Any]) -> list[str]:
    return (["metric out of band"] if p["alerts"] else []) + (["fingerprint change"] if p["findings"] else [])


def _alert_summary(series: list[dict[str, Any]]) -> str:
    """Points with an alert and why: '2 (fingerprint changes)'; with counts when both kinds occur."""
    kinds = [k for p in series for k in _alert_kinds(p)]
    total = sum(bool(_alert_kinds(p)) for p in series)
    counts = {k: kinds.count(k) for k in ALERT_KINDS if k in kinds}
    if len(counts) < 2:
        return f"{total} ({ALERT_KINDS[next(iter(counts))]})" if counts else "0"
    return f"{total} ({', '.join(f'{n} {k if n == 1 else ALERT_KINDS[k]}' for k, n in counts.items())})"


def _render_status(series: list[dict[str, Any]]) -> None:
    latest = series[-1]
    kinds = _alert_kinds(latest)
    # Three short cards, then the alert summary on a row of its own: at four a row the values were cut off.
    cols = st.columns(3)
    cols[0].metric("Points", len(series))
    cols[1].metric("Latest point", latest["status"], ", ".join(kinds) or None, delta_color="off", delta_arrow="off",
                   help=f"compared with {latest['compared_with']}" if latest["compared_with"] else None)
    cols[2].metric("Latest fingerprint", latest["system_fingerprint"] or "—")
    st.metric("Alerts", _alert_summary(series),
              help="Points with an alert, by kind: a metric out of its band, or a fingerprint / served-model change. "
                   "The points table below names each point's alerts; the two alert tables list every one.")


def _alert_name(metric: str) -> str:
    """The chart's metric key as alerts name it (judge dimensions: judge_x -> judge:x)."""
    return "judge:" + metric.removeprefix("judge_") if metric.startswith("judge_") else metric


def _metric_frame(series: list[dict[str, Any]], metric: str, baseline_id: int | None) -> pd.DataFrame:
    rows = []
    for p in series:
        m = p["metrics"].get(metric)
        if m:
            rows.append({"point": p["id"], "at": p["created_at"], "value": m["candidate"],
                         "ci_low": m["ci_low"] + m["baseline"], "ci_high": m["ci_high"] + m["baseline"],
                         "current": p["baseline_point_id"] == baseline_id, "compared_with": p["compared_with"],
                         "out": any(a["metric"] == _alert_name(metric) for a in p["alerts"])})
    frame = pd.DataFrame(rows)
    if metric.endswith("_rate"):  # a rate's CI cannot leave [0, 1]
        frame[["ci_low", "ci_high"]] = frame[["ci_low", "ci_high"]].clip(0.0, 1.0)
    return frame


def _add_band(fig: go.Figure, x: pd.Series, band: dict[str, Any], metric: str) -> None:
    low, high = band.get("low"), band.get("high")
    base = band["baseline"]
    low, high = base if low is None else low, base if high is None else high
    if metric.endswith("_rate"):
        low, high = max(low, 0.0), min(high, 1.0)
    fig.add_trace(go.Scatter(x=x, y=[high] * len(x), mode="lines", line={"width": 0}, showlegend=False,
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=x, y=[low] * len(x), mode="lines", line={"width": 0}, fill="tonexty",
                             fillcolor="rgba(120,160,220,0.25)", name="band (current baseline)"))


def _add_points(fig: go.Figure, frame: pd.DataFrame, current: bool) -> None:
    part = frame[frame["current"] == current]
    if part.empty:
        return
    colors = part["out"].map({True: OUT_OF_BAND, False: IN_BAND}) if current else FORMER
    fig.add_trace(go.Scatter(
        x=part["at"], y=part["value"], mode="markers", name="point (95% CI)" if current else
        "point compared with a former baseline", marker={"color": colors, "symbol": "circle" if current else
                                                          "circle-open", "size": 9},
        error_y={"type": "data", "symmetric": False, "array": part["ci_high"] - part["value"],
                 "arrayminus": part["value"] - part["ci_low"]}, customdata=part[["point", "compared_with"]],
        hovertemplate="point %{customdata[0]}<br>%{y:.4g}<br>compared with %{customdata[1]}<extra></extra>"))


def _render_chart(series: list[dict[str, Any]]) -> None:
    judged = sorted({m for p in series for m in p["metrics"] if m.startswith("judge_")})
    available = [m for m in TRACKED if any(m in p["metrics"] for p in series)] + judged
    if not available:
        st.info("Only the baseline snapshot so far: the next `monitor run` adds the first compared point.")
        return
    metric = st.selectbox("Metric", available, format_func=lambda m: METRIC_LABELS.get(m, m), key="monitor_metric")
    first = series[0]
    current = _shared.monitor_bands(_shared.database_url(), first["model"], first["dataset"], first["config_hash"])
    frame = _metric_frame(series, metric, current["baseline_point_id"])
    fig = go.Figure()
    band = current["bands"].get(metric)
    if band and (band.get("low") is not None or band.get("high") is not None):
        _add_band(fig, frame["at"], band, metric)
    if metric in current["values"]:
        fig.add_trace(go.Scatter(x=frame["at"], y=[current["values"][metric]] * len(frame), mode="lines",
                                 name=f"baseline (point {current['baseline_point_id']})",
                                 line={"dash": "dash", "color": "grey"}))
    _add_points(fig, frame, current=True)
    _add_points(fig, frame, current=False)
    fig.update_layout(height=360, margin={"t": 20, "b": 20}, yaxis_title=METRIC_LABELS.get(metric, metric))
    st.plotly_chart(fig, key="monitor_chart")
    st.caption("Band: the current baseline's value plus or minus the margins (policy or defaults); rates are "
               "clipped to [0, 1]. A point's CI is its baseline's value plus the CI of the paired change; a marker "
               "is red when THIS metric left its band against the baseline it was compared with. Open grey "
               "markers were compared with a former baseline.")


def _render_findings(series: list[dict[str, Any]]) -> None:
    alerts = [{"point": p["id"], "at": p["created_at"], "compared with": p["compared_with"], "metric": a["metric"],
               "threshold": a["threshold"], "margin": a["margin"], "observed": a["observed"], "reason": a["reason"]}
              for p in series for a in p["alerts"]]
    findings = [{"point": p["id"], "at": p["created_at"], "kind": f["kind"], "against": f["against"],
                 "from": f["from"], "to": f["to"], "detail": f.get("detail")} for p in series for f in p["findings"]]
    st.subheader("Alerts: metrics out of band")
    if alerts:
        st.dataframe(pd.DataFrame(alerts), hide_index=True, key="monitor_alerts")
    else:
        st.caption("No metric has left its band."
                   + (" The alerts counted above are fingerprint or served-model changes." if findings else ""))
    st.subheader("Alerts: fingerprint and served-model changes")
    if findings:
        st.dataframe(pd.DataFrame(findings), hide_index=True, key="monitor_findings")
    else:
        st.caption("The provider reported the same fingerprint and model id at every point.")


def _open_comparison(name: str) -> None:
    _shared.set_active(name)
    st.switch_page("pages/overview.py")


def _point_alerts(p: dict[str, Any]) -> str:
    """A point's alerts in the Alerts card's terms (its kinds), naming what left its band or changed. The
    card counts points by kind; a count of alert rows here did not add up to it (several metrics can leave
    their bands at one point, and one change can be found against the baseline and the previous point)."""
    parts = []
    if p["alerts"]:
        metrics = dict.fromkeys(METRIC_LABELS.get(_chart_key(a["metric"]), a["metric"]) for a in p["alerts"])
        parts.append(f"metric out of band ({', '.join(metrics)})")
    if p["findings"]:
        changed = dict.fromkeys(f["kind"].replace("_", " ") for f in p["findings"])
        parts.append(f"fingerprint change ({', '.join(changed)})")
    return " · ".join(parts)


def _chart_key(alert_metric: str) -> str:
    """An alert's metric as the report keys it (judge:x -> judge_x), for its label."""
    return "judge_" + alert_metric.removeprefix("judge:") if alert_metric.startswith("judge:") else alert_metric


def _points_table(series: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"point": p["id"], "at": p["created_at"], "status": p["status"], "alerts": _point_alerts(p),
                          "compared with": p["compared_with"] or "", "baseline": "yes" if p["is_baseline"] else "",
                          "fingerprint": p["system_fingerprint"], "served model": p["served_model"],
                          "comparison": p["comparison"]}
                         for p in series])


def _render_mark(point: dict[str, Any]) -> None:
    """Two steps: ask, then confirm (re-marking changes what every later point is compared with)."""
    if st.session_state.get(CONFIRM_KEY) != point["id"]:
        return
    st.warning(f"Make point {point['id']} the baseline snapshot? Later points will be compared with its run; "
               "earlier points keep their comparisons, labelled as compared with a former baseline.")
    yes, no = st.columns(2)
    if no.button("Cancel", key="monitor_mark_cancel"):
        st.session_state.pop(CONFIRM_KEY, None)
        st.rerun()
    if not yes.button(f"Confirm: point {point['id']} becomes the baseline", type="primary",
                      key="monitor_mark_confirm"):
        return
    st.session_state.pop(CONFIRM_KEY, None)
    try:
        mark_baseline(_shared.engine(), point["id"])
    except ReviewInputError as exc:
        st.error(_shared.md_text(exc))
        return
    _shared.after_monitor_mark()
    st.session_state[FLASH_KEY] = f"Point {point['id']} is now the baseline snapshot of this series."
    st.rerun()


def _render_points(series: list[dict[str, Any]]) -> None:
    st.subheader("Points")
    if FLASH_KEY in st.session_state:
        st.success(st.session_state.pop(FLASH_KEY))
    st.dataframe(_points_table(series), hide_index=True, key="monitor_points_table")
    ids = [p["id"] for p in series]
    chosen = st.selectbox("Point", ids, index=len(ids) - 1, key="monitor_point")
    point = next(p for p in series if p["id"] == chosen)
    left, right = st.columns(2)
    label = f"Open its comparison with {point['compared_with']}" if point["compared_with"] else "No comparison"
    if left.button(label, key="monitor_open", disabled=not point["comparison"]):
        _open_comparison(point["comparison"])
    if right.button("Make it the baseline snapshot…", key="monitor_mark", disabled=point["is_baseline"]):
        st.session_state[CONFIRM_KEY] = point["id"]
    _render_mark(point)


def _render_new_series() -> None:
    """Choose the model to watch with the picker; the series runs from the command line (cron)."""
    with st.expander("Start a series for another model"):
        datasets = sorted({d["name"] for d in list_datasets(_shared.engine())}) or ["NAME"]
        dataset = st.selectbox("Golden dataset", datasets, key="monitor_new_dataset")
        model, api_base = _model_picker.model_picker("monitor_new", "model to watch")
        command = (f"./review monitor run --dataset {shlex.quote(dataset)} --model {shlex.quote(model or 'MODEL')}"
                   + (f" --api-base {shlex.quote(api_base)}" if api_base else ""))
        st.code(command, language="bash")
        st.caption("Run it from cron: it exits 1 on an alert. The first run is the series' baseline snapshot.")


def _render() -> None:
    points = _shared.monitor_points(_shared.database_url())
    if not points:
        st.info("No monitor points yet. Start a series from the command line (for cron):  \n"
                "`./review monitor run --dataset NAME --model MODEL`")
        _render_new_series()
        return
    series = _pick_series(points)
    _render_status(series)
    _render_chart(series)
    _render_findings(series)
    _render_points(series)
    _render_new_series()


_render()
