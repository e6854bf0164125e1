"""UI-side data access: the one place that caches. Pages call these, never lib's readers directly
for lists that many pages show. After a write, clear only what it touched."""
from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine, make_url
from streamlit.runtime.pages_manager import PagesManager

from lib.review.changed_most import Ranking, changed_most
from lib.review.checked import checked_frame, with_texts
from lib.review.comparisons import list_comparisons, load_pairs
from lib.review.constants import ALPHA
from lib.review.report import change_counts as _change_counts
from lib.review.report import report_from_checked
from lib.run.runner import CostEstimate, ModelSpec, estimate_cost
from lib.store.engine import database_url, get_engine

ACTIVE_KEY = "sidebar_active_comparison"  # the sidebar selectbox's key: the comparison pages show
PENDING_KEY = "pending_active_comparison"  # set by pages; applied by the router before the widget exists
READ_TTL_S = 30
STORE_TTL_S = 3600  # reads keyed on the store's version (store_version) stay valid until the store changes


def _leave_legacy_multipage_mode() -> None:
    """Until the first `st.navigation` call in the process, Streamlit treats a folder named `pages/`
    as a legacy multipage app: a deep link opened first (`/diffs` on a fresh server) runs the page
    without the router (no sidebar, a raw file list). Switch that mode off and rerun the same page
    through the router, which `st.navigation` would do anyway. Runs when a page first imports this."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_legacy_multipage_mode()


@st.cache_resource(show_spinner=False)
def engine_for(url: str) -> Engine:
    return get_engine(url)


def engine() -> Engine:
    return engine_for(database_url())


def store_version(url: str) -> tuple[int, ...] | float:
    """Changes whenever any process commits to the store: the SQLite file and its write-ahead log's inode,
    modification and change times and sizes (a stat, no query). Cached reads keyed on it are never stale
    and never recomputed while nothing changed; a store that is not a file falls back to a short expiry.
    The change time cannot be set back by a user (unlike the modification time), so an edit of the file
    that restores its mtime still invalidates cached verification results."""
    path = make_url(url).database
    if not path or path == ":memory:":
        return time.time() // READ_TTL_S
    return _file_version(path, f"{path}-wal")


def _file_version(*paths: str) -> tuple[int, ...]:
    stats = [os.stat(p) for p in paths if os.path.exists(p)]
    return tuple(v for s in stats for v in (s.st_ino, s.st_mtime_ns, s.st_ctime_ns, s.st_size))


def _versioned(cached: Callable[..., Any]) -> Callable[..., Any]:
    """A read by (url, *args) keyed on the store's version; `.clear()` clears the underlying cache."""
    @functools.wraps(cached)
    def read(url: str, *args: Any) -> Any:
        return cached(url, *args, version=store_version(url))

    read.clear = cached.clear  # type: ignore[attr-defined]
    return read


@st.cache_data(ttl=STORE_TTL_S, show_spinner=False)
def _comparisons(url: str, version: object) -> list[dict[str, Any]]:
    return list_comparisons(engine_for(url))


@st.cache_data(ttl=STORE_TTL_S, show_spinner="Reading the comparison…", max_entries=4)
def _pairs(url: str, name: str, version: object) -> pd.DataFrame:
    return load_pairs(engine_for(url), name)


comparisons = _versioned(_comparisons)
pairs = _versioned(_pairs)


def comparison_names() -> list[str]:
    return [c["name"] for c in comparisons(database_url())]


def active_comparison() -> str | None:
    """The comparison chosen in the sidebar (also kept in the URL so a link reopens it)."""
    name = st.session_state.get(ACTIVE_KEY) or st.query_params.get("comparison")
    names = comparison_names()
    if name in names:
        return name
    return names[0] if names else None


def set_active(name: str) -> None:
    """Make `name` the active comparison on the next run (safe from pages and callbacks)."""
    st.session_state[PENDING_KEY] = name


def apply_pending_active() -> None:
    """Router only, before the sidebar widget is created: widget state can't change after."""
    name = st.session_state.pop(PENDING_KEY, None)
    if name:
        st.session_state[ACTIVE_KEY] = name
    current = active_comparison()
    if current:
        st.session_state[ACTIVE_KEY] = current
        st.query_params["comparison"] = current


def after_write() -> None:
    """A run, load or import changed the store: drop cached lists and pairs."""
    comparisons.clear()
    pairs.clear()
    after_settings_change()


_MD_SPECIAL = "\\`*_{}[]()<>#+-.!|~$"


def md(text: object) -> str:
    """Escape untrusted text (model names, file contents) for st.markdown / captions."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text))


@st.cache_data(ttl=STORE_TTL_S, show_spinner="Reading the checks…", max_entries=4)
def _checked(url: str, name: str, version: object) -> pd.DataFrame:
    """Checked pairs without texts: stored checks (only outputs never checked are checked now)."""
    return checked_frame(engine_for(url), name)


@st.cache_data(ttl=STORE_TTL_S, show_spinner="Reading every text to search…", max_entries=2)
def _searchable(url: str, name: str, version: object) -> pd.DataFrame:
    """Checked pairs with their texts, for free-text search only (the heavy read)."""
    return with_texts(engine_for(url), checked(url, name))


checked = _versioned(_checked)
searchable = _versioned(_searchable)


def page_texts(rows: pd.DataFrame) -> pd.DataFrame:
    """The texts of the rows a page shows (a few dozen: read on each render, not cached)."""
    return rows if "b_text" in rows else with_texts(engine(), rows)


@st.cache_data(ttl=STORE_TTL_S, show_spinner="Computing paired statistics…", max_entries=8)
def _report(url: str, name: str, version: object) -> dict[str, Any]:
    return report_from_checked(checked(url, name), name)


@st.cache_data(ttl=STORE_TTL_S, show_spinner=False, max_entries=8)
def _counts(url: str, name: str, version: object) -> dict[str, int]:
    return _change_counts(checked(url, name))


@st.cache_data(ttl=STORE_TTL_S, show_spinner=False, max_entries=8)
def _changed_most(url: str, name: str, version: object) -> list[Ranking]:
    return changed_most(checked(url, name))


report = _versioned(_report)
change_counts = _versioned(_counts)
most_changed = _versioned(_changed_most)  # the Overview's lists of the cases that changed most


def after_settings_change() -> None:
    """Reviewer settings changed: every derived read is stale."""
    checked.clear()
    searchable.clear()
    report.clear()
    change_counts.clear()
    most_changed.clear()


@st.cache_data(ttl=300, show_spinner="Estimating cost…", max_entries=64)
def cost_estimate(url: str, dataset: str, spec: ModelSpec, repeats: int) -> CostEstimate:
    """litellm token counting is slow on big sets: estimate once per (dataset, configuration)."""
    return estimate_cost(engine_for(url), dataset, spec, repeats)


# ---- judge (LLM-as-judge page) -------------------------------------------------------------------
@st.cache_data(ttl=STORE_TTL_S, show_spinner=False, max_entries=16)
def _judge_configs(url: str, name: str, version: object) -> list[dict[str, Any]]:
    from lib.judge.summary import judge_configs as configs

    return configs(engine_for(url), name)


@st.cache_data(ttl=STORE_TTL_S, show_spinner="Summarising judgements…", max_entries=16)
def _judge_summary(url: str, name: str, config_hash: str | None, version: object) -> dict[str, Any] | None:
    from lib.judge.summary import judge_block

    return judge_block(engine_for(url), name, ALPHA, config_hash=config_hash)


@st.cache_data(ttl=STORE_TTL_S, show_spinner=False, max_entries=8)
def _judge_frame(url: str, name: str, config_id: int, version: object) -> pd.DataFrame:
    from lib.judge.summary import judgements_frame

    return judgements_frame(engine_for(url), name, config_id)


judge_configs = _versioned(_judge_configs)
judge_summary = _versioned(_judge_summary)  # (url, name, config hash)
judge_frame = _versioned(_judge_frame)  # (url, name, config id)


def after_judge() -> None:
    """A judge run stored judgements: drop the judge reads."""
    judge_configs.clear()
    judge_summary.clear()
    judge_frame.clear()


# ---- after release (Canary and Monitor pages) ----------------------------------------------------
@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def monitor_points(url: str) -> list[dict[str, Any]]:
    from lib.release.monitor import list_points

    return list_points(engine_for(url))


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def canary_history(url: str, policy: str | None) -> list[dict[str, Any]]:
    from lib.release.canary import check_history

    return check_history(engine_for(url), policy)


def after_release_write() -> None:
    """A canary check or a monitor baseline mark was recorded: drop those reads."""
    monitor_points.clear()
    canary_history.clear()


# ---- canary policies and monitor bands (Canary and Monitor pages) --------------------------------
@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def canary_policies(url: str) -> list[str]:
    """Policies with a [canary] section: parsing every policy is too slow to redo on each render."""
    from lib.governance.policy import policy_names
    from lib.release.canary import declared_triggers

    engine = engine_for(url)
    return [name for name in policy_names(engine) if declared_triggers(engine, name)["canary"]]


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def canary_declared(url: str, policy: str) -> dict[str, Any]:
    from lib.release.canary import declared_triggers

    return declared_triggers(engine_for(url), policy)


def after_policy_write() -> None:
    """A policy version was locked: the canary policy lists are stale."""
    canary_policies.clear()
    canary_declared.clear()


@st.cache_data(ttl=READ_TTL_S, show_spinner=False)
def monitor_bands(url: str, model: str, dataset: str, config_hash: str) -> dict[str, Any]:
    from lib.release.monitor import current_bands

    return current_bands(engine_for(url), model, dataset, config_hash)


def after_monitor_mark() -> None:
    """A point became its series' baseline: points, statuses and bands are stale."""
    after_release_write()
    monitor_bands.clear()


# ---- markdown in other contexts, and table selections (appended) ---------------------------------
def code(text: object) -> str:
    """Untrusted text as an inline code span: verbatim, so URLs and identifiers show as typed. Escapes
    mean nothing inside a code span (md() there leaks its backslashes), so fence with more backticks
    than any run inside and pad with a space when the text starts or ends with a backtick."""
    value = " ".join(str(text).split("\n"))  # a span is one line
    runs = [len(r) for r in "".join(ch if ch == "`" else " " for ch in value).split()]
    longest = max(runs, default=0)
    fence = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") or not value.strip() else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def md_text(text: object) -> str:
    """md() for free text that may hold a URL (errors, notes): GFM turns `http://…` into a link from the
    raw text, so md()'s backslashes would show inside the link and break its address. Escaping the `:`
    too leaves no raw `http://`: the URL renders as typed (the browser still links it, intact)."""
    return md(text).replace(":", "\\:")


def md_lines(text: object) -> str:
    """Untrusted multi-line text (comments, rationales) for st.markdown: escaped like md_text(), each line
    break kept as a hard break, leading indentation dropped (it would start a code block, where escapes
    leak) and `=` escaped too (a line of them under text would make a heading)."""
    lines = [md_text(line.strip()).replace("=", "\\=") for line in str(text).splitlines()]
    return "  \n".join(lines)


def selected_row(event: Any, n_rows: int) -> int | None:
    """The row a single-row table selection points at, or None when none is selected or the index is
    stale: the browser keeps a table's selection when its rows change (a narrower filter, another list)."""
    rows = list(event.selection.rows) if event else []
    return rows[0] if rows and 0 <= rows[0] < n_rows else None


def clear_selection_if_moved(table_key: str, view: object, keep: bool = False) -> None:
    """Forget a table's row selection when what it shows changed (another page, filter or list): a row
    number ticked on one view means nothing on the next. `keep`: the page has just set the selection for
    this view itself (a deep link). Call before the table is created."""
    marker = f"{table_key}__view"
    if st.session_state.get(marker) != view:
        if marker in st.session_state and not keep:
            st.session_state[table_key] = {"selection": {"rows": [], "columns": [], "cells": []}}
        st.session_state[marker] = view


# ---- the model catalogue (lib.catalog; appended) --------------------------------------------------
@st.cache_data(ttl=READ_TTL_S, show_spinner="Reading deprecation dates…")
def deprecations(url: str) -> list[dict[str, Any]]:
    """The deprecation radar over every model in use (the override file first)."""
    from lib.catalog.radar import deprecations as radar

    return [d.to_dict() for d in radar(engine_for(url))]


@st.cache_data(ttl=STORE_TTL_S, show_spinner="Pricing both sides…", max_entries=8)
def _cost_projection(url: str, name: str, version: object, overrides: object) -> dict[str, Any] | None:
    from lib.catalog.cost import cost_projection as project

    return project(engine_for(url), name)


def cost_projection(url: str, name: str) -> dict[str, Any] | None:
    """The comparison's cost per 1,000 requests, both sides, with the delta's CI (lib.catalog.cost): a
    bootstrap, recomputed only when the store or the price override file changes."""
    from lib.catalog.overrides import overrides_path

    path = overrides_path()
    return _cost_projection(url, name, version=store_version(url), overrides=(path, path and _file_version(path)))


# ---- the answer first: verdict and decision status (Overview and Decision pages, appended) -----------
# Keyed on the store's version: all of it is a function of the store alone (at 10k pairs the verdict takes
# ~0.5 s and verifying a decision, which recomputes its evidence from every output, several seconds), so
# it is computed once per store change, not again every 30 s on whichever page a reader opens.
@st.cache_data(ttl=STORE_TTL_S, show_spinner="Computing the verdict…", max_entries=16)
def _verdict(url: str, name: str, policy: str, policy_version: int | None, version: object) -> dict[str, Any]:
    from lib.governance.gate import compute_verdict

    result, _report = compute_verdict(engine_for(url), name, policy, policy_version)
    return result.to_dict()


@st.cache_data(ttl=STORE_TTL_S, show_spinner=False, max_entries=16)
def _policy_in_force(url: str, name: str, version: object) -> tuple[str, int | None] | None:
    from lib.review.headline import policy_in_force as _in_force

    return _in_force(engine_for(url), name)


@st.cache_data(ttl=STORE_TTL_S, show_spinner="Checking the signature and the evidence…", max_entries=64)
def _decision_problems(url: str, decision_id: int, version: object) -> list[str]:
    from lib.review.headline import decision_problems as _problems

    return _problems(engine_for(url), decision_id)


@st.cache_data(ttl=STORE_TTL_S, show_spinner=False, max_entries=16)
def _decision_status(url: str, name: str, version: object) -> dict[str, Any] | None:
    from lib.review.headline import decision_status as _status

    return _status(engine_for(url), name, lambda decision_id: decision_problems(url, decision_id))


verdict = _versioned(_verdict)  # (url, name, policy, policy version or None: the latest)
policy_in_force = _versioned(_policy_in_force)
decision_problems = _versioned(_decision_problems)  # (url, decision id): empty when intact
decision_status = _versioned(_decision_status)


def after_governance_write() -> None:
    """A policy, owner, key or decision was written: the verdict and decision reads are stale (the store's
    version says so too; clearing frees the memory now)."""
    for read in (verdict, policy_in_force, decision_problems, decision_status):
        read.clear()


def broken_decision_banner(name: str) -> None:
    """A red banner when the comparison's latest decision fails verification (Overview and Decision)."""
    status = decision_status(database_url(), name)
    if status and not status["intact"]:
        problems = "; ".join(md_text(p) for p in status["problems"])
        st.error(f"**Decision #{status['id']} fails verification: do not rely on it.** {problems}",
                 icon=":material/gpp_bad:")


def go_button(page: str, label: str, key: str, icon: str | None = None, where: Any = None,
              comparison: str | None = None) -> None:
    """A button that opens another page: the next step of an empty state. (st.page_link needs the router's
    page list, which a page rendered on its own, as in AppTest, does not have.) With `comparison`, that page
    opens on it."""
    if (where or st).button(label, key=key, icon=icon):
        if comparison is not None:
            set_active(comparison)
        st.switch_page(page)


def keep_outcome(key: str, comparison: str, messages: list[tuple[str, str]]) -> None:
    """Store what a run or load did (st.<kind>, text pairs), for `show_outcome` after the rerun that makes
    `comparison` the active one."""
    set_active(comparison)
    st.session_state[key] = (comparison, messages)
    st.rerun()  # the sidebar shows the new comparison as the active one


def show_outcome(key: str, button_key: str) -> None:
    """The last run's or load's outcome and a button to its Overview. Kept until the next one replaces it:
    a button must be drawn again in the rerun its click starts, or the click is lost."""
    comparison, messages = st.session_state.get(key, (None, []))
    for kind, text in messages:
        getattr(st, kind)(text)
    if comparison is not None:
        go_button("pages/overview.py", "Open its Overview", button_key, ":material/insights:", comparison=comparison)


# ---- production logs (lib.release.timeline; appended) ----------------------------------------------------
@st.cache_data(ttl=STORE_TTL_S, show_spinner="Computing the timeline…", max_entries=8)
def _timeline(url: str, name: str, model: str | None, window: str, version: object) -> dict[str, Any]:
    from lib.release.timeline import timeline as compute  # ruptures, the checks: only on this page

    return compute(engine_for(url), name, model, window)


# A log's timeline is recomputed only when the store changes (seconds at a million rows), not on every rerun.
timeline = _versioned(_timeline)
