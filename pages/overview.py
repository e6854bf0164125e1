"""Overview: what changed between baseline and candidate, how sure we are, and where to look."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.browse import FILTERS
from lib.errors import ReviewInputError
from lib.models import MATCH_RULES
from lib.report import BINARY_METRICS, METRIC_LABELS, ReviewSettings, is_rate, save_settings, stored_settings
from pages import _shared

st.title("Overview")
ALPHA = 0.05


def _fmt(metric: str, value: float | None) -> str:
    if value is None or pd.isna(value):
        return "—"
    return f"{value:.1%}" if is_rate(metric) else f"{value:,.3g}"


def _fmt_delta(metric: str, m: dict) -> str:
    if is_rate(metric):
        return f"{m['delta'] * 100:+.1f} pp [{m['ci_low'] * 100:+.1f}, {m['ci_high'] * 100:+.1f}]"
    return f"{m['delta']:+,.3g} [{m['ci_low']:+,.3g}, {m['ci_high']:+,.3g}]"


def _significant(m: dict) -> bool:
    p = m.get("p_value_adj", m.get("p_value"))
    return p is not None and p < ALPHA


def _card(col, metric: str, m: dict) -> None:
    marker = " ✱" if _significant(m) else ""
    p = m.get("p_value_adj", m.get("p_value"))
    help_text = (f"{METRIC_LABELS.get(metric, metric)}. Delta with its 95% CI (unadjusted); ✱ = p < 0.05 after "
                 f"Holm correction (p_adj={p:.3g}, unadjusted p={m['p_value']:.3g}); n = {m['n']} cases."
                 + (" ↓ = lower is better." if metric == "over_refusal_rate" else "")
                 if p is not None else None)
    if metric == "similarity":
        col.metric(f"Similarity (n={m['n']})", _fmt(metric, m["candidate"]),
                   help="Mean rapidfuzz similarity of the paired outputs (1 = identical).")
        return
    col.metric(f"{METRIC_LABELS.get(metric, metric)}{marker} (n={m['n']})",
               f"{_fmt(metric, m['baseline'])} → {_fmt(metric, m['candidate'])}",
               _fmt_delta(metric, m), delta_color="off", help=help_text)


SIGNIFICANCE_NOTE = (
    "Δ is candidate − baseline with its 95% CI (unadjusted: Newcombe's paired interval for rates, the mean "
    "difference for the others). ✱ marks p < 0.05 after Holm correction across these metrics — exact McNemar "
    "for rates, Wilcoxon signed-rank for the others, which tests a shift of the whole distribution, not the "
    "mean: so a CI can exclude 0 without ✱ (the adjustment), or include 0 with ✱ (a shift the mean hides).")


def _render_cards(metrics: dict) -> None:
    st.caption(SIGNIFICANCE_NOTE)
    shown = [k for k, v in metrics.items() if v]
    for start in range(0, len(shown), 4):
        cols = st.columns(4)
        for col, key in zip(cols, shown[start:start + 4]):
            _card(col, key, metrics[key])


def _flip_matrix(m: dict) -> pd.DataFrame:
    f, same = m["flips"], m["unchanged"]
    return pd.DataFrame({"candidate: yes": [same["true"], f["to_true"]], "candidate: no": [f["to_false"], same["false"]]},
                        index=["baseline: yes", "baseline: no"])


def _render_flips(metrics: dict) -> None:
    binary = [k for k in BINARY_METRICS if metrics.get(k) and k != "error_rate"]
    if not binary:
        return
    st.subheader("Flips", anchor=False)
    cols = st.columns(min(3, len(binary)))  # three per row: the 2x2 tables stay readable
    for i, key in enumerate(binary):
        with cols[i % len(cols)]:
            st.caption(f"{METRIC_LABELS.get(key, key)} (n={metrics[key]['n']})")
            st.dataframe(_flip_matrix(metrics[key]), width="stretch")


def _render_categories(by_category: dict) -> None:
    if not by_category:
        return
    st.subheader("By category", anchor=False)
    rows = []
    for cat, metrics in by_category.items():
        row: dict = {"category": cat}
        for key, m in metrics.items():
            if m and key != "similarity":
                row[f"{key} Δ"] = m["delta"]
                row[f"{key} n"] = m["n"]
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="overview_categories")


def _go_to_diffs(filter_name: str) -> None:
    st.session_state["diffs_filter"] = filter_name


def _render_changed_most(counts: dict[str, int]) -> None:
    st.subheader("What changed most", anchor=False)
    cols = st.columns(3)
    for i, (name, count) in enumerate(counts.items()):
        with cols[i % 3]:
            if st.button(f"{FILTERS[name]}: {count}", key=f"overview_goto_{name}", disabled=count == 0,
                         on_click=_go_to_diffs, args=(name,)):
                st.switch_page("pages/diffs.py")


def _render_settings(name: str) -> None:
    """Reviewer settings for this comparison: extra refusal patterns, one match rule for all cases."""
    current = stored_settings(_shared.engine(), name)
    with st.expander("Review settings"):
        patterns = st.text_area("Extra refusal patterns (one regex per line)", "\n".join(current.refusal_patterns),
                                key="overview_refusal_patterns")
        rules = ["(per case)", *MATCH_RULES]
        rule = st.selectbox("Match rule for every case", rules,
                            index=rules.index(current.match) if current.match else 0, key="overview_match")
        pattern = st.text_input("Regex (for the regex rule)", current.pattern or "", key="overview_pattern")
        if st.button("Save settings", key="overview_save_settings"):
            _save_settings(name, patterns, None if rule == rules[0] else rule, pattern or None)


def _save_settings(name: str, patterns: str, rule: str | None, pattern: str | None) -> None:
    try:
        settings = ReviewSettings(match=rule, pattern=pattern if rule else None,
                                  refusal_patterns=tuple(p.strip() for p in patterns.splitlines() if p.strip()))
        save_settings(_shared.engine(), name, settings)
    except ReviewInputError as exc:
        st.error(f"Not saved. {exc}")
        return
    _shared.after_settings_change()
    st.toast("Settings saved; the review is recomputed.")
    st.rerun()


name = _shared.active_comparison()
if name is None:
    st.info("No comparison yet. Load one (Load page) or run one (Run page).")
    st.stop()
report = _shared.report(_shared.database_url(), name)
st.caption(f"{_shared.md(name)} · {report['n_pairs']} paired cases · deltas are candidate − baseline with 95% "
           "confidence intervals; ✱ marks a difference significant after Holm correction.")
_render_settings(name)
if report["n_pairs"] == 0:
    st.warning("No case has outputs on both sides yet.")
    st.stop()
_render_cards(report["metrics"])
_render_changed_most(_shared.change_counts(_shared.database_url(), name))
_render_flips(report["metrics"])
_render_categories(report["by_category"])
