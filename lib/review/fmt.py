"""How numbers read, everywhere a person sees them (pages, CLI tables, exports): one definition each.

Rates are fractions shown as percentages; their deltas are percentage points. Anything absent reads as
`DASH`, never `None` or `nan`.
"""
from __future__ import annotations

import math
from typing import Any

DASH = "—"


def missing(value: Any) -> bool:
    """None, NaN and pandas' NA: nothing to show."""
    if value is None:
        return True
    try:
        return bool(value != value) or (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):  # pd.NA refuses bool()
        return True


def num(value: float | None, sign: str = "") -> str:
    """Three significant digits, without exponents for thousands (1,234 not 1.23e+03)."""
    if missing(value):
        return DASH
    assert value is not None
    return f"{value:{sign},.0f}" if 1000 <= abs(value) < 1e15 else f"{value:{sign},.3g}"


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction as a percentage: 0.123 -> '12.3%'."""
    return DASH if missing(value) else f"{value:.{digits}%}"


def pp(value: float | None, digits: int = 1) -> str:
    """A difference of fractions in signed percentage points: -0.143 -> '-14.3 pp'."""
    return DASH if missing(value) else f"{value * 100:+.{digits}f} pp"


def p_value(value: float | None) -> str:
    return DASH if missing(value) else f"{value:.3g}"


def fixed(value: float | None, spec: str = ".2f") -> str:
    return DASH if missing(value) else format(value, spec)


def rate_ci(rate: float | None, low: float, high: float, n: int, digits: int = 0) -> str:
    """'42% [30%, 55%] (n=60)': a rate with its interval and its number of cases."""
    if missing(rate):
        return f"{DASH} (n={n})"
    return f"{pct(rate, digits)} [{pct(low, digits)}, {pct(high, digits)}] (n={n})"


def metric_value(value: float | None, rate: bool) -> str:
    """A metric's level: a percentage for rates, three significant digits otherwise."""
    return pct(value) if rate else num(value)


def metric_delta(delta: float, low: float, high: float, rate: bool) -> str:
    """A paired delta with its CI: '-14.3 pp [-24.6, -3.4]' for rates, '+12.5 [+3.1, +21.9]' otherwise."""
    if rate:
        return f"{delta * 100:+.1f} pp [{low * 100:+.1f}, {high * 100:+.1f}]"
    return f"{num(delta, '+')} [{num(low, '+')}, {num(high, '+')}]"


def usd(value: float | None, sign: str = "") -> str:
    """Dollars: '$1,234' from a thousand up, else three significant digits ('$0.0421'); unknown is DASH."""
    if missing(value):
        return DASH
    assert value is not None
    text = num(abs(value))
    prefix = ("-" if value < 0 else "+" if sign == "+" else "")
    return f"{prefix}${text}"


def usd_per_million(per_token: float | None) -> str:
    """A per-token price as dollars per million tokens: 2.5e-06 -> '$2.50/1M'; unknown is DASH."""
    return DASH if missing(per_token) else f"${per_token * 1e6:,.2f}/1M"  # type: ignore[operator]
