"""Comparisons: the list, and the active one's runs, models and load report."""
from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlmodel import Session

from lib.review import fmt
from lib.review.comparisons import get_comparison
from lib.review.fmt import DASH
from lib.store.columns import from_json
from pages import _catalog_ui, _shared

st.title("Comparisons")
PREVIEW_ROWS = 200


def _when(value: object) -> str:
    return DASH if fmt.missing(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")


def _list_view(rows: list[dict]) -> pd.DataFrame:
    """One line per comparison, every cell text or a count (no None), narrow enough for 1280 px."""
    return pd.DataFrame({
        "name": [r["name"] for r in rows],
        "baseline → candidate": [f"{r['baseline']} → {r['candidate']}" for r in rows],
        "cases": [r["n_cases"] for r in rows], "errors": [r["n_errors"] for r in rows],
        "status": [r["status"] or DASH for r in rows], "system": [r["system"] or DASH for r in rows],
        "dataset": [r["dataset"] or DASH for r in rows], "created (UTC)": [_when(r["created_at"]) for r in rows]})


def _render_list(rows: list[dict]) -> None:
    st.dataframe(_list_view(rows), hide_index=True, width="stretch", key="comparisons_table",
                 column_config={"name": st.column_config.TextColumn(width=150),
                                "baseline → candidate": st.column_config.TextColumn(width=200),
                                "cases": st.column_config.NumberColumn(width=55),
                                "errors": st.column_config.NumberColumn(width=55),
                                "status": st.column_config.TextColumn(width=75),
                                "system": st.column_config.TextColumn(width=70),
                                "dataset": st.column_config.TextColumn(width=90),
                                "created (UTC)": st.column_config.TextColumn(width=115)})
    names = [r["name"] for r in rows]
    active = _shared.active_comparison()
    choice = st.selectbox("Open", names, index=names.index(active) if active in names else 0,
                          key="comparisons_open")
    st.button("Make active", key="comparisons_make_active", on_click=_shared.set_active, args=(choice,),
              disabled=choice == active)


def _run_card(title: str, run: dict) -> None:
    st.subheader(title)
    # identifiers and URLs verbatim in code spans: md() inside a URL shows its backslashes (GFM autolinks)
    st.markdown(f"**Model:** {_shared.code(run['model'])}")
    if run["api_base"]:
        st.markdown(f"**API base:** {_shared.code(run['api_base'])}")
    st.markdown(f"**Status:** {run['status']} · **outputs:** {run['n_outputs']} · **errors:** {run['n_errors']}")
    if run["served_model"] or run["system_fingerprint"]:
        served = _shared.code(run["served_model"]) if run["served_model"] else "unknown"
        fingerprint = _shared.code(run["system_fingerprint"]) if run["system_fingerprint"] else "none"
        st.caption(f"Provider reported: model {served}, fingerprint {fingerprint}")


def _render_active(info: dict) -> None:
    st.header(_shared.md_text(info["name"]), divider="gray", anchor=False)
    st.caption(f"Dataset {_shared.md_text(info['dataset'])} v{info['dataset_version']} · {info['n_cases']} cases · "
               f"source {info['source']} · system {_shared.md_text(info['system'])}")
    left, right = st.columns(2)
    with left:
        _run_card("Baseline", info["baseline_run"])
    with right:
        _run_card("Candidate", info["candidate_run"])
    if info["status"] in ("running", "partial", "pending") and info["source"] == "run":
        st.warning("This run is unfinished or has errors. Re-running it resumes: completed cases are "
                   "never sent again.")
        st.page_link("pages/run.py", label="Resume on the Run page", icon="▶️")


def _render_notes(name: str) -> None:
    with Session(_shared.engine()) as session:
        notes = from_json(get_comparison(session, name).notes_json) or {}
    if notes.get("baseline_only") or notes.get("candidate_only"):
        st.warning(f"Unpaired rows in the recorded file: {notes.get('baseline_only', 0)} baseline only, "
                   f"{notes.get('candidate_only', 0)} candidate only. First ids: "
                   f"{_shared.md_text(', '.join(map(str, notes.get('first_unpaired_ids', []))))}")
    for warning in notes.get("warnings", []):
        st.info(_shared.md_text(warning))


def _render_preview(name: str) -> None:
    frame = _shared.pairs(_shared.database_url(), name)
    st.subheader(f"Outputs ({len(frame)} pairs)")
    head = frame.head(PREVIEW_ROWS)
    view = pd.DataFrame({  # an output that failed shows its error in its place; nothing reads None
        "case": head["case_key"].astype(str), "category": head["category"].astype("string").fillna(DASH),
        "input": head["input_text"].astype("string").fillna(""),
        "baseline output": _output(head, "b"), "candidate output": _output(head, "c")})
    st.caption(f"The first {min(len(frame), PREVIEW_ROWS)} pairs; every pair with its status is on **Diffs**.")
    st.dataframe(view, hide_index=True, width="stretch", key="comparisons_preview",
                 column_config={"case": st.column_config.TextColumn(width=80),
                                "category": st.column_config.TextColumn(width=90),
                                "input": st.column_config.TextColumn(width=200),
                                "baseline output": st.column_config.TextColumn(width=200),
                                "candidate output": st.column_config.TextColumn(width=200)})


def _output(frame: pd.DataFrame, side: str) -> pd.Series:
    text = frame[f"{side}_text"].astype("string")
    error = "error: " + frame[f"{side}_error"].astype("string")
    return text.fillna(error).fillna("(no output)")


rows = _shared.comparisons(_shared.database_url())
if not rows:
    st.info("No comparison yet. Run a golden dataset through two models on **Run**, or load a recorded "
            "file (wide, long or promptfoo) on **Load**.")
    st.stop()
_render_list(rows)
active = _shared.active_comparison()
info = next(r for r in rows if r["name"] == active)
_render_active(info)
_render_notes(active)
_render_preview(active)
_catalog_ui.deprecation_radar()
