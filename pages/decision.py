"""Decision: the active comparison's verdict under a locked policy, the owner's signed decision,
comments, the decision history, verification and the exported change record."""
from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlmodel import Session

from lib.comparisons import get_comparison
from lib.decisions import (DECISIONS, DecisionRequest, add_comment, current_owner, decide, decision_summary,
                           list_comments, list_decisions)
from lib.errors import ReviewInputError
from lib.export import export_record
from lib.gate import compute_verdict
from lib.policy import list_policies, policy_names
from lib.signing import key_dir
from lib.verify import verify_decision, verify_store
from pages import _shared

st.title("Decision")
READ_TTL_S = 30


@st.cache_data(ttl=READ_TTL_S, show_spinner="Computing the verdict…")
def _verdict(url: str, comparison: str, policy: str, version: int) -> dict:
    verdict, _report = compute_verdict(_shared.engine_for(url), comparison, policy, version)
    return verdict.to_dict()


@st.cache_data(ttl=READ_TTL_S, show_spinner="Checking signatures and evidence…")
def _integrity(url: str, decision_id: int) -> str:
    problems = verify_decision(_shared.engine_for(url), decision_id)
    return "intact" if not problems else "; ".join(p.message for p in problems)


@st.cache_data(ttl=READ_TTL_S, show_spinner="Preparing the change record…")
def _export(url: str, comparison: str, fmt: str) -> str:
    return export_record(_shared.engine_for(url), comparison, fmt)


def _after_write() -> None:
    for cached in (_verdict, _integrity, _export):
        cached.clear()


def _choose_policy() -> tuple[str, int] | None:
    names = policy_names(_shared.engine())
    if not names:
        st.info("No policy yet: lock one on the Policies page (or `python -m lib policy create`).")
        return None
    left, right = st.columns([3, 1])
    name = left.selectbox("Policy", names, key="decision_policy")
    versions = [p["version"] for p in list_policies(_shared.engine(), name)]
    return name, right.selectbox("Version", versions, key="decision_policy_version")


def _render_verdict(verdict: dict) -> None:
    st.subheader(f"Verdict: {verdict['verdict'].upper()}")
    st.caption(f"Policy {_shared.md(verdict['policy_name'])} v{verdict['policy_version']} · sha256 "
               f"`{verdict['policy_hash']}` · locked {verdict['policy_locked_at']} · {verdict['n']} pairs · "
               f"{verdict['ci_level']:.0%} intervals")
    if verdict["post_hoc"]:
        st.warning(f"POST-HOC: this policy was locked after the candidate's first output "
                   f"({verdict['candidate_first_output_at']}). The verdict was not pre-registered.")
    rows = [{"criterion": c["criterion"], "threshold": c["threshold"], "margin": c["margin"],
             "observed": c["observed"], "CI": f"[{c['ci'][0]:.4g}, {c['ci'][1]:.4g}]" if c["ci"] else "",
             "result": c["result"], "blocking": c["blocking"], "why": c["reason"]} for c in verdict["criteria"]]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="decision_verdict_table")
    for note in verdict["notes"]:
        st.caption(_shared.md(note))


def _render_sign(comparison: str, policy: tuple[str, int], owner: str | None) -> None:
    st.subheader("Sign a decision")
    if owner is None:
        st.info("This comparison's system has no owner yet; only the owner may sign. Set one with "
                "`python -m lib system set-owner SYSTEM --owner NAME`.")
    with st.form("decision_sign_form"):
        signer = st.text_input("Signer (the system owner's key name)", value=owner or "", key="decision_signer")
        choice = st.radio("Decision", DECISIONS, horizontal=True, key="decision_choice")
        rationale = st.text_area("Rationale", key="decision_rationale")
        conditions = st.text_area("Conditions (canary share, rollback triggers…)", key="decision_conditions")
        passphrase = st.text_input("Key passphrase", type="password", key="decision_passphrase")
        submitted = st.form_submit_button("Sign", type="primary", key="decision_sign")
    st.caption(f"Private keys are read from {_shared.md(key_dir())}.")
    if submitted:
        req = DecisionRequest(comparison, choice, signer, rationale, conditions, policy[0], policy[1])
        try:
            row = decide(_shared.engine(), req, passphrase)
        except ReviewInputError as exc:
            st.error(f"Nothing was signed. {_shared.md(exc)}")
            return
        _after_write()
        st.success(f"Signed decision {row.id}: {row.decision} by {_shared.md(row.signer)}.")


def _render_comments(comparison: str) -> None:
    st.subheader("Comments")
    for c in list_comments(_shared.engine(), comparison):
        st.markdown(f"**{_shared.md(c['author'])}** · {c['created_at']}  \n{_shared.md(c['text'])}")
    with st.form("decision_comment_form", clear_on_submit=True):
        author = st.text_input("Your name", key="decision_comment_author")
        text = st.text_area("Comment", key="decision_comment_text")
        if st.form_submit_button("Add comment", key="decision_comment_add"):
            try:
                add_comment(_shared.engine(), comparison, author, text)
            except ReviewInputError as exc:
                st.error(_shared.md(exc))
                return
            _after_write()
            st.rerun()


def _render_history(comparison: str) -> None:
    st.subheader("Decisions")
    rows = [decision_summary(d) for d in list_decisions(_shared.engine(), comparison)]
    if not rows:
        st.caption("No decision signed yet.")
        return
    url = _shared.database_url()
    table = pd.DataFrame([{"id": r["id"], "signed_at": r["signed_at"], "decision": r["decision"],
                           "verdict": r["verdict"], "post_hoc": r["post_hoc"], "signer": r["signer"],
                           "policy": r["policy"], "key": r["key_fingerprint"][:16],
                           "integrity": _integrity(url, r["id"])} for r in rows])
    st.dataframe(table, hide_index=True, width="stretch", key="decision_history")


def _render_verify_and_export(comparison: str) -> None:
    st.subheader("Verification and record")
    if st.button("Verify the whole audit trail", key="decision_verify"):
        result = verify_store(_shared.engine())
        if result.ok:
            st.success(f"Intact: {result.counts['events']} events, {result.counts['decisions']} decisions, "
                       f"{result.counts['policies']} policies checked.")
        for problem in result.problems:
            st.error(_shared.md(problem))
    url = _shared.database_url()
    left, right = st.columns(2)
    left.download_button("Change record (Markdown)", _export(url, comparison, "md"), file_name=f"{comparison}.md",
                         mime="text/markdown", key="decision_download_md")
    right.download_button("Change record (JSON)", _export(url, comparison, "json"), file_name=f"{comparison}.json",
                          mime="application/json", key="decision_download_json")


def _render(comparison: str) -> None:
    with Session(_shared.engine()) as session:
        comp = get_comparison(session, comparison)
        owner = current_owner(session, comp.system)
    st.caption(f"Comparison **{_shared.md(comparison)}** · system {_shared.md(comp.system)} · "
               f"owner {_shared.md(owner or '(none)')}")
    policy = _choose_policy()
    if policy is not None:
        try:
            _render_verdict(_verdict(_shared.database_url(), comparison, *policy))
        except ReviewInputError as exc:
            st.error(_shared.md(exc))
        _render_sign(comparison, policy, owner)
    _render_comments(comparison)
    _render_history(comparison)
    _render_verify_and_export(comparison)


active = _shared.active_comparison()
if active is None:
    st.info("No comparison yet. Run one or load a recorded file first.")
else:
    _render(active)
