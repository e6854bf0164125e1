"""The model picker: search litellm's bundled map, pick from a list or type any litellm string.

One widget group per choice, keyed by a prefix (`run_baseline` -> `run_baseline_model`, `run_baseline_api_base`):
a search box, a list (search results; suggestions for a candidate once the baseline is named; the models
an API base serves), the model string itself (free text always works) and a summary of what is known:
provider, prices, context window, deprecation date (the override file named when it applies) and
whether the provider's key is set, never the key.
"""
from __future__ import annotations

from typing import NamedTuple

import streamlit as st

from lib.errors import ReviewInputError
from lib.review import fmt
from pages import _shared

LIST_LIMIT = 40
WARN_WITHIN_DAYS = 90


class Choice(NamedTuple):
    model: str
    api_base: str | None


def _label(name: str) -> str:
    from lib.catalog.catalogue import catalogue

    info = catalogue().info(name)
    prices = f"{fmt.usd_per_million(info.input_cost_per_token)} in / {fmt.usd_per_million(info.output_cost_per_token)}"
    parts = [name, info.provider or "provider unknown", prices + " out"]
    if info.max_input_tokens:
        parts.append(f"{fmt.num(info.max_input_tokens)} tokens")
    if info.deprecation_date:
        parts.append(f"deprecated {info.deprecation_date.isoformat()}")
    return " · ".join(parts)


def _copy_pick(pick_key: str, model_key: str) -> None:
    """Selecting from the list fills the model string (which stays editable)."""
    picked = st.session_state.get(pick_key)
    if picked:
        st.session_state[model_key] = picked


def _options(prefix: str, search: str, suggest_for: str | None) -> tuple[list[str], str]:
    from lib.catalog.catalogue import catalogue

    cat = catalogue()
    discovered = st.session_state.get(f"{prefix}_discovered") or []
    if search:
        names = [m.model for m in cat.search(search, limit=LIST_LIMIT)]
        what = f"{len(names)} matches for '{search}'" + (" (first 40)" if len(names) == LIST_LIMIT else "")
    elif suggest_for:
        names = [m.model for m in cat.candidates(suggest_for)]
        what = f"suggested for baseline {suggest_for}: newer versions and same-provider successors"
    else:
        names = [m.model for m in cat.recent(LIST_LIMIT)]
        what = "newest models in the map; type to search every model"
    return discovered + [n for n in names if n not in discovered], what


def _discover(prefix: str, api_base: str) -> None:
    from lib.catalog.discovery import discover_models

    try:
        ids = discover_models(api_base)
    except ReviewInputError as exc:
        st.session_state[f"{prefix}_discover_error"] = str(exc)
        return
    st.session_state.pop(f"{prefix}_discover_error", None)
    st.session_state[f"{prefix}_discovered"] = [f"openai/{i}" for i in ids]


def _summary(model: str, api_base: str | None) -> None:
    """What the map and the override file say about the model, and whether its key is set."""
    from lib.catalog.catalogue import catalogue
    from lib.catalog.keys import key_status
    from lib.catalog.radar import today_utc

    cat = catalogue()
    info, known = cat.info(model), cat.lookup(model) is not None
    keys = key_status(model, api_base)
    if known or info.overridden:
        deprecation = info.deprecation_date.isoformat() if info.deprecation_date else "none announced"
        line = (f"{info.provider or 'provider unknown'} · input {fmt.usd_per_million(info.input_cost_per_token)} · "
                f"output {fmt.usd_per_million(info.output_cost_per_token)} · context "
                f"{fmt.num(info.max_input_tokens)} tokens · deprecation {deprecation}"
                + ("" if info.priced else " · price unknown (not free)") + f" · source: {info.source}")
        st.caption(_shared.md(line))  # escaped whole: $ would start LaTeX, and names are untrusted
    else:
        st.caption("Not in the model map: prices, context and deprecation unknown. Any litellm string still works.")
    if info.deprecation_date:
        days = (info.deprecation_date - today_utc()).days
        if days <= WARN_WITHIN_DAYS:
            when = f"in {days} days" if days >= 0 else f"{-days} days ago"
            st.warning(f"{_shared.md(model)} is deprecated on {info.deprecation_date.isoformat()} ({when}).")
    (st.caption if keys.present else st.warning)(_shared.md(keys.message[:1].upper() + keys.message[1:]))


def model_picker(prefix: str, label: str, *, suggest_for: str | None = None, with_api_base: bool = True) -> Choice:
    """The picker's widgets; returns the chosen model string (may be empty) and API base."""
    model_key, api_key = f"{prefix}_model", f"{prefix}_api_base"
    if not _catalogue_ok():
        model = st.text_input(f"{label.capitalize()}: litellm model string", key=model_key).strip()
        api_base = st.text_input("API base (optional)", key=api_key).strip() or None if with_api_base else None
        return Choice(model, api_base)
    search = st.text_input(f"Search models for the {label}", key=f"{prefix}_search",
                           placeholder="e.g. gpt-4o, claude sonnet, gemini").strip()
    names, what = _options(prefix, search, suggest_for)
    st.selectbox(f"Pick the {label} ({len(names)})", names, index=None, key=f"{prefix}_pick",
                 format_func=_label, on_change=_copy_pick, args=(f"{prefix}_pick", model_key),
                 placeholder="Choose from the list…", help=what)
    model = st.text_input(f"{label.capitalize()}: litellm model string", key=model_key,
                          help="Picked from the list, or typed: any litellm string works (openai/NAME with an "
                               "API base for a local OpenAI-compatible server).").strip()
    api_base = None
    if with_api_base:
        api_base = st.text_input("API base (optional)", key=api_key).strip() or None
        if api_base:  # a callback: the list above shows the served models on this very rerun
            st.button("List the models it serves", key=f"{prefix}_discover", on_click=_discover,
                      args=(prefix, api_base))
        if st.session_state.get(f"{prefix}_discover_error"):
            st.error(_shared.md(st.session_state[f"{prefix}_discover_error"]))
    if model:
        _summary(model, api_base)
    return Choice(model, api_base)


def _catalogue_ok() -> bool:
    """False (after saying why) when the override file is bad: the picker falls back to free text."""
    from lib.catalog.catalogue import catalogue

    try:
        catalogue()
    except ReviewInputError as exc:
        st.error(f"The model list is unavailable: {_shared.md(exc)}")
        return False
    return True
