"""Router and shared frame: navigation and the sidebar's active comparison. Nothing else.

Icons are emoji: a `:material/...:` page icon makes the browser fetch it from a font host (a request off
the machine, failing offline).
"""
from __future__ import annotations

import streamlit as st

from lib.errors import StoreURLError
from pages import _shared

st.set_page_config(page_title="Upgrade Review", page_icon="⚖️", layout="wide")

PAGES = {
    "Review": [
        st.Page("pages/overview.py", title="Overview", icon="📊", default=True),
        st.Page("pages/diffs.py", title="Diffs", icon="🔀"),
        st.Page("pages/distributions.py", title="Distributions", icon="📶"),
        st.Page("pages/drift.py", title="Drift", icon="📈"),
        st.Page("pages/safety.py", title="Safety", icon="🛡️"),
        st.Page("pages/judge.py", title="Judge", icon="🧪"),
        st.Page("pages/comparisons.py", title="Comparisons", icon="🗂️"),
    ],
    "Decide": [
        st.Page("pages/policy.py", title="Policy", icon="📜"),
        st.Page("pages/decision.py", title="Decision", icon="✍️"),
    ],
    "After release": [
        st.Page("pages/canary.py", title="Canary", icon="🐤"),
        st.Page("pages/monitor.py", title="Monitor", icon="🩺"),
        st.Page("pages/timeline.py", title="Timeline", icon="📈"),
    ],
    "Get data in": [
        st.Page("pages/datasets.py", title="Datasets", icon="🗃️"),
        st.Page("pages/run.py", title="Run", icon="▶️"),
        st.Page("pages/load.py", title="Load", icon="📤"),
    ],
}


def sidebar() -> None:
    _shared.apply_pending_active()
    names = _shared.comparison_names()
    with st.sidebar:
        if not names:
            st.caption("No comparison yet: run one or load a recorded file.")
            return
        st.selectbox("Active comparison", names, key=_shared.ACTIVE_KEY,
                     help="Every review page shows this comparison.")
        info = next(c for c in _shared.comparisons(_shared.database_url())
                    if c["name"] == st.session_state[_shared.ACTIVE_KEY])
        st.caption(f"**{_shared.md(info['baseline'])}** → **{_shared.md(info['candidate'])}**  \n"
                   f"{info['n_cases']} cases · {info['status']} · system {_shared.md(info['system'])}")


def store_or_stop() -> None:
    """A store that cannot be opened (a non-SQLite DATABASE_URL) is said once, here, not by every page."""
    try:
        _shared.engine()
    except StoreURLError as exc:
        st.error(f"The store cannot be opened. {_shared.md(exc)}")
        st.stop()


nav = st.navigation(PAGES, expanded=True)  # every page visible: no "View more" fold
store_or_stop()
sidebar()
nav.run()
