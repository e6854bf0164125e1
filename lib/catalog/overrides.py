"""The user's override file: model -> deprecation date and prices, for providers' notices and negotiated prices.

TOML, one table per model (the litellm model string, quoted when it has dots or slashes):

    ["gpt-4o-2024-08-06"]
    deprecation_date = 2026-12-31        # a TOML date or "YYYY-MM-DD"
    input_cost_per_token = 2.0e-6        # USD
    output_cost_per_token = 8.0e-6

The path comes from REVIEW_MODEL_OVERRIDES (or a flag). Unknown keys and bad values are errors naming
the file, the model and the key: a typo must not silently leave the bundled value in place.
"""
from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from lib.errors import FileInputError

OVERRIDES_ENV = "REVIEW_MODEL_OVERRIDES"
PRICE_KEYS = ("input_cost_per_token", "output_cost_per_token")
OVERRIDE_KEYS = ("deprecation_date",) + PRICE_KEYS + ("max_input_tokens",)


class OverrideFileError(FileInputError):
    """The model override file cannot be read or has an invalid entry."""


@dataclass(frozen=True)
class Overrides:
    path: str | None  # None: no file in use
    models: dict[str, dict[str, Any]]  # model -> validated values (date, float, int)

    @property
    def label(self) -> str:
        return f"override file {self.path}"


NO_OVERRIDES = Overrides(None, {})


def overrides_path(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get(OVERRIDES_ENV) or None


def load_overrides(path: str | None = None) -> Overrides:
    """The override file at `path` (else $REVIEW_MODEL_OVERRIDES); no file named: no overrides."""
    path = overrides_path(path)
    if not path:
        return NO_OVERRIDES
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise OverrideFileError(path, f"no such file (set by {OVERRIDES_ENV} or --overrides)") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise OverrideFileError(path, f"not a readable TOML file: {exc}") from exc
    return Overrides(path, {model: _entry(path, model, body) for model, body in raw.items()})


def _entry(path: str, model: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise OverrideFileError(path, f"model '{model}' must be a table ([\"{model}\"])")
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key not in OVERRIDE_KEYS:
            raise OverrideFileError(path, f"model '{model}': unknown key (allowed: {', '.join(OVERRIDE_KEYS)})",
                                    field=key)
        out[key] = _value(path, model, key, value)
    return out


def _value(path: str, model: str, key: str, value: Any) -> Any:
    if key == "deprecation_date":
        parsed = parse_date(value)
        if parsed is None:
            raise OverrideFileError(path, f"model '{model}': expected a date (YYYY-MM-DD), got {value!r}", field=key)
        return parsed
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise OverrideFileError(path, f"model '{model}': expected a number >= 0, got {value!r}", field=key)
    return int(value) if key == "max_input_tokens" else float(value)


def parse_date(value: Any) -> date | None:
    """A date from a TOML date or a YYYY-MM-DD string; None when it is neither."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None
