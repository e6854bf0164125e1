"""Canary: the rollback triggers a policy declared in advance, the current window's values with CIs,
the decision, and the history of checks."""
from __future__ import annotations

import io
from pathlib import Path
from collections.abc import Callable
from typing import IO, Any

import pandas as pd
import streamlit as st

from lib.canary import CanaryCheck, CanaryMapping, check_canary, declared_triggers
from lib.errors import ReviewInputError
from lib.policy import policy_names
from pages import _shared

st.title("Canary")
st.caption("Rollback triggers are declared in a policy's `[canary]` section and locked with it. A check reads "
           "a canary log (one row per call: arm, output, latency, error, judge score, timestamp) and decides: "
           "continue, roll back, or wait for more data. Pipelines run `python -m lib canary check`.")
DECISION_STYLE = {"continue": st.success, "rollback": st.error, "wait": st.warning}


def _canary_policies() -> list[str]:
    engine = _shared.engine()
    return [name for name in policy_names(engine) if declared_triggers(engine, name)["canary"]]


def _render_declared(policy: str) -> None:
    info = declared_triggers(_shared.engine(), policy)
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
    """How to open the log (opened only when checking) and its file name."""
    upload = st.file_uploader("Canary log (.csv, .jsonl, .gz)", type=["csv", "jsonl", "gz"], key="canary_upload")
    path = st.text_input("…or a path on this machine", key="canary_path").strip()
    if upload is not None:
        return (lambda: io.BytesIO(upload.getvalue())), upload.name
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            st.error(f"No such file: {_shared.md(path)}")
            return None
        return (lambda: file.open("rb")), file.name
    return None


def _metrics_table(check: CanaryCheck) -> pd.DataFrame:
    rows = []
    for metric, m in check.metrics.items():
        rows.append({"metric": metric, "control": m["control"], "canary": m["canary"], "delta": m["delta"],
                     "CI low": m["ci_low"], "CI high": m["ci_high"], "n control": m["n_control"],
                     "n canary": m["n_canary"], "p": m["p_value"], "method": m["ci_method"]})
    return pd.DataFrame(rows)


def _render_check(check: CanaryCheck) -> None:
    DECISION_STYLE[check.decision](f"Decision: **{check.decision}** (exit {check.exit_code}) — control "
                                   f"{check.n['control']} rows, canary {check.n['canary']} rows")
    if check.post_hoc:
        st.warning(f"Post-hoc: the policy was locked at {check.policy_locked_at[:19]}, after the window's first "
                   f"call at {(check.window_first or '')[:19]}.")
    for note in check.notes:
        st.caption(_shared.md(note))
    st.dataframe(_metrics_table(check), hide_index=True, key="canary_metrics")
    triggers = pd.DataFrame([{"metric": t.metric, "threshold": t.threshold, "margin": t.margin, "status": t.status,
                              "observed": t.observed, "reason": t.reason} for t in check.triggers])
    st.dataframe(triggers, hide_index=True, key="canary_triggers")


def _render_run(policy: str) -> None:
    st.subheader("Check the current window")
    mapping = _mapping()
    since = st.text_input("Since (ISO 8601, UTC; empty: the whole log)", key="canary_since").strip() or None
    source = _source()
    if not st.button("Check", type="primary", key="canary_check", disabled=source is None):
        return
    opener, name = source  # type: ignore[misc]
    try:
        with opener() as raw:
            check = check_canary(_shared.engine(), raw, name, policy, mapping, since=since)
    except ReviewInputError as exc:
        st.error(f"Not checked. {_shared.md(exc)}")
        return
    _shared.after_release_write()
    _render_check(check)


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
    st.dataframe(_history_rows(history), hide_index=True, key="canary_history")


def _render() -> None:
    policies = _canary_policies()
    if not policies:
        st.info("No policy declares a canary yet. Add a `[canary]` section to a policy (see the Policy page) — "
                "`traffic_share`, `min_samples` and `[canary.triggers.METRIC]` thresholds.")
        return
    policy = st.selectbox("Policy", policies, key="canary_policy")
    _render_declared(policy)
    _render_run(policy)
    _render_history(policy)


_render()
