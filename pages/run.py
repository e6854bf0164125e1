"""Run: a golden dataset through a baseline and a candidate configuration, live, resumable."""
from __future__ import annotations

import json

import streamlit as st

from lib.data.golden import list_datasets
from lib.errors import ReviewInputError
from lib.run.executor import WORKER_MODES, should_warm_up, warm_up
from lib.run.quota import Quota
from lib.run.resume import stored_run, unfinished
from lib.run.runner import ModelSpec, ProgressEvent, RunOptions, RunResult, calls_per_side, run_comparison
from lib.run.tools_spec import parse_tools
from pages import _model_picker, _shared

st.title("Run a comparison")
DONE_KEY = "run_outcome"


def _side_form(side: str, suggest_for: str | None = None) -> ModelSpec | None:
    st.subheader(side.capitalize())
    model, api_base = _model_picker.model_picker(f"run_{side}", side, suggest_for=suggest_for)
    a, b = st.columns(2)
    temperature = a.number_input("temperature", 0.0, 2.0, 0.0, 0.1, key=f"run_{side}_temperature")
    top_p = b.number_input("top_p", 0.0, 1.0, 1.0, 0.05, key=f"run_{side}_top_p")
    max_tokens = a.number_input("max_tokens", 1, 200_000, 512, key=f"run_{side}_max_tokens")
    seed = b.number_input("seed (0 = none)", 0, 2**31 - 1, 0, key=f"run_{side}_seed")
    fmt = st.text_area("response_format (JSON, optional)", key=f"run_{side}_response_format",
                       placeholder='{"type": "json_object"}').strip()
    try:
        response_format = json.loads(fmt) if fmt else None
    except json.JSONDecodeError as exc:
        st.error(f"{side} response_format is not valid JSON: {exc}")
        return None
    if not model:
        return None
    return ModelSpec(model=model, api_base=api_base, temperature=temperature, top_p=top_p,
                     max_tokens=int(max_tokens), seed=int(seed) or None, response_format=response_format)


def _prompt_stack(specs: list[ModelSpec]) -> None:
    """The system's prompt stack is the same on both sides: that is what an upgrade changes under."""
    st.subheader("Prompt stack (both sides)")
    system_prompt = st.text_area("System prompt", key="run_system_prompt").strip() or None
    template = st.text_area("User template (optional; {{input}} is replaced by the case input)",
                            key="run_template").strip() or None
    for spec in specs:
        spec.system_prompt, spec.prompt_template = system_prompt, template


TOOLS_PLACEHOLDER = ('[{"type": "function", "function": {"name": "get_weather", "description": "…", '
                     '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]')


def _tools(specs: list[ModelSpec]) -> bool:
    """The tools the system sends with every request (both sides), from text or a file; False when invalid
    (the error is shown and nothing can start)."""
    st.subheader("Tools (both sides, optional)")
    text = st.text_area("Tool definitions: a JSON list, OpenAI style", key="run_tools_text",
                        placeholder=TOOLS_PLACEHOLDER).strip()
    upload = st.file_uploader("…or a tools file", type=["json"], key="run_tools_upload")
    if text and upload is not None:
        st.error("Give the tools either in the text box or as a file, not both.")
        return False
    try:
        if upload is not None:
            tools = parse_tools(upload.getvalue(), upload.name)
        else:
            tools = parse_tools(text, "tool definitions") if text else None
    except ReviewInputError as exc:
        st.error(f"Invalid tools, nothing can start: {_shared.md(exc)}")
        return False
    if tools:
        st.caption(f"{len(tools)} tools: " + ", ".join(_shared.md(t["function"]["name"]) for t in tools)
                   + ". A reply made of tool calls is stored as JSON of the calls (name, arguments).")
    for spec in specs:
        spec.tools = tools
    return True


def _options() -> RunOptions:
    st.subheader("Execution")
    a, b, c, d, e = st.columns(5)
    return RunOptions(concurrency=int(a.number_input("concurrency", 1, 256, 8, key="run_concurrency",
                                                     help="Requests in flight, both sides together")),
                      timeout=float(b.number_input("timeout (s)", 1.0, 3600.0, 60.0, key="run_timeout")),
                      max_retries=int(c.number_input("max retries", 0, 20, 4, key="run_max_retries")),
                      repeats=int(d.number_input("repeats", 1, 50, 1, key="run_repeats")),
                      workers=e.selectbox("workers", WORKER_MODES, key="run_workers",
                                          help="per-side: each side in its own process, faster at high "
                                               "concurrency; auto: per-side whenever the resident worker host "
                                               "can run here (it keeps litellm imported between runs), else "
                                               "for large runs"))


def _quota() -> dict[str, Quota]:
    """Each side's declared quota (per model; 0 = not declared: found from 429s and rate-limit headers)."""
    st.subheader("Quota")
    cols = st.columns(4)
    quotas = {}
    for i, side in enumerate(("baseline", "candidate")):
        rpm = cols[2 * i].number_input(f"{side} rpm", 0, 10_000_000, 0, key=f"run_{side}_rpm",
                                       help="Requests per minute the provider allows this model; 0 = not declared")
        tpm = cols[2 * i + 1].number_input(f"{side} tpm", 0, 1_000_000_000, 0, key=f"run_{side}_tpm",
                                           help="Tokens per minute the provider allows this model; 0 = not declared")
        quotas[side] = Quota(float(rpm) or None, float(tpm) or None)
    return quotas


def _achieved(result: RunResult) -> str:
    return "; ".join(f"{s.side}: {'—' if s.rpm is None else f'{s.rpm:.0f}'} rpm achieved, {s.rate_limited} 429s"
                     for s in (result.baseline, result.candidate))


def _cost_line(dataset: str, spec: ModelSpec, repeats: int) -> str:
    try:
        est = _shared.cost_estimate(_shared.database_url(), dataset, spec, repeats)
    except ReviewInputError as exc:
        return f"{_shared.md(spec.model)}: {exc}"
    usd = "unknown (no price for this model)" if est.usd is None else f"${est.usd:,.4f}"
    return (f"{_shared.md(spec.model)}: {est.n_calls} calls, ~{est.prompt_tokens:,} prompt tokens, "
            f"estimated cost {usd} ({_shared.md(est.note)})")


CHECKS_KEY = "run_connection_checks"  # side -> ConnectionResult of the last "Test connection"


def _connection_check(specs: dict[str, ModelSpec]) -> bool:
    """The "Test connection" button (one tiny request per side) and its results; False when a side cannot run as
    configured: its last check failed, or its provider's key is missing (then no request could succeed)."""
    from lib.catalog.connection import test_connection
    from lib.catalog.keys import key_status

    if st.button("Test connection", key="run_test_connection",
                 help="One tiny request per side (a few tokens): latency, the model that answered, its fingerprint."):
        with st.spinner("One tiny request per side…"):
            st.session_state[CHECKS_KEY] = {side: test_connection(s.model, s.api_base) for side, s in specs.items()}
    results, ready = st.session_state.get(CHECKS_KEY, {}), True
    for side, spec in specs.items():
        result = results.get(side)
        if result is not None and (result.model, result.api_base) == (spec.model, spec.api_base):
            if result.ok:
                st.success(f"{side}: {_shared.md(spec.model)} answered in {result.latency_s:.2f} s · served model "
                           f"{_shared.code(result.served_model or 'not reported')} · fingerprint "
                           f"{_shared.code(result.fingerprint or 'none')}")
                continue
            st.error(f"{side}: {_shared.md(spec.model)}: {_shared.md(result.message)}. "
                     "Not started: fix it and test again.")
            ready = False
            continue
        keys = key_status(spec.model, spec.api_base)
        if keys.needed and not keys.present:
            st.error(f"{side}: {_shared.md(keys.message)} (environment or the app's secrets). Not started.")
            ready = False
    return ready


def _start(dataset: str, base: ModelSpec, cand: ModelSpec, name: str, options: RunOptions, system: str) -> None:
    with st.status(f"Running {_shared.md(name)}…", expanded=True) as status:
        counts, last = st.empty(), {}

        def progress(ev: ProgressEvent) -> None:
            last[ev.side] = f"{ev.side}: {ev.done}/{ev.total} done, {ev.errors} errors, {ev.skipped} already stored"
            counts.write("  \n".join(last.values()))

        try:
            result = run_comparison(_shared.engine(), dataset=dataset, baseline=base, candidate=cand,
                                    name=name, options=options, system=system, progress=progress)
        except ReviewInputError as exc:
            status.update(label="Not started", state="error")
            st.error(str(exc))
            return
        _shared.after_write()
        done = result.status == "complete"
        label = f"{_shared.md(name)}: {result.status} in {result.wall_s:.1f}s ({result.workers})"
        status.update(label=label, state="complete" if done else "error")
    messages = [("success" if done else "error", label), ("markdown", "  \n".join(last.values())),
                ("caption", _achieved(result))]
    if not done:
        messages.append(("warning", "Some calls failed after all retries; they are stored as errors. Start again "
                                    "to resume: only the failed and missing cases are sent."))
    _shared.keep_outcome(DONE_KEY, name, messages)


def _render_resume() -> None:
    """Unfinished live comparisons, resumable with their stored configuration in one click."""
    rows = unfinished(_shared.engine())
    if not rows:
        return
    st.subheader("Resume an interrupted run")
    st.dataframe(rows, hide_index=True, width="stretch", key="run_unfinished")
    name = st.selectbox("Comparison", [r["name"] for r in rows], key="run_resume_name")
    if st.button("Resume", key="run_resume"):
        stored = stored_run(_shared.engine(), name)
        options = RunOptions(repeats=stored.repeats)
        _start(stored.dataset, stored.baseline, stored.candidate, name, options, stored.system)


def _render() -> None:
    datasets = sorted({d["name"] for d in list_datasets(_shared.engine())})
    if not datasets:
        st.info("Import a golden dataset first (Datasets page).")
        return
    dataset = st.selectbox("Golden dataset (latest version)", datasets, key="run_dataset")
    left, right = st.columns(2)
    with left:
        base = _side_form("baseline")
    with right:
        cand = _side_form("candidate", suggest_for=base.model if base else None)
    if base is None or cand is None:
        st.info("Enter both model strings.")
        return
    _prompt_stack([base, cand])
    if not _tools([base, cand]):
        return
    options = _options()
    options.side_quotas = _quota()
    name = st.text_input("Comparison name", key="run_name",
                         help="Running an existing name again resumes it.").strip()
    system = st.text_input("System", value="default", key="run_system").strip() or "default"
    st.markdown("**Cost estimate**  \n" + "  \n".join(_cost_line(dataset, s, options.repeats) for s in (base, cand)))
    if should_warm_up(options, calls_per_side(_shared.engine(), dataset, options.repeats)):
        warm_up()  # worker processes import litellm now, not when Start is pressed
    checked_ok = _connection_check({"baseline": base, "candidate": cand})
    if st.button("Start (or resume)", type="primary", key="run_start", disabled=not name or not checked_ok):
        _start(dataset, base, cand, name, options, system)


_render_resume()
_render()
_shared.show_outcome(DONE_KEY, "run_go_overview")
