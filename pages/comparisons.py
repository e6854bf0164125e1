"""Comparisons: the list, and the active one's runs, models and load report."""
from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlmodel import Session

from lib.review.comparisons import get_comparison
from lib.store.columns import from_json
from pages import _shared

st.title("Comparisons")


def _render_list(rows: list[dict]) -> None:
    table = pd.DataFrame([{k: r[k] for k in ("name", "baseline", "candidate", "n_cases", "n_errors",
                                            "status", "source", "system", "dataset", "created_at")}
                          for r in rows])
    st.dataframe(table, hide_index=True, width="stretch", key="comparisons_table",
                 column_config={"n_cases": st.column_config.NumberColumn("cases"),
                                "n_errors": st.column_config.NumberColumn("errors")})
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
    cols = ["case_key", "category", "input_text", "b_text", "c_text", "b_error", "c_error"]
    st.dataframe(frame[cols].head(200), hide_index=True, width="stretch", key="comparisons_preview",
                 column_config={"b_text": "baseline output", "c_text": "candidate output",
                                "input_text": "input", "case_key": "case"})


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
