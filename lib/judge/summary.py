"""The report's `judge` block for one comparison (interface used by lib.report.build_report)."""
from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine


def judge_block(engine: Engine, comparison: str, alpha: float) -> dict[str, Any] | None:
    """None when the comparison has no judgements."""
    return None
