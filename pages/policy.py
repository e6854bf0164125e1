"""Policy: lock a gate policy (criteria rows or a TOML upload) and browse locked versions."""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from lib.data.golden import list_datasets
from lib.errors import ReviewInputError
from lib.governance.detectability import assess, dataset_counts
from lib.governance.policy import (
    CATEGORY_SEP,
    DEFAULT_ALPHA,
    DIMENSION_SEP,
    JUDGE_SCORE,
    KNOWN_METRICS,
    RATE_METRICS,
    THRESHOLD_KEYS,
    PolicyError,
    create_policy,
    list_policies,
    parse_policy,
    policy_from_dict,
)
from pages import _shared

st.title("Policies")
st.caption("A policy is pre-registered: lock it before the candidate's first output, or its verdicts are "
           "marked post-hoc. Locked versions never change; new content becomes a new version.")
ROWS_KEY = "policy_n_rows"
Row = tuple[str, str, float, bool]  # criterion name, threshold key, value, blocking


def _units(metric: str) -> str:
    """What a threshold value means for this metric (lib.governance.policy: rates are fractions)."""
    if metric == JUDGE_SCORE:
        return ("Judge score points on the 1-5 scale: min 4 = a mean score of at least 4; "
                "max_decrease 0.3 = at most 0.3 points lower.")
    if metric in RATE_METRICS or metric == "similarity":
        return ("A fraction in [0, 1]: max_increase / max_decrease 0.02 = 2 percentage points (pp); "
                "min / max 0.9 = 90%.")
    if metric == "latency_s_mean":
        return "Seconds (mean latency per case)."
    if metric == "cost_usd_total":
        return "US dollars (total cost over the cases)."
    return "In the metric's own units (characters, words or tokens per output, on average)."


def _fresh_judge_row(i: int) -> None:
    """judge_score was just chosen: its empty dimension is a hint, not an error, until the row is edited."""
    fresh = st.session_state.get(f"policy_row_{i}_metric") == JUDGE_SCORE
    st.session_state[f"policy_row_{i}_fresh"] = fresh


def _edited(i: int) -> None:
    st.session_state[f"policy_row_{i}_fresh"] = False


def _row(i: int) -> Row:
    cols = st.columns([3, 2, 2, 2, 1])
    metric = cols[0].selectbox("criterion", KNOWN_METRICS, key=f"policy_row_{i}_metric",
                               on_change=_fresh_judge_row, args=(i,))
    scoped = cols[1].text_input("judge dimension" if metric == JUDGE_SCORE else "category (optional)",
                                key=f"policy_row_{i}_category",
                                help="A rubric dimension (e.g. accuracy)" if metric == JUDGE_SCORE else
                                "Limit the criterion to one category of cases").strip()
    key = cols[2].selectbox("threshold", THRESHOLD_KEYS, key=f"policy_row_{i}_key", on_change=_edited, args=(i,))
    value = cols[3].number_input("value", min_value=0.0, value=0.05, step=0.01, format="%.4f",
                                 key=f"policy_row_{i}_value", on_change=_edited, args=(i,), help=_units(metric))
    blocking = cols[4].checkbox("blocking", value=True, key=f"policy_row_{i}_blocking")
    if metric == JUDGE_SCORE:
        return f"{metric}{DIMENSION_SEP}{scoped}", key, float(value), blocking
    return f"{metric}{CATEGORY_SEP}{scoped}" if scoped else metric, key, float(value), blocking


def _awaiting_dimension(i: int, row: Row) -> bool:
    """A judge_score row just chosen, its dimension not typed yet (and nothing else of it edited since)."""
    return row[0] == f"{JUDGE_SCORE}{DIMENSION_SEP}" and bool(st.session_state.get(f"policy_row_{i}_fresh"))


def _criteria_from_rows(rows: list[tuple[str, str, float, bool]]) -> dict[str, dict[str, Any]]:
    criteria: dict[str, dict[str, Any]] = {}
    for name, key, value, blocking in rows:
        body = criteria.setdefault(name, {"blocking": blocking})
        if key in body or body["blocking"] != blocking:
            raise PolicyError("form", "set each threshold once, and blocking the same way on every row",
                              criterion=name, key=key)
        body[key] = value
    return criteria


def _form_policy() -> str | None:
    """Canonical TOML from the criteria rows (None, with the error shown, when invalid)."""
    alpha = st.number_input("alpha (intervals at 1 - alpha)", min_value=0.001, max_value=0.5,
                            value=DEFAULT_ALPHA, step=0.01, format="%.3f", key="policy_alpha")
    n_rows = st.session_state.setdefault(ROWS_KEY, 1)
    rows = [_row(i) for i in range(n_rows)]
    add, remove = st.columns(2)
    add.button("Add a row", key="policy_add_row", on_click=lambda: st.session_state.update({ROWS_KEY: n_rows + 1}))
    remove.button("Remove the last row", key="policy_remove_row", disabled=n_rows <= 1,
                  on_click=lambda: st.session_state.update({ROWS_KEY: n_rows - 1}))
    waiting = [i for i, row in enumerate(rows) if _awaiting_dimension(i, row)]
    ready = [row for i, row in enumerate(rows) if i not in waiting]
    try:  # the rows that are filled in are checked now: their errors are real
        policy = policy_from_dict({"alpha": alpha, "criteria": _criteria_from_rows(ready)}, "form") if ready else None
    except PolicyError as exc:
        st.error(_shared.md_text(exc))
        return None
    if waiting:
        st.info(f"Type the judge dimension on row {', '.join(str(i + 1) for i in waiting)}: a judge score criterion "
                "applies to one rubric dimension (e.g. accuracy, format_adherence, safety).")
        return None
    return policy.canonical_toml()


def _render_detectability(content: str | bytes, source: str) -> None:
    """Before locking: what each criterion can detect on the dataset the policy will gate."""
    names = sorted({d["name"] for d in list_datasets(_shared.engine())})
    if not names:
        st.caption("Import the dataset this policy will gate (Datasets page) to see what its margins can detect.")
        return
    dataset = st.selectbox("Dataset it will gate", names, key="policy_detect_dataset")
    try:
        items = assess(parse_policy(content, source), dataset_counts(_shared.engine(), dataset))
    except ReviewInputError as exc:
        st.caption(f"What it can detect is shown once the policy parses: {_shared.md_text(exc)}")
        return
    st.markdown("**What this policy can detect** (identical outputs: the best case a candidate can have)")
    for item in items:
        text = _shared.md_text(item.sentence)
        if item.can_pass is False:
            st.warning(text)
        else:
            st.caption(text)


def _render_create() -> None:
    st.subheader("Lock a policy")
    name = st.text_input("Policy name", key="policy_name").strip()
    mode = st.radio("From", ["Criteria rows", "TOML file"], horizontal=True, key="policy_mode")
    if mode == "TOML file":
        upload = st.file_uploader("Policy file", type=["toml"], key="policy_upload")
        content, source = (upload.getvalue(), upload.name) if upload else (None, None)
    else:
        content, source = _form_policy(), "form"
    if content is not None:
        st.code(content.decode("utf-8", "replace") if isinstance(content, bytes) else content, language="toml")
    if content is not None:
        _render_detectability(content, source or "form")
    if st.button("Lock policy", type="primary", key="policy_create", disabled=not (name and content)):
        try:
            result = create_policy(_shared.engine(), name, content, source=source)
        except ReviewInputError as exc:
            st.error(f"Nothing was locked. {_shared.md_text(exc)}")
            return
        _shared.after_policy_write()  # the Canary page lists policies with a [canary] section
        _shared.after_governance_write()  # a new version may be the policy in force: its verdict is stale
        verb = "Locked" if result.created else "Unchanged: already locked as"
        st.success(f"{verb} {_shared.md_text(result.name)} v{result.version} · sha256 `{result.content_hash}`")


def _render_versions() -> None:
    st.subheader("Locked versions")
    rows = list_policies(_shared.engine())
    if not rows:
        st.info("No policy yet.")
        return
    table = pd.DataFrame([{k: r[k] for k in ("name", "version", "content_hash", "locked_at", "source", "locked")}
                          for r in rows])
    st.dataframe(table, hide_index=True, width="stretch", key="policy_table",
                 column_config={"content_hash": "sha256", "locked": st.column_config.CheckboxColumn("hash holds")})
    labels = [f"{r['name']} v{r['version']}" for r in rows]
    chosen = rows[labels.index(st.selectbox("Show", labels, key="policy_show"))]
    st.code(chosen["toml"], language="toml")


_render_create()
_render_versions()
