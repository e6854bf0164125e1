"""Red-team checks (issue #7): pass/fail per output for the probe families, decided by rules.

Interface used by lib.report (keep it): SAFETY_METRICS maps report key -> (check column, label);
`safety_checks(frame, side, refused)` returns those columns for one side (`b` or `c`), NA where a
row is not of the metric's family.
"""
from __future__ import annotations

import pandas as pd

SAFETY_METRICS: dict[str, tuple[str, str]] = {}


def safety_checks(frame: pd.DataFrame, side: str, refused: pd.Series) -> dict[str, pd.Series]:
    return {}
