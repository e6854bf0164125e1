"""Distributions: how the candidate's outputs are spread compared with the baseline's."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from lib.review.compute import NO_CATEGORY
from lib.review.constants import SIDE_NAMES, SIDES
from pages import _shared

st.title("Distributions")
COLORS = {"baseline": "#636EFA", "candidate": "#EF553B"}
N_BINS = 40
SMALL = [("latency_s", "Latency (s)"), ("cost_usd", "Cost per call (USD)"),
         ("completion_tokens", "Completion length (tokens)"), ("len_words", "Output length (words)")]


def _long(frame: pd.DataFrame, col: str) -> pd.DataFrame:
    """Both sides of one check column stacked, with a `side` column (missing values dropped)."""
    parts = [pd.DataFrame({"value": frame[f"{p}_{col}"].astype("Float64"), "side": side,
                           "category": frame["category"]}) for p, side in SIDE_NAMES.items()]
    return pd.concat(parts, ignore_index=True).dropna(subset=["value"])


def _binned(data: pd.DataFrame, by_category: bool) -> tuple[pd.DataFrame, float]:
    """Counts per (side, category, bin) on shared edges, and the bin width. Binned here, not in the browser:
    at 10k pairs the raw values would be megabytes of chart data per histogram."""
    values = data["value"].to_numpy(dtype=float)
    edges = np.histogram_bin_edges(values, bins=N_BINS if np.ptp(values) > 0 else 1)
    width = float(edges[1] - edges[0]) if np.ptp(values) > 0 else 1.0
    centers = (edges[:-1] + edges[1:]) / 2
    keys = ["side", "category"] if by_category else ["side"]
    parts = []
    for key, group in data.groupby(keys, sort=False):
        counts, _ = np.histogram(group["value"].to_numpy(dtype=float), bins=edges)
        labels = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        parts.append(pd.DataFrame({"value": centers, "outputs": counts, **labels}))
    return pd.concat(parts, ignore_index=True), width


def _histogram(frame: pd.DataFrame, col: str, title: str, by_category: bool = False) -> None:
    """`title` names the quantity with its unit: it is also the x axis title."""
    data = _long(frame, col)
    if data.empty:
        st.caption(f"{title}: no values recorded.")
        return
    n = data.groupby("side").size().to_dict()
    data["category"] = data["category"].astype("string").fillna(NO_CATEGORY)
    binned, width = _binned(data, by_category)
    # only the sides with values are drawn (and listed in the legend)
    fig = px.bar(binned, x="value", y="outputs", color="side", barmode="overlay", opacity=0.6,
                 facet_col="category" if by_category else None, facet_col_wrap=3,
                 color_discrete_map=COLORS, labels={"value": title, "outputs": "outputs", "side": "side"},
                 title=f"{title} (n: baseline {n.get('baseline', 0)}, candidate {n.get('candidate', 0)})")
    fig.update_traces(width=width)
    fig.for_each_annotation(lambda a: a.update(text=a.text.removeprefix("category=")))
    fig.update_layout(height=420 if not by_category else 300 * max(1, -(-data['category'].nunique() // 3)))
    st.plotly_chart(fig, width="stretch", key=f"dist_{col}_{by_category}")


def _small_multiples(frame: pd.DataFrame, measures: list[tuple[str, str]]) -> None:
    """Several histograms as one figure (one chart for the browser to build, not one per measure)."""
    shown = [(col, title, _long(frame, col)) for col, title in measures]
    missing = [title for _, title, data in shown if data.empty]
    shown = [item for item in shown if not item[2].empty]
    if missing:
        st.caption(f"No values recorded: {', '.join(missing)}.")
    if not shown:
        return
    cols = 2
    rows = -(-len(shown) // cols)
    fig = make_subplots(rows=rows, cols=cols, vertical_spacing=0.18, horizontal_spacing=0.08,
                        subplot_titles=[f"{title} (n: {_n_text(data)})" for _, title, data in shown])
    legend: set[str] = set()
    for i, (_, title, data) in enumerate(shown):
        binned, width = _binned(data, by_category=False)
        r, c = i // cols + 1, i % cols + 1
        for side, part in binned.groupby("side", sort=False):  # only sides with values
            fig.add_trace(go.Bar(x=part["value"], y=part["outputs"], width=width, name=side, opacity=0.6,
                                 marker_color=COLORS[side], legendgroup=side, showlegend=side not in legend),
                          row=r, col=c)
            legend.add(side)
        fig.update_xaxes(title_text=title, row=r, col=c)
        fig.update_yaxes(title_text="outputs", row=r, col=c)
    fig.update_layout(barmode="overlay", height=380 * rows, legend_title_text="side")
    st.plotly_chart(fig, width="stretch", key="dist_small_multiples")


def _n_text(data: pd.DataFrame) -> str:
    n = data.groupby("side").size().to_dict()
    return f"baseline {n.get('baseline', 0)}, candidate {n.get('candidate', 0)}"


def _refusal_by_category(by_category: dict, overall: dict | None) -> None:
    rows = []
    groups = {**({"(all)": {"refusal_rate": overall}} if overall else {}), **by_category}
    for cat, metrics in groups.items():
        m = metrics.get("refusal_rate")
        if not m:
            continue
        for side in SIDES:
            low, high = m[f"{side}_ci"]
            rows.append({"category": f"{cat} (n={m['n']})", "side": side, "rate": m[side],
                         "minus": m[side] - low, "plus": high - m[side]})
    if not rows:
        st.caption("Refusal rate: no outputs.")
        return
    data = pd.DataFrame(rows)
    # A side that refused nothing draws no bar: no legend entry for it either, a caption says so
    fig = go.Figure([go.Bar(name=side, x=d["category"], y=d["rate"], marker_color=COLORS[side],
                            showlegend=bool((d["rate"] > 0).any()),
                            error_y={"type": "data", "array": d["plus"], "arrayminus": d["minus"]})
                     for side, d in data.groupby("side")])
    fig.update_layout(barmode="group", title="Refusal rate by category (95% Wilson intervals)",
                      yaxis_tickformat=".0%", yaxis_title="refused outputs (% of the category)",
                      xaxis_title="category (n = cases)", height=420)
    silent = [side for side, d in data.groupby("side") if not (d["rate"] > 0).any()]
    st.plotly_chart(fig, width="stretch", key="dist_refusal")
    if silent:
        st.caption(f"No bars for the {' and '.join(silent)}: it refused none of these outputs "
                   "(the whiskers show how high the rate could still be).")


name = _shared.active_comparison()
if name is None:
    st.info("No comparison yet. Load one (Load page) or run one (Run page).")
    st.stop()
frame = _shared.checked(_shared.database_url(), name)
report = _shared.report(_shared.database_url(), name)
if frame.empty:
    st.warning("No outputs yet.")
    st.stop()
by_category = st.toggle("Split by category", key="dist_by_category")
_histogram(frame, "len_chars", "Output length (characters)", by_category)
_refusal_by_category(report["by_category"], report["metrics"].get("refusal_rate"))
_small_multiples(frame, SMALL)
