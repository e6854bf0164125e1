"""Model-catalogue sections other pages call with one line: the deprecation radar (Comparisons), the
deprecation banner and the cost card (Overview). Reads come from pages/_shared (cached)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from lib.errors import ReviewInputError
from lib.review import fmt
from lib.review.fmt import DASH
from pages import _shared

BANNER_WITHIN_DAYS = 90
DEFAULT_REQUESTS_PER_DAY = 10_000


def _radar_rows() -> list[dict] | None:
    try:
        return _shared.deprecations(_shared.database_url())
    except ReviewInputError as exc:  # a bad override file: say so, keep the page
        st.error(f"Deprecation dates unavailable: {_shared.md(exc)}")
        return None


def deprecation_banner(comparison: str) -> None:
    """A warning on the Overview when a model of this comparison is deprecated within 90 days (or already is);
    models of other comparisons are only counted, pointing to the radar."""
    rows = _radar_rows() or []
    soon = [r for r in rows if r["days_left"] is not None and r["days_left"] <= BANNER_WITHIN_DAYS]
    here = [r for r in soon if comparison in r["used_by"]]
    elsewhere = len(soon) - len(here)
    if here:
        parts = [f"{_shared.md(r['model'])} ({', '.join(r['roles'])}) on {r['deprecation_date']}, "
                 + (f"{r['days_left']} days left" if r["days_left"] >= 0 else f"{-r['days_left']} days ago")
                 for r in here]
        st.warning(f"Deprecation within {BANNER_WITHIN_DAYS} days, in this comparison: " + "; ".join(parts)
                   + ". See the radar on **Comparisons**.")
    if elsewhere:
        st.caption(f"{elsewhere} other model{'s' if elsewhere > 1 else ''} in use elsewhere (other comparisons, "
                   f"the monitor or a judge) retire{'' if elsewhere > 1 else 's'} within {BANNER_WITHIN_DAYS} days: "
                   "see the deprecation radar on Comparisons.")


def deprecation_radar() -> None:
    """Every model in use with its deprecation date and days left, soonest first."""
    st.subheader("Deprecation radar")
    rows = _radar_rows()
    if rows is None:
        return
    if not rows:
        st.caption("No model in use yet.")
        return
    table = pd.DataFrame([{"model": r["model"], "roles": ", ".join(r["roles"]), "used by": ", ".join(r["used_by"]),
                           "deprecation date": r["deprecation_date"] or "none announced",
                           "days left": DASH if r["days_left"] is None else str(r["days_left"]),
                           "successor": r["successor"] or DASH, "source": r["source"] or DASH} for r in rows])
    st.dataframe(table, hide_index=True, width="stretch", key="catalog_radar")
    st.caption("Dates from litellm's bundled model map; a user override file (REVIEW_MODEL_OVERRIDES) takes "
               "precedence and is named in `source`. For cron and CI: `./review models deprecations --within 60` "
               "exits 1 when one falls within 60 days.")


def _unknown_prices(cost: dict) -> str:
    missing = [f"{side} ({cost['prices'][side]['model']})" for side in ("baseline", "candidate")
               if cost["prices"][side]["input_cost_per_token"] is None]
    return ", ".join(missing)


def cost_card(name: str | None) -> None:
    """Cost per 1,000 requests, baseline → candidate, the delta with its CI, and a monthly projection."""
    if name is None:
        return
    try:
        cost = _shared.cost_projection(_shared.database_url(), name)
    except ReviewInputError as exc:
        st.error(f"Cost unavailable: {_shared.md(exc)}")
        return
    if cost is None:
        return
    if cost["delta_per_1k"] is None:
        unknown = _unknown_prices(cost)
        why = f"no price for {unknown}" if unknown else "no case has token counts on both sides"
        st.info(f"Cost per 1,000 requests: unknown ({_shared.md(why)}). Prices can be added in an override file "
                "(REVIEW_MODEL_OVERRIDES; see docs/models.md).")
        return
    left, right = st.columns([2, 1])
    delta = (f"{fmt.usd(cost['delta_per_1k'], '+')} [{fmt.usd(cost['ci_low'], '+')}, "
             f"{fmt.usd(cost['ci_high'], '+')}]")
    left.metric(f"Cost per 1,000 requests (n={cost['n']})",
                f"{fmt.usd(cost['baseline_per_1k'])} → {fmt.usd(cost['candidate_per_1k'])}", delta,
                delta_color="off", help="From this comparison's own token counts per case and each side's "
                "prices; the delta's 95% CI is a bootstrap over cases. Prices: "
                + cost["prices"]["source"])
    per_day = right.number_input("Requests per day", min_value=0, value=DEFAULT_REQUESTS_PER_DAY, step=1000,
                                 key="catalog_requests_per_day")
    _monthly(cost, float(per_day), right)


def _monthly(cost: dict, per_day: float, where) -> None:  # noqa: ANN001  - a Streamlit container
    from lib.catalog.cost import monthly

    base, cand = monthly(cost["baseline_per_1k"], per_day), monthly(cost["candidate_per_1k"], per_day)
    lo, hi = monthly(cost["ci_low"], per_day), monthly(cost["ci_high"], per_day)
    where.caption(_shared.md(f"Per month (30 days): {fmt.usd(base)} → {fmt.usd(cand)}, "
                             f"{fmt.usd(cand - base, '+')} [{fmt.usd(lo, '+')}, {fmt.usd(hi, '+')}]"))
