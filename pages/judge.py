"""Judge: a pinned LLM judge's rubric scores for both sides, pairwise preference in both orders, and
whether the judge itself changed (anchor drift, fingerprints)."""
from __future__ import annotations

import shlex
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from lib.errors import ReviewInputError
from lib.review import fmt
from pages import _model_picker, _shared

st.title("Judge")
COLORS = {"baseline": "#636EFA", "candidate": "#EF553B"}
RATIONALE_COLUMNS = ["case_key", "category", "repeat", "kind", "side", "order", "preference", "winner", "status",
                     "scores", "rationale", "parse_error", "error", "attempts", "malformed", "system_fingerprint",
                     "served_model", "raw_text"]
SCORES = [1, 2, 3, 4, 5]
OUTCOME_KEY = "judge_last_outcome"  # [(level, text)] of a run started here, shown once after the rerun
PICK_PENDING_KEY = "judge_pending_pick"  # config hash to select on the next run (before the picker exists)


def _pct(r: dict[str, Any]) -> str:
    return fmt.rate_ci(r["rate"], r["ci_low"], r["ci_high"], r["n"])


def _render_config(block: dict[str, Any]) -> None:
    cfg = block["config"]
    st.subheader("Judge configuration")
    rows = {"model": cfg["model"], "config hash": cfg["config_hash"][:16],
            "templates": f"{cfg['templates']['pointwise']} ({cfg['template_hashes']['pointwise'][:10]}), "
                         f"{cfg['templates']['pairwise']} ({cfg['template_hashes']['pairwise'][:10]})",
            "temperature": str(cfg["temperature"]), "seed": str(cfg["seed"]),
            "JSON mode": "requested" if cfg["json_mode"] else "off", "rubric": ", ".join(cfg["rubric"]),
            "fingerprints": "; ".join(f"{f['system_fingerprint'] or '-'} / {f['served_model'] or '-'} (n={f['n']})"
                                      for f in cfg["fingerprints"]) or "none reported"}
    st.dataframe(pd.DataFrame({"setting": list(rows), "value": list(rows.values())}), hide_index=True,
                 width="stretch", key="judge_config_table")


def _reference(drift: dict[str, Any], name: str) -> str:
    """Which run the anchors were compared with: a judge model's first run, maybe on another comparison."""
    if drift.get("reference_run_id") is None:
        return ""
    other = drift.get("reference_comparison")
    where = ("this comparison" if other == name else f"another comparison, {other!r}" if other
             else "a deleted comparison")
    at = str(drift.get("reference_at") or "")[:16]
    return (f" — reference judge run #{drift['reference_run_id']} ran on {where}"
            f"{f', started {at} UTC' if at else ''} (the anchors are the same for every comparison)")


def _render_drift(drift: dict[str, Any], name: str) -> None:
    text = _shared.md(drift.get("message", drift["status"]) + _reference(drift, name))
    if drift.get("flagged"):
        st.warning(f"**The judge itself changed.** {text}", icon="⚠️")
    elif drift["status"] in ("stable", "reference"):
        st.success(f"Judge drift check: {text}", icon="✅")
    else:
        st.info(f"Judge drift check: {text}")


def _dimension_table(dimensions: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for dim, m in dimensions.items():
        if m is None:
            rows.append({"dimension": dim, "n": 0})
            continue
        rows.append({"dimension": dim, "baseline": round(m["baseline"], 2), "candidate": round(m["candidate"], 2),
                     "delta": round(m["delta"], 2), "95% CI of Δ": f"[{m['ci_low']:+.2f}, {m['ci_high']:+.2f}]",
                     "p (Wilcoxon)": fmt.p_value(m["p_value"]), "p (Holm)": fmt.p_value(m["p_value_adj"]), "n": m["n"]})
    return pd.DataFrame(rows)


SIGNIFICANCE_NOTE = (
    "Δ = candidate − baseline, per case (repeats averaged first). 95% CI of Δ: interval of the mean difference "
    "(paired bootstrap, or t at large n), not adjusted for the {k} dimensions. p (Wilcoxon): Wilcoxon "
    "signed-rank test of the same paired differences; p (Holm): that p adjusted across the dimensions. "
    "They answer different questions (a mean vs ranks, one dimension vs all), so they can disagree, "
    "especially at small n; when they do, treat the difference as uncertain.")


def _score_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Judgements per (dimension, side, score 1-5), zeros included so every score shows on both sides."""
    scores = frame[(frame["kind"] == "pointwise") & (frame["status"] == "ok") & frame["score"].notna()]
    counts = scores.groupby(["dimension", "side", scores["score"].astype(int)]).size()
    grid = pd.MultiIndex.from_product([scores["dimension"].unique(), list(COLORS), SCORES],
                                      names=["dimension", "side", "score"])
    return counts.reindex(grid, fill_value=0).rename("judgements").reset_index()


def _score_figure(counts: pd.DataFrame) -> Any:
    fig = px.bar(counts, x="score", y="judgements", color="side", barmode="group", facet_col="dimension",
                 color_discrete_map=COLORS, title="Score distribution per dimension, baseline vs candidate")
    fig.update_xaxes(dtick=1, range=[0.5, 5.5])
    # Facets share (match) one y axis; with an x range set, plotly.js then leaves y at its empty default
    # [-1, 4] and clips the bars: ask for autorange explicitly.
    fig.update_yaxes(autorange=True, rangemode="tozero")
    return fig


def _render_scores(block: dict[str, Any], frame: pd.DataFrame) -> None:
    st.subheader("Rubric scores (1-5)")
    if not block["dimensions"]:
        un, err = block["unparseable"]["pointwise"], block["errors"]["pointwise"]
        st.info(f"No pointwise score parsed: {un} pointwise replies were unparseable and {err} pointwise calls "
                "failed. Their raw replies and errors are in the Per-case judgements table below.")
        return
    st.dataframe(_dimension_table(block["dimensions"]), hide_index=True, width="stretch", key="judge_dims")
    st.caption(SIGNIFICANCE_NOTE.format(k=len(block["dimensions"])))
    st.plotly_chart(_score_figure(_score_counts(frame)), width="stretch", key="judge_score_dist")


def _render_pairwise(pw: dict[str, Any] | None) -> None:
    st.subheader("Pairwise preference (both orders)")
    if pw is None:
        st.info("No pairwise judgements: run the judge with --pairwise.")
        return
    cols = st.columns(4)
    cols[0].metric(f"Candidate wins (n={pw['n']})", pw["win"]["count"], help=_pct(pw["win"]))
    cols[1].metric(f"Ties (n={pw['n']})", pw["tie"]["count"], help=_pct(pw["tie"]))
    cols[2].metric(f"Candidate losses (n={pw['n']})", pw["loss"]["count"], help=_pct(pw["loss"]))
    pc = pw["position_consistency"]
    cols[3].metric(f"Position consistency (n={pc['n']})", "—" if pc["rate"] is None else f"{pc['rate']:.0%}",
                   help=_pct(pc))
    table = pd.DataFrame([{"outcome": k, "count": pw[k]["count"], "rate [95% CI]": _pct(pw[k])}
                          for k in ("win", "tie", "loss")])
    st.dataframe(table, hide_index=True, width="stretch", key="judge_wtl")
    p = "—" if pw["p_value"] is None else f"{pw['p_value']:.3g}"
    st.caption(f"A win or loss counts only when both orders agree; otherwise it is a tie. Sign test (wins vs "
               f"losses) p = {p}. First position preferred in {_pct(pw['first_position_preferred'])} of decisive "
               f"single judgements. {pw['n_unparseable']} pairs have an unparseable order, "
               f"{pw['n_incomplete']} an order not judged yet.")


def _render_counts(block: dict[str, Any]) -> None:
    un, err = block["unparseable"], block["errors"]
    msg = (f"Unparseable judgements: {un['total']} (pointwise {un['pointwise']}, pairwise {un['pairwise']}) — "
           f"stored with their raw text below, never dropped. Failed calls on this comparison's pairs: "
           f"{err['total']} (the judge's anchor calls, which the CLI counts too, are not among them).")
    (st.warning if un["total"] or err["total"] else st.caption)(msg)


def _rationales(frame: pd.DataFrame) -> pd.DataFrame:
    scored = frame.dropna(subset=["dimension"])
    labels = scored["dimension"] + "=" + scored["score"].astype("Int64").astype(str)
    scores = labels.groupby(scored["id"]).agg(", ".join).rename("scores")
    rows = frame.drop_duplicates("id").set_index("id").join(scores)
    return rows.reindex(columns=RATIONALE_COLUMNS).reset_index(drop=True)


def _render_rationales(frame: pd.DataFrame) -> None:
    st.subheader("Per-case judgements")
    rows = _rationales(frame)
    status = st.multiselect("Status", ["ok", "unparseable", "error"], default=["ok", "unparseable", "error"],
                            key="judge_status_filter")
    st.dataframe(rows[rows["status"].isin(status)], hide_index=True, width="stretch", key="judge_rationales")


EXAMPLE_JUDGE = "openai/gpt-4o-2024-08-06"


def _command(name: str, model: str) -> str:
    return f"./review judge {shlex.quote(name)} --judge {shlex.quote(model)} --sample 0.05 --pairwise"


def _render_run_form(name: str, model_in_use: str | None = None) -> None:
    """The CLI command (with the judge shown above, so re-running it resumes that judge) and a form."""
    st.subheader("Run the judge")
    st.code(_command(name, model_in_use or EXAMPLE_JUDGE), language="bash")
    st.caption("Options: --api-base URL, --rubric PATH (TOML or JSON), --dimensions, --seed, --concurrency, "
               "--drift-threshold. Keys come from the environment and are never stored. Running again resumes: "
               "stored judgements are not requested again.")
    with st.expander("Run it from here"):
        model, api_base = _model_picker.model_picker("judge", "judge model")
        sample = st.text_input("Sample (fraction or count; empty = every pair)", key="judge_sample")
        pairwise = st.checkbox("Also judge pairwise preference (both orders)", key="judge_pairwise")
        if st.button("Run judge", key="judge_start", disabled=not model.strip()):
            _start(name, model, api_base, sample, pairwise)


def _failures(run_id: int, n_errors: int, n_sent: int) -> str:
    from lib.judge.summary import run_errors

    kinds = run_errors(_shared.engine(), run_id)
    first = kinds[0] if kinds else {"error_kind": "unknown", "error": ""}
    message = (first["error"] or "")[:300]
    detail = "; ".join(f"{k['error_kind'] or 'unknown'} ×{k['n']}" for k in kinds)
    lead = f"all {n_errors} judge calls failed" if n_errors == n_sent else f"{n_errors} of {n_sent} judge calls failed"
    return (f"{lead} after retries ({detail}). First error, {first['error_kind'] or 'unknown'}: {message}. "
            "Check the model name, API base and key; running again retries only the failed calls.")


def _outcome(result: Any) -> list[tuple[str, str]]:
    """What to tell after a run started here, as (level, text); shown after the page reruns."""
    head = f"Judge run #{result.run_id} ({result.model})"
    if result.n_errors:
        level = "error" if result.n_errors == result.n_sent else "warning"
        out = [(level, f"{head}: {_failures(result.run_id, result.n_errors, result.n_sent)}")]
    else:
        out = [("success", f"{head} complete: {result.n_sent} judgements made ({result.n_resumed} already "
                           f"stored), {result.n_unparseable} unparseable.")]
    if result.drift.flagged:
        out.append(("warning", result.drift.message()))
    return out


def _render_outcome() -> None:
    for level, text in st.session_state.pop(OUTCOME_KEY, []):
        getattr(st, level)(_shared.md(text))


def _start(name: str, model: str, api_base: str | None, sample: str, pairwise: bool) -> None:
    from lib.judge.config import JudgeSettings
    from lib.judge.run import JudgeOptions, JudgeProgress, run_judge
    from lib.judge.sampling import parse_sample

    try:  # bad input is reported outside the status box, which collapses when it ends
        options = JudgeOptions(sample=parse_sample(sample), pairwise=pairwise, api_base=api_base)
    except ReviewInputError as exc:
        st.error(_shared.md(exc))
        return
    failed: ReviewInputError | None = None
    with st.status(f"Judging {_shared.md(name)}…", expanded=True) as status:
        line = st.empty()

        def progress(ev: JudgeProgress) -> None:
            line.write(f"{ev.done}/{ev.total} judgements, {ev.unparseable} unparseable, {ev.errors} failed")

        try:
            result = run_judge(_shared.engine(), name, JudgeSettings(model), options, progress=progress)
        except ReviewInputError as exc:
            failed = exc
            status.update(label="Not started", state="error", expanded=True)
    if failed is not None:
        st.error(_shared.md(failed))
        return
    _shared.after_judge()
    st.session_state[OUTCOME_KEY] = _outcome(result)
    st.session_state[PICK_PENDING_KEY] = result.config_hash
    st.rerun()  # the reads above this form are stale: show the new judgements now


def _pick_config(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """The picker's options are config hashes (stable while counts change); a run started here
    selects its own config on the rerun that follows it."""
    by_hash = {c["config_hash"]: c for c in configs}
    pending = st.session_state.pop(PICK_PENDING_KEY, None)
    if pending in by_hash:
        st.session_state["judge_config_pick"] = pending
    picked = st.selectbox("Judge configuration", list(by_hash), key="judge_config_pick",
                          format_func=lambda h: f"{by_hash[h]['model']} · {h[:10]} ({by_hash[h]['n']} judgements)")
    return by_hash[picked]


def _render(name: str) -> None:
    url = _shared.database_url()
    _render_outcome()
    configs = _shared.judge_configs(url, name)
    if not configs:
        st.info("No judgements for this comparison yet.")
        _render_run_form(name)
        return
    chosen = _pick_config(configs)
    block = _shared.judge_summary(url, name, chosen["config_hash"])
    if block is None:
        st.info("No judgements for this configuration.")
        return
    frame = _shared.judge_frame(url, name, int(chosen["id"]))
    _render_drift(block["drift"], name)
    st.caption(f"{block['n_pairs_judged']} pairs judged by {_shared.md(block['config']['model'])}.")
    _render_scores(block, frame)
    _render_pairwise(block["pairwise"])
    _render_counts(block)
    _render_rationales(frame)
    _render_config(block)
    _render_run_form(name, block["config"]["model"])


active = _shared.active_comparison()
if active is None:
    st.info("No comparison yet. Load one (Load page) or run one (Run page), then judge it.")
    st.stop()
_render(active)
