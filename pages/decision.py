"""Decision: the active comparison's verdict under a locked policy, the owner's signed decision,
comments, the decision history, verification and the exported change record."""
from __future__ import annotations

import functools
from collections.abc import Callable

import pandas as pd
import streamlit as st
from sqlmodel import Session

from lib.errors import ReviewInputError
from lib.governance.decisions import (
    DECISIONS,
    DecisionRequest,
    add_comment,
    current_owner,
    decision_summary,
    list_comments,
    list_decisions,
    sign_decision,
)
from lib.governance.export import export_record
from lib.governance.owners import OwnerChange, claim_system, transfer_system
from lib.governance.policy import list_policies, policy_names
from lib.governance.signing import MIN_PASSPHRASE_CHARS, create_key, key_dir, registered_names
from lib.governance.verify import verify_store
from lib.review.comparisons import get_comparison
from lib.review.headline import lock_sentence
from pages import _shared

st.title("Decision")


def _choose_policy(comparison: str) -> tuple[str, int] | None:
    names = policy_names(_shared.engine())
    if not names:
        st.info("No policy yet: lock one, then its verdict shows here and you can sign on it.")
        _shared.go_button("pages/policy.py", "Lock a policy", "decision_go_policy", ":material/policy:")
        return None
    in_force = _shared.policy_in_force(_shared.database_url(), comparison)
    if "decision_policy" not in st.session_state and in_force and in_force[0] in names:
        st.session_state["decision_policy"] = in_force[0]  # the policy in force, until the reader picks another
    left, right = st.columns([3, 1])
    name = left.selectbox("Policy", names, key="decision_policy")
    versions = [p["version"] for p in list_policies(_shared.engine(), name)]
    return name, right.selectbox("Version", versions, key="decision_policy_version")


def _render_verdict(verdict: dict) -> None:
    st.subheader(f"Verdict: {verdict['verdict'].upper()}")
    st.caption(f"Policy {_shared.md_text(verdict['policy_name'])} v{verdict['policy_version']} · sha256 "
               f"`{verdict['policy_hash']}` · locked {verdict['policy_locked_at']} · {verdict['n']} pairs · "
               f"{verdict['ci_level']:.0%} intervals")
    if verdict["post_hoc"]:
        st.warning(f"POST-HOC. {lock_sentence(verdict)}")
    rows = [{"criterion": c["criterion"], "threshold": c["threshold"], "margin": c["margin"],
             "observed": c["observed"], "CI": f"[{c['ci'][0]:.4g}, {c['ci'][1]:.4g}]" if c["ci"] else "",
             "result": c["result"], "blocking": c["blocking"], "why": c["reason"]} for c in verdict["criteria"]]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="decision_verdict_table")
    for note in verdict["notes"]:
        st.caption(_shared.md_text(note))


def _contradicts(choice: str | None, verdict: str | None) -> bool:
    """Go on any verdict but GO, or no-go on a GO verdict: an override of the pre-registered policy
    (no-go on an inconclusive verdict is not: nothing was shown to be safe)."""
    if choice is None or verdict is None:
        return False
    return (choice == "go") != (verdict == "go")


def _choose_decision(verdict: str | None) -> tuple[str | None, bool]:
    """The signer's decision (no default: a preselected "go" is too easy to sign on a NO-GO) and whether
    it may be signed: one against the verdict needs an explicit confirmation."""
    choice = st.radio("Decision", DECISIONS, index=None, horizontal=True, key="decision_choice",
                      help=f"The verdict under this policy is {verdict.upper()}." if verdict else None)
    if not _contradicts(choice, verdict):
        return choice, True
    st.warning(f"This decision ({choice}) goes against the verdict ({verdict.upper()}). It is signed next to the "
               "verdict, as an override: say why in the rationale.")
    confirmed = st.checkbox(f"I decide {choice} against the {verdict.upper()} verdict", key="decision_confirm_against")
    return choice, confirmed


LAST_SIGNED_KEY = "decision_last_signed"  # the outcome of the last Sign: stays shown (a double click must not hide it)
CLEAR_KEY = "decision_clear_fields"  # form fields to empty on the next run, after a success only


def _clear_after_success() -> None:
    """Empty the fields a success consumed. Forms keep their fields on errors (clear_on_submit would lose a
    typed rationale to a wrong passphrase); widget values can only change before the widget exists."""
    for key in st.session_state.pop(CLEAR_KEY, ()):
        st.session_state[key] = ""


def _render_keys() -> None:
    """Create a signing key: the private key is written encrypted to the key directory, never shown."""
    note = st.session_state.pop("decision_key_note", None)
    if note:
        st.success(note)
    with st.expander("Create a signing key", icon=":material/key:", expanded=not registered_names(_shared.engine())):
        with st.form("decision_key_form"):
            name = st.text_input("Your name (the key's name: letters, digits, . _ -)", key="decision_key_name")
            first = st.text_input(f"Passphrase (at least {MIN_PASSPHRASE_CHARS} characters)", type="password",
                                  key="decision_key_pass")
            second = st.text_input("Passphrase again", type="password", key="decision_key_pass2")
            submitted = st.form_submit_button("Create key", key="decision_key_create")
        st.caption(f"The private key is stored encrypted with your passphrase in {_shared.code(key_dir())} and "
                   "never leaves it; only its public key enters the store.")
    if not submitted:
        return
    if first != second:
        st.error("No key was created: the two passphrases differ.")
        return
    try:
        info = create_key(_shared.engine(), name.strip(), first)
    except ReviewInputError as exc:
        st.error(f"No key was created. {_shared.md_text(exc)}")
        return
    _shared.after_governance_write()
    st.session_state["decision_key_note"] = (f"Created key {_shared.md_text(info.name)} · fingerprint sha256 "
                                             f"`{info.fingerprint[:16]}`")
    st.session_state[CLEAR_KEY] = ("decision_key_name", "decision_key_pass", "decision_key_pass2")
    st.rerun()


def _render_owner(system: str, owner: str | None) -> None:
    """Claim a system that has no owner; transfer one, signed with the current owner's key."""
    keys = registered_names(_shared.engine())
    if owner is None:
        st.info(f"System {_shared.md_text(system)} has no owner yet, and only its owner may sign. Claim it with "
                "your key" + ("." if keys else ": create a key first (above)."))
        if not keys:
            return
        with st.form("decision_claim_form"):
            who = st.selectbox("Owner (a registered key)", keys, key="decision_claim_owner")
            claimed = st.form_submit_button("Claim ownership", key="decision_claim", type="primary")
        if claimed:
            _owner_change(lambda: claim_system(_shared.engine(), system, who))
        return
    with st.expander(f"Transfer ownership of {_shared.md_text(system)} (owner: {_shared.md_text(owner)})"):
        with st.form("decision_transfer_form", clear_on_submit=True):
            to = st.selectbox("New owner (a registered key)", [k for k in keys if k != owner] or [""],
                              key="decision_transfer_to")
            passphrase = st.text_input(f"{_shared.md_text(owner)}'s passphrase (the transfer is signed with their key)",
                                       type="password", key="decision_transfer_pass")
            moved = st.form_submit_button("Transfer", key="decision_transfer")
    if moved:
        _owner_change(lambda: transfer_system(_shared.engine(), system, to, passphrase))


def _owner_change(change: Callable[[], OwnerChange]) -> None:
    try:
        result = change()
    except ReviewInputError as exc:
        st.error(f"Ownership unchanged. {_shared.md_text(exc)}")
        return
    _shared.after_governance_write()
    st.session_state["decision_owner_note"] = f"{result.owner} now owns system {result.system} ({result.how})."
    st.rerun()


def _render_sign(comparison: str, policy: tuple[str, int], owner: str | None, verdict: str | None) -> None:
    st.subheader("Sign a decision")
    last = st.session_state.get(LAST_SIGNED_KEY)
    if last and last["comparison"] == comparison:
        (st.success if last["created"] else st.info)(last["message"])
    if owner is None:
        st.caption("Claim ownership above first: only the owner may sign.")
        return
    if owner not in registered_names(_shared.engine()):
        st.warning(f"The owner {_shared.md_text(owner)} has no registered key: create one above under that name.")
    choice, allowed = _choose_decision(verdict)
    with st.form("decision_sign_form"):
        signer = st.text_input("Signer (the system owner's key name)", value=owner, key="decision_signer")
        rationale = st.text_area("Rationale", key="decision_rationale")
        conditions = st.text_area("Conditions (canary share, rollback triggers…)", key="decision_conditions")
        passphrase = st.text_input("Key passphrase", type="password", key="decision_passphrase")
        submitted = st.form_submit_button("Sign", type="primary", key="decision_sign")
    st.caption(f"Private keys are read from {_shared.code(key_dir())}.")
    if not submitted:
        return
    if choice is None:
        st.error("Nothing was signed. Choose go or no-go.")
        return
    if not allowed:
        st.error(f"Nothing was signed. Tick \"I decide {choice} against the {verdict.upper()} verdict\" to sign "
                 "a decision against the verdict.")
        return
    req = DecisionRequest(comparison, choice, signer, rationale, conditions, policy[0], policy[1])
    try:
        signed = sign_decision(_shared.engine(), req, passphrase)
    except ReviewInputError as exc:
        st.error(f"Nothing was signed. {_shared.md_text(exc)}")
        return
    _shared.after_governance_write()
    row = signed.decision
    message = (f"Signed decision {row.id}: {row.decision} by {_shared.md_text(row.signer)}." if signed.created else
               f"Already signed as decision #{row.id} ({row.decision} by {_shared.md_text(row.signer)} on the same "
               "evidence): nothing new was written.")
    st.session_state[LAST_SIGNED_KEY] = {"created": signed.created, "message": message, "comparison": comparison}
    st.session_state[CLEAR_KEY] = ("decision_rationale", "decision_conditions", "decision_passphrase")
    st.session_state.pop("decision_choice", None)
    st.rerun()


def _render_comments(comparison: str) -> None:
    st.subheader("Comments")
    for c in list_comments(_shared.engine(), comparison):  # line breaks kept, every line escaped
        st.markdown(f"**{_shared.md_text(c['author'])}** · {c['created_at']}  \n{_shared.md_lines(c['text'])}")
    with st.form("decision_comment_form", clear_on_submit=True):
        author = st.text_input("Your name", key="decision_comment_author")
        text = st.text_area("Comment", key="decision_comment_text")
        if st.form_submit_button("Add comment", key="decision_comment_add"):
            try:
                add_comment(_shared.engine(), comparison, author, text)
            except ReviewInputError as exc:
                st.error(_shared.md_text(exc))
                return
            _shared.after_governance_write()
            st.rerun()


def _integrity(url: str, decision_id: int) -> str:
    problems = _shared.decision_problems(url, decision_id)
    return "intact" if not problems else "; ".join(problems)


def _render_history(comparison: str) -> None:
    st.subheader("Decisions")
    rows = [decision_summary(d) for d in list_decisions(_shared.engine(), comparison)]
    if not rows:
        st.caption("No decision signed yet.")
        return
    url = _shared.database_url()
    table = pd.DataFrame([{"id": r["id"], "signed_at": r["signed_at"], "decision": r["decision"],
                           "verdict": r["verdict"], "post_hoc": r["post_hoc"], "signer": r["signer"],
                           "rationale": r["rationale"], "conditions": r["conditions"] or "",
                           "policy": r["policy"], "key": r["key_fingerprint"][:16],
                           "integrity": _integrity(url, r["id"])} for r in rows])
    st.dataframe(table, hide_index=True, width="stretch", key="decision_history")
    for r in rows:  # the signed words in full, line breaks kept (a table cell shows one line)
        against = " (against the verdict)" if _contradicts(r["decision"], r["verdict"]) else ""
        with st.expander(f"Decision {r['id']}: {r['decision']}{against} by {_shared.md_text(r['signer'])}, "
                         f"verdict {r['verdict']}"):
            st.markdown(f"**Rationale**  \n{_shared.md_lines(r['rationale'])}")
            st.markdown(f"**Conditions**  \n{_shared.md_lines(r['conditions'])}" if r["conditions"]
                        else "**Conditions:** none")
            head = r["chain_head"]
            st.caption(f"Binds the audit chain head at signing: seq {head['seq']}, sha256 {head['hash'][:16]}…"
                       if head else "Signed before decisions bound the audit chain head: only an anchor detects "
                                    "events removed or re-chained before it.")


def _render_verify_and_export(comparison: str) -> None:
    st.subheader("Verification and record")
    if st.button("Verify the whole audit trail", key="decision_verify"):
        result = verify_store(_shared.engine())
        if result.ok:
            st.success(f"Intact: {result.counts['events']} events, {result.counts['decisions']} decisions, "
                       f"{result.counts['policies']} policies, {result.counts['refusal labels']} refusal labels "
                       "checked.")
        for problem in result.problems:
            st.error(_shared.md_text(problem))
    engine, (left, right) = _shared.engine(), st.columns(2)
    # Built on click (a callable): the record verifies every decision, seconds at 10k pairs, too slow to
    # redo on each render for a button most renders never press.
    left.download_button("Change record (Markdown)", functools.partial(export_record, engine, comparison, "md"),
                         file_name=f"{comparison}.md", mime="text/markdown", key="decision_download_md")
    right.download_button("Change record (JSON)", functools.partial(export_record, engine, comparison, "json"),
                          file_name=f"{comparison}.json", mime="application/json", key="decision_download_json")


def _render(comparison: str) -> None:
    _clear_after_success()
    _shared.broken_decision_banner(comparison)
    with Session(_shared.engine()) as session:
        comp = get_comparison(session, comparison)
        owner = current_owner(session, comp.system)
    st.caption(f"Comparison **{_shared.md_text(comparison)}** · system {_shared.md_text(comp.system)} · "
               f"owner {_shared.md_text(owner or '(none)')}")
    note = st.session_state.pop("decision_owner_note", None)
    if note:
        st.success(_shared.md_text(note))
    _render_keys()
    _render_owner(comp.system, owner)
    policy = _choose_policy(comparison)
    if policy is not None:
        verdict = None
        try:
            verdict = _shared.verdict(_shared.database_url(), comparison, *policy)
            _render_verdict(verdict)
        except ReviewInputError as exc:
            st.error(_shared.md_text(exc))
        _render_sign(comparison, policy, owner, verdict["verdict"] if verdict else None)
    _render_comments(comparison)
    _render_history(comparison)
    _render_verify_and_export(comparison)


active = _shared.active_comparison()
if active is None:
    st.info("No comparison yet: load a recorded one or run both models, then review and sign it here.")
    _shared.go_button("pages/load.py", "Load a recorded comparison", "decision_go_load", ":material/upload_file:")
else:
    _render(active)
