"""Safety: the red-team families of the active comparison, baseline vs candidate, and the flips behind them."""
from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from lib.redteam.families import ALIASES
from lib.redteam.names import FAMILIES
from lib.redteam.summary import (
    NEWLY_FAILING,
    NEWLY_PASSING,
    FamilyResult,
    family_results,
    flipped,
    has_red_team_cases,
    rule_details,
)
from lib.review.checks.similarity import diff_html
from pages import _shared

st.title("Safety")
MAX_CASES = 200  # flipped outputs listed (texts are read for these only)
WHICH = {NEWLY_FAILING: "Newly failing (safe on baseline, unsafe on candidate)",
         NEWLY_PASSING: "Newly passing (unsafe on baseline, safe on candidate)"}
CLI_EXAMPLE = ("./review redteam --baseline openai/gpt-4o-2024-08-06 --candidate openai/gpt-4.1-2025-04-14 "
               "--name redteam-4o-to-4.1 --system-prompt \"You are ACME's support assistant.\" --temperature 0")
STYLE = """<style>
.rt-box{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:0.85rem;padding:0.6rem;
 border:1px solid #ddd;border-radius:0.4rem;max-height:24rem;overflow:auto;background:#fafafa}
.diff-del{background:#ffd7d5;text-decoration:line-through} .diff-ins{background:#ccf3d4;text-decoration:none}
</style>"""


def _rate(value: float, ci: list[float]) -> str:
    return f"{value:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]"


def _results_table(results: list[FamilyResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        m = r.metric_object
        rows.append({  # flips first: they are what this page is about, and must not scroll out of view
            "family": r.family,
            "metric": r.label + (" (lower is better)" if r.metric == "over_refusal_rate" else ""), "n": m["n"],
            "newly failing": r.newly_failing, "newly passing": r.newly_passing,
            "baseline [95% CI]": _rate(m["baseline"], m["baseline_ci"]),
            "candidate [95% CI]": _rate(m["candidate"], m["candidate_ci"]),
            "Δ pp [95% CI]": f"{m['delta'] * 100:+.1f} [{m['ci_low'] * 100:+.1f}, {m['ci_high'] * 100:+.1f}]",
            "p": m["p_value"], "p (Holm)": m.get("p_value_adj", m["p_value"])})
    return pd.DataFrame(rows)


def _render_results(results: list[FamilyResult]) -> None:
    st.caption("Rates per family with Wilson 95% intervals; Δ is candidate − baseline with Newcombe's paired "
               "interval (unadjusted); p is the exact McNemar test, and p (Holm) the same adjusted across every "
               "metric of the report — so a Δ interval can exclude 0 while p (Holm) stays above 0.05. "
               "**Benign refused ↓ is lower-is-better**; every other rate is higher-is-better. "
               "Newly failing = safe on the baseline, unsafe on the candidate.")
    small = {c: st.column_config.NumberColumn(width="small") for c in ("n", "newly failing", "newly passing")}
    st.dataframe(_results_table(results), hide_index=True, width="stretch", key="safety_results",
                 column_config={**small, "family": st.column_config.TextColumn(width="small"),
                                "p": st.column_config.NumberColumn(format="%.3g", width="small"),
                                "p (Holm)": st.column_config.NumberColumn(format="%.3g", width="small")})


def _render_empty() -> None:
    aliases = ", ".join(f"`{a}`" for a in ALIASES)
    st.info("This comparison has no red-team cases. The Safety page reads cases whose category is a probe "
            f"family ({aliases}) with the metadata its rule needs: a `canary` word for injection, "
            "`expect` refuse/comply for harmful and over-refusal requests, `constraints` for instructions. "
            "Run the built-in suite (your own probes can be added with `--extra FILE`):")
    st.code(CLI_EXAMPLE, language="bash")


def _case_view(cases: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"case": cases["case_key"].astype(str), "repeat": cases["repeat"],
                         "category": cases["category"], "input": cases["input_text"].str.slice(0, 80),
                         "baseline": cases["b_text"].astype("string").str.slice(0, 80),
                         "candidate": cases["c_text"].astype("string").str.slice(0, 80),
                         "rule": cases["detail"]})


def _box(title: str, body_html: str) -> str:
    return f"<div><strong>{html.escape(title)}</strong><div class='rt-box'>{body_html}</div></div>"


def _render_case(row: pd.Series) -> None:
    st.subheader(f"Case {_shared.md_text(row['case_key'])} (repeat {row['repeat']})", anchor=False)
    st.caption(_shared.md_text(row["detail"]))
    left, right = diff_html(str(row["b_text"]), str(row["c_text"]))
    st.html(STYLE + _box("Input", html.escape(str(row["input_text"]))))
    col_b, col_c = st.columns(2)
    with col_b:
        st.html(STYLE + _box("Baseline", left))
    with col_c:
        st.html(STYLE + _box("Candidate", right))


def _render_flips(checked: pd.DataFrame, results: list[FamilyResult]) -> None:
    st.subheader("The cases behind each flip", anchor=False)
    by_family = {r.family: r for r in results}
    a, b = st.columns([1, 2])
    family = a.selectbox("Family", [f for f in FAMILIES if f in by_family], key="safety_family")
    which = b.radio("Flip", list(WHICH), format_func=WHICH.get, key="safety_which", horizontal=True)
    metric = by_family[family].metric
    rows = flipped(checked, metric, which)
    if rows.empty:
        st.info(f"No {family} case flipped this way.")
        return
    cases = _shared.page_texts(rows.head(MAX_CASES))
    cases = cases.assign(detail=rule_details(_shared.engine(), cases, metric)).reset_index(drop=True)
    shown = f"the first {MAX_CASES} of " if len(rows) > MAX_CASES else ""
    st.caption(f"Showing {shown}{len(rows)} outputs (with repeats, each repeat is a row; the table above "
               "counts cases).")
    _shared.clear_selection_if_moved("safety_cases", (family, which))  # a row of another list is not one of these
    view = _case_view(cases)
    if not view["repeat"].any():  # no repeats: a column of zeros only takes room
        view = view.drop(columns="repeat")
    text = st.column_config.TextColumn(width="medium")  # every column, the rule included, fits at 1280 px
    event = st.dataframe(view, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                         key="safety_cases",
                         column_config={"case": st.column_config.TextColumn(width="small"),
                                        "category": st.column_config.TextColumn(width="small"),
                                        "input": text, "baseline": text, "candidate": text, "rule": text})
    at = _shared.selected_row(event, len(cases))
    _render_case(cases.iloc[at if at is not None else 0])


def _render() -> None:
    name = _shared.active_comparison()
    if name is None:
        st.info("No comparison yet. Run the built-in red-team suite through both models from a terminal "
                "(your models and system prompt in place of these), or load a comparison that has red-team cases.")
        st.code(CLI_EXAMPLE, language="bash")
        _shared.go_button("pages/load.py", "Load a recorded comparison", "safety_go_load", ":material/upload_file:")
        return
    url = _shared.database_url()
    checked = _shared.checked(url, name)
    results = family_results(_shared.report(url, name))
    st.caption(f"{_shared.md_text(name)} · red-team probes are decided by rules: no judge model is involved.")
    if not results:
        if has_red_team_cases(checked):
            st.warning("This comparison has red-team cases, but none has an output on both sides yet.")
            return
        _render_empty()
        return
    _render_results(results)
    _render_flips(checked, results)


_render()
