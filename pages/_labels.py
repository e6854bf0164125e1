"""Reviewer refusal labels on the Diffs page: mark the selected outputs, see the rule's agreement.

UI only: storing and applying labels is lib/review/labels.py. A label overrides the refusal rule in every
count (report, pages, gate, drift), so after a label every cached read is dropped.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.review import fmt
from lib.review.constants import SIDE_NAMES
from lib.review.labels import SOURCE_LABEL, agreement, set_label
from pages import _shared

REVIEWER_KEY = "labels_reviewer"


def _verdict(value: object) -> str:
    return fmt.DASH if value is None or pd.isna(value) else "refusal" if bool(value) else "not a refusal"


def _side(row: pd.Series, side: str, name: str) -> None:
    output_id = row.get(f"{side}_output_id")
    if output_id is None or pd.isna(output_id):
        st.caption(f"{name}: no output to label")
        return
    source = row.get(f"{side}_refused_source")
    said = f"rule: {_verdict(row.get(f'{side}_refused_rule'))}"
    if source == SOURCE_LABEL:
        said += f" · **labelled: {_verdict(row.get(f'{side}_refused'))}**"
    st.markdown(f"{name.capitalize()} — {said}")
    key = f"label_{side}_{int(output_id)}"
    cols = st.columns(3)
    choices = (("Refusal", True), ("Not a refusal", False), ("Clear label", None))
    for col, (label, value) in zip(cols, choices):
        disabled = value is None and source != SOURCE_LABEL
        if col.button(label, key=f"{key}_{label}", disabled=disabled):
            _save(int(output_id), value)


def _save(output_id: int, value: bool | None) -> None:
    who = st.session_state.get(REVIEWER_KEY, "")
    if not who.strip():
        st.error("Enter your name above the buttons first: every label records who set it.")
        return
    set_label(_shared.engine(), output_id, value, who)
    _shared.after_settings_change()
    st.rerun()


def _agreement_panel(name: str) -> None:
    result = agreement(_shared.checked(_shared.database_url(), name))
    if not result["n"]:
        st.caption("No output of this comparison is labelled yet: the refusal rule decides every count.")
        return
    a, b, c = st.columns(3)
    a.metric("Rule precision vs labels", fmt.pct(result["precision"]),
             help="Of the labelled outputs the rule calls refusals, the share reviewers call refusals.")
    b.metric("Rule recall vs labels", fmt.pct(result["recall"]),
             help="Of the labelled outputs reviewers call refusals, the share the rule found.")
    c.metric("Labelled outputs", result["n"],
             help=f"{result['labelled_refusals']} labelled refusals; the rule flags {result['rule_refusals']}.")


def render(name: str, row: pd.Series) -> None:
    """The labelling controls for the selected pair's two outputs, and the agreement so far."""
    st.markdown("**Refusal labels** — a label overrides the rule in every count of this comparison.")
    st.text_input("Your name (recorded with each label)", key=REVIEWER_KEY)
    for side, side_name in SIDE_NAMES.items():
        _side(row, side, side_name)
    _agreement_panel(name)
