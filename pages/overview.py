"""Overview: what changed between baseline and candidate, how sure we are, and where to look."""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from lib.errors import ReviewInputError
from lib.governance.policy import policy_names
from lib.review import fmt, headline
from lib.review.browse import FILTERS
from lib.review.changed_most import Ranking
from lib.review.constants import ALPHA
from lib.review.report import BINARY_METRICS, METRIC_LABELS, ReviewSettings, is_rate, save_settings, stored_settings
from lib.review.settings import ReviewSettingsError, canonical_schema
from lib.store.entities import MATCH_RULES
from pages import _catalog_ui, _shared

st.title("Overview")


def _fmt(metric: str, value: float | None) -> str:
    return fmt.metric_value(value, is_rate(metric))


def _fmt_delta(metric: str, m: dict) -> str:
    return fmt.metric_delta(m["delta"], m["ci_low"], m["ci_high"], is_rate(metric))


def _significant(m: dict) -> bool:
    p = m.get("p_value_adj", m.get("p_value"))
    return p is not None and p < ALPHA


# ---- the answer: headline, verdict, decision ------------------------------------------------------
# The verdict's box: coloured like an alert, but not one (st.error is kept for what went wrong: the banner).
VERDICT_STYLE = {"go": ("#e8f5e9", "#2e7d32"), "no-go": ("#fdecea", "#c62828"), "inconclusive": ("#fff8e1", "#ef8f00")}
VERDICT_CSS = "<style>" + "".join(
    f'.st-key-verdict-{k}{{background:{bg};border-left:6px solid {edge};border-radius:0.5rem;padding:0.6rem 1rem}}'
    for k, (bg, edge) in VERDICT_STYLE.items()) + "</style>"


def _render_headline(report: dict, checked: pd.DataFrame) -> None:
    lines = headline.headline_lines(report, checked)
    st.markdown("#### " + _shared.md_text(lines[0]))
    for line in lines[1:]:
        st.markdown(_shared.md_text(line))
    note = headline.holm_note(report)
    if note:
        st.caption(_shared.md_text(note))


def _render_verdict(name: str) -> dict | None:
    url = _shared.database_url()
    policy = _shared.policy_in_force(url, name)
    if policy is None:
        if policy_names(_shared.engine()):  # policies exist, none governs this system yet
            st.info("No policy is in force for this comparison's system yet: see the verdict under any locked "
                    "policy on the Decision page. The policy a decision is signed under, or one named after the "
                    "system, is in force here.", icon=":material/policy:")
            _shared.go_button("pages/decision.py", "Choose a policy", "overview_go_choose", ":material/verified:")
            return None
        st.info("No policy locked: lock one, and the verdict shows here.", icon=":material/policy:")
        _shared.go_button("pages/policy.py", "Lock a policy", "overview_go_policy", ":material/policy:")
        return None
    try:
        verdict = _shared.verdict(url, name, *policy)
    except ReviewInputError as exc:
        st.error(f"No verdict: {_shared.md_text(exc)}")
        return None
    failing, unsure = (list(dict.fromkeys(c["criterion"] for c in verdict["criteria"]
                                          if c["blocking"] and c["result"] == result))
                       for result in ("fail", "inconclusive"))
    why = "".join([f" · fails: {', '.join(map(_shared.md_text, failing))}" if failing else "",
                   f" · not shown to pass: {', '.join(map(_shared.md_text, unsure))}" if unsure else ""])
    box = st.container(key=f"verdict-{verdict['verdict']}")
    box.markdown(f"**Verdict: {verdict['verdict'].upper()}** under policy "
                 f"{_shared.md_text(verdict['policy_name'])} v{verdict['policy_version']}{why}")
    sentence = headline.lock_sentence(verdict)
    if sentence:
        box.caption(sentence)
    return verdict


def _render_decision(name: str) -> None:
    status = _shared.decision_status(_shared.database_url(), name)
    if status is None:
        st.caption("No decision signed yet.")
        _shared.go_button("pages/decision.py", "Sign a decision", "overview_go_sign", ":material/verified:")
        return
    integrity = "signature and evidence intact" if status["intact"] else "FAILS VERIFICATION"
    st.markdown(f"**Decision #{status['id']}: {status['decision'].upper()}** by {_shared.md_text(status['signer'])} "
                f"· {status['signed_at'][:16].replace('T', ' ')} UTC · on verdict {status['verdict']} "
                f"({_shared.md_text(status['policy'])}) · {integrity}")
    _shared.go_button("pages/decision.py", "Decision, verification and the change record", "overview_go_decision",
                      ":material/verified:")


# ---- the forest plot: the picture of the gate -----------------------------------------------------
RESULT_COLOURS = {"fail": "#c62828", "inconclusive": "#ef8f00", "pass": "#2e7d32", None: "#607d8b"}
RESULT_NAMES = {"fail": "criterion fails", "inconclusive": "criterion inconclusive", "pass": "criterion passes",
                None: "no criterion"}


def _forest(rows: list[headline.ForestRow], unit: str, title: str) -> go.Figure:
    fig = go.Figure()
    for result in RESULT_COLOURS:  # one trace per result: the legend names only those present
        chosen = [r for r in rows if r.result == result]
        if not chosen:
            continue
        fig.add_trace(go.Scatter(
            x=[r.delta for r in chosen], y=[r.name for r in chosen], mode="markers", name=RESULT_NAMES[result],
            marker={"color": RESULT_COLOURS[result], "size": 10},
            error_x={"type": "data", "symmetric": False, "array": [r.high - r.delta for r in chosen],
                     "arrayminus": [r.delta - r.low for r in chosen], "color": RESULT_COLOURS[result]},
            hovertemplate="%{y}: %{x:.2f} " + unit + "<extra></extra>"))
    margins = [(m, r.name) for r in rows for m in r.margins]
    if margins:
        fig.add_trace(go.Scatter(x=[m for m, _ in margins], y=[n for _, n in margins], mode="markers",
                                 name="policy margin", hovertemplate="margin %{x:.2f} " + unit + "<extra></extra>",
                                 marker={"symbol": "line-ns-open", "size": 16, "line": {"width": 3},
                                         "color": "#000"}))
    fig.add_vline(x=0, line_color="#9e9e9e", line_dash="dot")
    fig.update_layout(title=title, height=90 + 34 * len(rows), margin={"l": 10, "r": 10, "t": 40, "b": 40},
                      xaxis_title=f"candidate − baseline ({unit})", yaxis={"autorange": "reversed"},
                      legend={"orientation": "h", "y": -0.25})
    return fig


PLOTS_LOADED_KEY = "overview_plots_loaded"  # this tab's browser has drawn the forest plot: its library is loaded


def _render_forest(report: dict, verdict: dict | None) -> Callable[[], None] | None:
    """The forest plot(s); in a new tab, a placeholder of its size and a function that draws it, to call last:
    the browser then shows the rest of the page before it loads the plotting library (about half a second of
    its time at first, blocking everything after the plot)."""
    rows = headline.forest_rows(report, verdict)
    rates = [r for r in rows if r.unit == headline.PP]
    others = [r for r in rows if r.unit == headline.RELATIVE]
    draw_last = None
    if rates:
        figure = _forest(rates, "pp", "Rates: change with its 95% CI, in percentage points")
        if st.session_state.get(PLOTS_LOADED_KEY):
            _draw(st, figure, "overview_forest_rates")  # in place: no placeholder flickering on a rerun
        else:
            draw_last = functools.partial(_draw, st.skeleton(height=figure.layout.height), figure,
                                          "overview_forest_rates")
            st.session_state[PLOTS_LOADED_KEY] = True
    if others:
        # drawn only once opened (a rerun): a second plot costs the browser as much as the page's text
        box = st.expander("Lengths, tokens, latency: change in % of the baseline", key="overview_forest_other_open",
                          on_change="rerun")
        if box.open:
            _draw(box, _forest(others, "% of baseline", "Other metrics: change with its 95% CI"),
                  "overview_forest_other")
    return draw_last


def _draw(where: Any, figure: go.Figure, key: str) -> None:
    where.plotly_chart(figure, key=key, config={"displayModeBar": False})


# ---- metric cards, coloured by evidence ------------------------------------------------------------
# Card labels short enough for three cards a row (the full label is in each card's help).
CARD_LABELS = {"length_tokens_mean": "Length (tokens)", "input_tokens_mean": "Prompt tokens",
               "input_over_limit_rate": "Over token limit"}
CARD_FIT = (16, 36)  # longest value and label (characters) that fit three cards a row at 1400 px (measured)
EVIDENCE_WORDS = {headline.WORSE: "significantly worse", headline.BETTER: "significantly better",
                  headline.CHANGED: "significant change (neither better nor worse)",
                  headline.NO_EVIDENCE: "no evidence either way"}
EVIDENCE_STYLE = {headline.WORSE: ("#fdecea", "#c62828"), headline.BETTER: ("#e8f5e9", "#2e7d32"),
                  headline.CHANGED: ("#e3f2fd", "#1565c0"), headline.NO_EVIDENCE: ("#f5f5f5", "#bdbdbd")}
CARD_STYLE = "<style>" + "".join(
    f'[class*="st-key-card-{k.replace(" ", "-")}-"]{{background:{bg};border-left:6px solid {edge};'
    f'border-radius:0.5rem;padding:0.2rem 0.6rem}}' for k, (bg, edge) in EVIDENCE_STYLE.items()) + "</style>"


def _card(metric: str, m: dict) -> tuple[str, str, str | None, str | None]:
    """(label, baseline → candidate, delta, help) of one metric card."""
    marker = " ✱" if _significant(m) else ""
    p = m.get("p_value_adj", m.get("p_value"))
    help_text = (f"{METRIC_LABELS.get(metric, metric)}. Delta with its 95% CI (unadjusted); ✱ = p < 0.05 after "
                 f"Holm correction (p_adj={p:.3g}, unadjusted p={m['p_value']:.3g}); n = {m['n']} cases."
                 + (" ↓ = lower is better." if metric == "over_refusal_rate" else "")
                 if p is not None else None)
    if metric == "similarity":
        return (f"Similarity (n={m['n']})", _fmt(metric, m["candidate"]), None,
                "Mean rapidfuzz similarity of the paired outputs (1 = identical).")
    label = CARD_LABELS.get(metric, METRIC_LABELS.get(metric, metric))
    return (f"{label}{marker} (n={m['n']})", f"{_fmt(metric, m['baseline'])} → {_fmt(metric, m['candidate'])}",
            _fmt_delta(metric, m), help_text)


SIGNIFICANCE_NOTE = (
    "Δ is candidate − baseline with its 95% CI (unadjusted: Newcombe's paired interval for rates, the mean "
    "difference for the others). A card is coloured by its interval: red when it lies wholly on the worse side "
    "of 0 (the metric's direction: more refusals, lower accuracy, more truncation or errors, lower injection "
    "resistance are worse), green on the better side, blue for a change with no better side (lengths, tokens), "
    "grey when it includes 0. ✱ marks p < 0.05 after Holm correction across these metrics — exact McNemar "
    "for rates, Wilcoxon signed-rank for the others, which tests a shift of the whole distribution, not the "
    "mean: so a CI can exclude 0 without ✱ (the adjustment), or include 0 with ✱ (a shift the mean hides).")


ZERO_DELTA = re.compile(r"^[+\-−]?0(?:\.0+)?(?![.\d])")


def _render_cards(metrics: dict) -> None:
    """Three cards a row, two when a value or label would not fit: baseline → candidate is never cut off."""
    evidence = headline.classify_all(metrics)
    cards = [(k, _card(k, v)) for k, v in metrics.items() if v]
    fits = all(len(value) <= CARD_FIT[0] and len(label) <= CARD_FIT[1] for _, (label, value, _, _) in cards)
    per_row = 3 if fits else 2
    for start in range(0, len(cards), per_row):
        for col, (key, (label, value, delta, help_text)) in zip(st.columns(per_row), cards[start:start + per_row]):
            kind = evidence[key].evidence if key in evidence else headline.NO_EVIDENCE
            box = col.container(key=f"card-{kind.replace(' ', '-')}-{key}")
            arrow = "off" if ZERO_DELTA.match(delta or "") else "auto"  # "+0.0 pp" is no rise
            box.metric(label, value, delta, delta_color="off", delta_arrow=arrow, help=help_text)
            if key in evidence:
                box.caption(EVIDENCE_WORDS[kind])


def _render_flips(metrics: dict) -> None:
    binary = [k for k in BINARY_METRICS if metrics.get(k) and k != "error_rate"]
    if not binary:
        return
    st.subheader("Flips", anchor=False)
    st.caption(FLIPS_NOTE)
    st.table(_flips_table({k: metrics[k] for k in binary}))  # a plain table: light for the browser


FLIPS_NOTE = ("Each paired case, baseline → candidate: yes when the metric's condition holds for that output "
              "(refused, correct, valid JSON, truncated…), no when it does not. The flips are the middle columns.")
FLIP_COLUMNS = ("yes → yes", "yes → no", "no → yes", "no → no")


def _flips_table(binary: dict[str, dict]) -> pd.DataFrame:
    """One row per yes/no metric: how many cases kept or flipped their value, baseline → candidate."""
    rows = {f"{METRIC_LABELS.get(k, k)} (n={m['n']})":
            [m["unchanged"]["true"], m["flips"]["to_false"], m["flips"]["to_true"], m["unchanged"]["false"]]
            for k, m in binary.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(FLIP_COLUMNS))


CATEGORY_NOTE = (
    "Each metric: baseline → candidate with n, the paired cases of that category, beside it; then "
    "Δ = candidate − baseline with its 95% CI (percentage points for rates). ✱ = p < 0.05 after Holm correction "
    "across the category's metrics. A blank cell: the metric does not apply to that category's cases.")


CELL_WIDTH_PX = 185


def _category_cells(key: str, m: dict | None) -> tuple[str, str]:
    """(baseline → candidate (n), Δ [CI]) as the table shows them; blank when the metric does not apply."""
    if not m:
        return "", ""
    if key == "similarity":  # one value per pair: the mean and its CI, no delta
        return f"{m['candidate']:.2f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}] (n={m['n']})", ""
    marker = " ✱" if _significant(m) else ""
    return f"{_fmt(key, m['baseline'])} → {_fmt(key, m['candidate'])} (n={m['n']})", _fmt_delta(key, m) + marker


def _category_table(by_category: dict, order: list[str]) -> pd.DataFrame:
    """One row per category; two columns per metric that applies to any category, in the cards' order."""
    present = {k for metrics in by_category.values() for k, m in metrics.items() if m}
    keys = [k for k in order if k in present] + sorted(present - set(order))
    rows = []
    for cat, metrics in by_category.items():
        row: dict[str, str] = {"category": cat}
        for key in keys:
            label = METRIC_LABELS.get(key, key)
            value, delta = _category_cells(key, metrics.get(key))
            row[label] = value
            if key != "similarity":
                row[f"{label}: Δ [95% CI]"] = delta
        rows.append(row)
    return pd.DataFrame(rows)


def _render_categories(by_category: dict, order: list[str]) -> None:
    if not by_category:
        return
    st.subheader("By category", anchor=False)
    st.caption(CATEGORY_NOTE)
    table = _category_table(by_category, order)
    # wide enough for "100.0% → 100.0% (n=1000)": autosizing reads the first rows, often blank here
    config = {c: st.column_config.TextColumn(c, width=CELL_WIDTH_PX) for c in table.columns if c != "category"}
    config["category"] = st.column_config.TextColumn("category", pinned=True)
    st.dataframe(table, hide_index=True, width="stretch", key="overview_categories", column_config=config)


def _go_to_diffs(filter_name: str) -> None:
    st.session_state["diffs_filter"] = filter_name


def _render_changed_most(counts: dict[str, int], rankings: list[Ranking], repeats: bool) -> None:
    st.subheader("What changed most", anchor=False)
    cols = st.columns(3)
    for i, (name, count) in enumerate(counts.items()):
        with cols[i % 3]:
            if st.button(f"{FILTERS[name]}: {count}", key=f"overview_goto_{name}", disabled=count == 0,
                         on_click=_go_to_diffs, args=(name,)):
                st.switch_page("pages/diffs.py")
    st.caption("The cases that changed most, by each measure: open one to see its diff.")
    cols = st.columns(2)
    for i, ranking in enumerate(rankings):
        with cols[i % 2]:
            _render_ranking(ranking, repeats)


def _open_case(filter_name: str, case_id: int, repeat: int) -> None:
    # read once by pages/diffs.py: it opens this list's filter at the page holding the case, selected
    st.session_state["diffs_focus"] = {"filter": filter_name, "case_id": case_id, "repeat": repeat}


def _rank_numbers(name: str, row: pd.Series) -> str:
    """The number(s) a row is ranked by, as the list shows them."""
    similarity = f"similarity {row['similarity']:.2f}" if "similarity" in row else ""
    if name == "length_change":
        return f"{row['b_len_chars']:,} → {row['c_len_chars']:,} chars ({row['change']:+,})"
    if name == "refusal_flips":
        return ("answered → refused" if row["c_refused"] else "refused → answered") + f" · {similarity}"
    if name == "accuracy_regressions":
        return f"right → wrong · {similarity}"
    return similarity


def _render_ranking(ranking: Ranking, repeats: bool) -> None:
    st.markdown(f"**{ranking.title}** · top {len(ranking.rows)} of {ranking.total:,}")
    if ranking.rows.empty:
        st.caption("No case.")
    rows = st.container(gap=None)  # a compact list, not a column of spaced-out buttons
    for i, row in ranking.rows.iterrows():  # at most TOP_N rows
        case = _shared.md_text(f"{row['case_key']}" + (f" #{row['repeat']}" if repeats else ""))
        label = f"**{case}** · {_shared.md_text(row['category'])} · {_rank_numbers(ranking.name, row)}"
        if rows.button(label, key=f"overview_case_{ranking.name}_{i}", type="tertiary", icon=":material/difference:",
                       help="Open this case in Diffs", on_click=_open_case,
                       args=(ranking.name, int(row["case_id"]), int(row["repeat"]))):
            st.switch_page("pages/diffs.py")


def _render_settings(name: str) -> None:
    """Reviewer settings for this comparison: extra refusal patterns, one match rule for all cases, the
    system's input token limit, and a JSON Schema for every case without one."""
    box = st.expander("Review settings", key="overview_settings_open", on_change="rerun")
    if not box.open:  # its widgets are built only when opened: most readers never change a setting
        return
    current = stored_settings(_shared.engine(), name)
    with box:
        patterns = st.text_area("Extra refusal patterns (one regex per line)", "\n".join(current.refusal_patterns),
                                key="overview_refusal_patterns")
        rules = ["(per case)", *MATCH_RULES]
        rule = st.selectbox("Match rule for every case", rules,
                            index=rules.index(current.match) if current.match else 0, key="overview_match")
        pattern = st.text_input("Regex (for the regex rule)", current.pattern or "", key="overview_pattern")
        _seed(name, {LIMIT_KEY: current.input_token_limit, SCHEMA_KEY: _pretty_schema(current.schema)})
        limit = st.number_input("Input token limit (the system's prompt budget, in tokens)", min_value=1, step=1,
                                value=None, placeholder="none", key=LIMIT_KEY,
                                help="Counts each prompt under each model's own tokenizer and reports how many "
                                     "cross this budget. Empty: no limit.")
        schema_text = st.text_area("JSON Schema for every case without one (empty: none)", key=SCHEMA_KEY,
                                   height=120, help="Outputs are checked against it like a case's own schema.")
        upload = st.file_uploader("…or a schema file (replaces the text above)", type=["json"],
                                  key="overview_schema_upload")
        if st.button("Save settings", key="overview_save_settings"):
            schema = _schema_from(schema_text, upload)
            if schema is not _INVALID:
                _save_settings(name, patterns, None if rule == rules[0] else rule, pattern or None,
                               schema=schema, input_token_limit=None if limit is None else int(limit))


_INVALID = object()  # the schema given is not one: the error is shown, nothing is saved
LIMIT_KEY, SCHEMA_KEY = "overview_input_token_limit", "overview_schema"
SEEDED_KEY = "overview_settings_seeded_for"  # the comparison whose stored settings the inputs were filled from


def _seed(name: str, values: dict) -> None:
    """Fill the inputs from the stored settings on first show and when the comparison changes, through
    session state: with a default value instead, the number input could not be emptied (= no limit)."""
    if st.session_state.get(SEEDED_KEY) != name or any(k not in st.session_state for k in values):
        st.session_state.update(values)
        st.session_state[SEEDED_KEY] = name


def _pretty_schema(schema: str | None) -> str:
    return json.dumps(json.loads(schema), indent=2) if schema else ""


def _schema_from(text: str, upload: UploadedFile | None) -> str | None | object:
    """The schema to save (canonical JSON, None for none), or _INVALID after showing why not."""
    try:
        if upload is not None:
            try:
                raw = upload.getvalue().decode("utf-8")
            except UnicodeDecodeError:
                raise ReviewSettingsError(f"the schema file {upload.name}: not UTF-8 text") from None
            return canonical_schema(raw, f"the schema file {upload.name}")
        return canonical_schema(text, "the schema") if text.strip() else None
    except ReviewInputError as exc:
        st.error(f"Not saved. {_shared.md_text(exc)}")
        return _INVALID


def _save_settings(name: str, patterns: str, rule: str | None, pattern: str | None, *,
                   schema: str | None = None, input_token_limit: int | None = None) -> None:
    try:
        settings = ReviewSettings(match=rule, pattern=pattern if rule else None,
                                  refusal_patterns=tuple(p.strip() for p in patterns.splitlines() if p.strip()),
                                  schema=schema, input_token_limit=input_token_limit)
        save_settings(_shared.engine(), name, settings)
    except ReviewInputError as exc:
        st.error(f"Not saved. {_shared.md_text(exc)}")
        return
    _shared.after_settings_change()
    st.toast("Settings saved; the review is recomputed.")
    st.rerun()


def _load_demo() -> None:
    from lib.data.demo import load_demo  # only on an empty store

    with st.spinner("Loading the demo: a recorded upgrade of a small local model, with its policy…"):
        try:
            result = load_demo(_shared.engine())
        except ReviewInputError as exc:
            st.error(_shared.md(exc))
            return
    _shared.after_write()
    if result.comparison:
        _shared.set_active(result.comparison)
    st.rerun()


def _render_empty_store() -> None:
    st.info("No comparison yet. Try the demo (a real recorded upgrade, no key or network needed), load outputs "
            "you already recorded, or run both models on a golden dataset.")
    left, middle, right = st.columns(3)
    if left.button("Load the demo", key="overview_load_demo", icon=":material/science:", type="primary"):
        _load_demo()
    _shared.go_button("pages/load.py", "Load a recorded comparison", "overview_go_load", ":material/upload_file:",
                      middle)
    _shared.go_button("pages/run.py", "Run a comparison", "overview_go_run", ":material/play_arrow:", right)


name = _shared.active_comparison()
if name is None:
    _render_empty_store()
    st.stop()
_shared.broken_decision_banner(name)
_catalog_ui.deprecation_banner(name)  # a model of this comparison retires soon: said before the answer
report = _shared.report(_shared.database_url(), name)
st.caption(f"{_shared.md_text(name)} · {report['n_pairs']} paired cases · deltas are candidate − baseline with 95% "
           "confidence intervals.")
if report["n_pairs"] == 0:
    _render_settings(name)
    st.warning("No case has outputs on both sides yet: finish or resume the runs (Comparisons page).")
    _shared.go_button("pages/comparisons.py", "Comparisons", "overview_go_comparisons", ":material/list:")
    st.stop()
checked = _shared.checked(_shared.database_url(), name)
# Static CSS only (no user text): style tags alone go to the page's event container, taking no space, and
# skip the markdown HTML parser st.markdown(unsafe_allow_html=True) would load.
st.html(VERDICT_CSS + CARD_STYLE)
_render_headline(report, checked)
verdict_shown = _render_verdict(name)
_render_decision(name)
draw_forest = _render_forest(report, verdict_shown)
_catalog_ui.cost_card(name)  # after the answer: what staying or upgrading costs
with st.popover("How to read these numbers", icon=":material/help:"):
    st.markdown(SIGNIFICANCE_NOTE)
_render_cards(report["metrics"])
_render_settings(name)
url = _shared.database_url()
_render_changed_most(_shared.change_counts(url, name), _shared.most_changed(url, name),
                     repeats=bool(checked["repeat"].max() > 0))
_render_flips(report["metrics"])
_render_categories(report["by_category"], list(report["metrics"]))
if draw_forest:
    draw_forest()
