"""Canary: the rollback triggers a policy declared in advance, the current window's values with CIs,
the decision, and the history of checks."""
from __future__ import annotations

import io
import shlex
from collections.abc import Callable
from typing import IO, Any

import pandas as pd
import streamlit as st

from lib.errors import ReviewInputError
from lib.release.canary import CanaryCheck, CanaryMapping, check_canary, resolve_log_path
from pages import _shared

st.title("Canary")
st.caption("Rollback triggers are declared in a policy's `[canary]` section and locked with it. A check reads "
           "a canary log (one row per call: arm, output, latency, error, judge score, timestamp) and decides: "
           "continue, roll back, or wait for more data. Pipelines run the same check from the command line: "
           "the exact command is shown after a check.")
DECISION_STYLE = {"continue": st.success, "rollback": st.error, "wait": st.warning}
RESULT_KEY = "canary_last_check"  # {"key": (policy, log), "check": CanaryCheck}: survives widget changes
RATES = ("error_rate", "refusal_rate", "json_valid_rate")


def _render_declared(policy: str) -> None:
    info = _shared.canary_declared(_shared.database_url(), policy)
    canary = info["canary"]
    st.caption(f"Policy {_shared.md(policy)} v{info['policy_version']} · sha256 `{info['policy_hash'][:16]}` · "
               f"locked {info['locked_at'][:19]} · alpha {info['alpha']} · min samples per arm "
               f"{canary['min_samples']} · declared traffic share {canary.get('traffic_share', '—')}")
    rows = [{"metric": metric, "threshold": key, "margin": value}
            for metric, body in canary["triggers"].items() for key, value in body.items()]
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="canary_declared")


def _mapping() -> CanaryMapping:
    with st.expander("Columns and arm values (defaults: arm, output, latency_ms/latency_s, error, "
                     "judge_score, schema, timestamp)"):
        cols = st.columns(3)
        fields = {name: cols[i % 3].text_input(name.replace("_", " "), key=f"canary_{name}").strip() or None
                  for i, name in enumerate(("arm_col", "control", "canary", "model_col", "output_col",
                                            "latency_col", "error_col", "judge_col", "timestamp_col"))}
    return CanaryMapping(**fields)


def _source() -> tuple[Callable[[], IO[bytes]], str] | None:
    """How to open the log (opened only when checking) and its name (the upload's, or the path as typed)."""
    upload = st.file_uploader("Canary log (.csv, .jsonl, .gz)", type=["csv", "jsonl", "gz"], key="canary_upload")
    path = st.text_input("…or a log file in the server's log directory", key="canary_path",
                         help="A file name relative to the log directory: the `REVIEW_LOG_DIR` environment variable, "
                              "else `logs/` under the directory the app was started from. Other paths are refused "
                              "with one message, whether or not they exist.").strip()
    if upload is not None:
        return (lambda: io.BytesIO(upload.getvalue())), upload.name
    if path:
        try:
            file = resolve_log_path(path)
        except ReviewInputError as exc:
            st.error(_shared.md(exc))
            return None
        return (lambda: file.open("rb")), path
    return None


def _ci(low: float, high: float, fmt: str) -> str:
    return f"[{low:{fmt}}, {high:{fmt}}]"


def _metric_rows(check: CanaryCheck, rates: bool) -> list[dict[str, Any]]:
    fmt = ".2%" if rates else ".3g"
    rows = []
    for metric, m in check.metrics.items():
        if (metric in RATES) != rates:
            continue
        arm_ci = {arm: _ci(*m[f"{arm}_ci"], fmt) if m.get(f"{arm}_ci") else "" for arm in ("control", "canary")}
        rows.append({"metric": metric, "control": m["control"], "control CI": arm_ci["control"],
                     "n control": m["n_control"], "canary": m["canary"], "canary CI": arm_ci["canary"],
                     "n canary": m["n_canary"], "delta": m["delta"], "delta CI": _ci(m["ci_low"], m["ci_high"], fmt),
                     "p": m["p_value"], "method": m["ci_method"]})
    return rows


def _render_metrics(check: CanaryCheck) -> None:
    """Rates as percentages, latency and scores with 3 significant digits: two tables, one format each."""
    level = f"{1 - check.alpha:.0%}"
    for rates, fmt, key in ((True, "percent", "canary_metrics"), (False, "%.3g", "canary_metrics_other")):
        rows = _metric_rows(check, rates)
        if not rows:
            continue
        value = st.column_config.NumberColumn(format=fmt)
        config = {"control": value, "canary": value, "delta": st.column_config.NumberColumn(
            "delta (canary - control)", format=fmt), "p": st.column_config.NumberColumn(format="%.3g"),
            "control CI": f"control {level} CI", "canary CI": f"canary {level} CI", "delta CI": f"delta {level} CI"}
        st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=config, key=key)


def _render_check(check: CanaryCheck) -> None:
    DECISION_STYLE[check.decision](f"Decision: **{check.decision}** (exit {check.exit_code}) — control "
                                   f"{check.n['control']} rows, canary {check.n['canary']} rows")
    if check.post_hoc:
        st.warning(f"Post-hoc: the policy was locked at {check.policy_locked_at[:19]}, after the window's first "
                   f"call at {(check.window_first or '')[:19]}.")
    for note in check.notes:
        st.caption(_shared.md(note))
    _render_metrics(check)
    triggers = pd.DataFrame([{"metric": t.metric, "threshold": t.threshold, "margin": t.margin, "status": t.status,
                              "observed": t.observed, "reason": t.reason} for t in check.triggers])
    st.dataframe(triggers, hide_index=True, key="canary_triggers")


def _render_run(policy: str) -> None:
    st.subheader("Check the current window")
    mapping = _mapping()
    since = st.text_input("Since (ISO 8601, UTC; empty: the whole log)", key="canary_since").strip() or None
    source = _source()
    key = (policy, source[1] if source else None)
    if st.button("Check", type="primary", key="canary_check", disabled=source is None):
        st.session_state.pop(RESULT_KEY, None)  # a new check replaces the last one, even when it fails
        opener, name = source  # type: ignore[misc]
        try:
            with opener() as raw:
                check = check_canary(_shared.engine(), raw, name, policy, mapping, since=since)
        except ReviewInputError as exc:
            st.error(f"Not checked. {_shared.md(exc)}")
            return
        _shared.after_release_write()
        st.session_state[RESULT_KEY] = {"key": key, "check": check}
    last = st.session_state.get(RESULT_KEY)
    if last and last["key"] == key:
        _render_check(last["check"])
        _render_command(policy, source, since, mapping)


def _render_command(policy: str, source: tuple[Callable[[], IO[bytes]], str] | None, since: str | None,
                    mapping: CanaryMapping) -> None:
    """The same check as a pipeline runs it (exit 0 continue, 1 roll back, 3 wait)."""
    if source is None:
        return
    uploaded = st.session_state.get("canary_upload") is not None
    log = source[1] if uploaded else str(resolve_log_path(source[1]))
    words = ["./review", "canary", "check", "--policy", policy, "--log", log]
    words += ["--since", since] if since else []
    for name, value in vars(mapping).items():
        if isinstance(value, str) and value and name != "schema":
            words += [f"--{name.replace('_', '-')}", value]
    st.caption("The same check in a pipeline (exit 0 continue, 1 roll back, 3 wait)"
               + (", run where the uploaded file is:" if uploaded else ":"))
    st.code(shlex.join(words), language="bash")


def _history_rows(history: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([{"at": h["at"][:19], "policy": f"{h['policy_name']} v{h['policy_version']}",
                          "decision": h["decision"], "control": h["n"]["control"], "canary": h["n"]["canary"],
                          "fired": ", ".join(sorted({t["metric"] for t in h["triggers"] if t["status"] == "fire"})),
                          "log": h["log"], "since": h["since"], "post-hoc": h["post_hoc"]} for h in history])


def _render_history(policy: str) -> None:
    st.subheader("Checks so far")
    history = _shared.canary_history(_shared.database_url(), policy)
    if not history:
        st.caption("No check recorded for this policy yet.")
        return
    latest = history[0]
    st.metric("Decision so far (latest check)", latest["decision"], help=f"checked at {latest['at'][:19]} UTC")
    rollback = next((h for h in history if h["decision"] == "rollback"), None)
    if rollback is not None and rollback is not latest:  # a later window with too little data undoes nothing
        fired = ", ".join(sorted({t["metric"] for t in rollback["triggers"] if t["status"] == "fire"}))
        st.error(f"A check at {rollback['at'][:19]} UTC called for **rollback** ({_shared.md(fired)} fired, log "
                 f"{_shared.md(rollback['log'])}); later checks do not undo it.")
    st.dataframe(_history_rows(history), hide_index=True, key="canary_history")


def _render() -> None:
    policies = _shared.canary_policies(_shared.database_url())
    if not policies:
        st.info("No policy declares a canary yet. Add a `[canary]` section to a policy (see the Policy page) — "
                "`traffic_share`, `min_samples` and `[canary.triggers.METRIC]` thresholds.")
        return
    policy = st.selectbox("Policy", policies, key="canary_policy")
    _render_declared(policy)
    _render_run(policy)
    _render_history(policy)


_render()
