"""Instruction-following constraints: format rules a reply must meet, checked without a judge.

A case of the `instructions` family lists them in `metadata.constraints`, e.g.
`[{"type": "max_words", "value": 50}, {"type": "json", "required_keys": ["city"]}]`; the reply passes
when it meets every one. Types (`value` is required unless marked optional):

| type | value | passes when |
|---|---|---|
| `max_words` / `min_words` | int | whitespace-separated words <= / >= value (as `length_words_mean` counts) |
| `max_chars` | int | characters <= value |
| `json` | — (`required_keys`: optional list) | the whole reply parses as JSON (no fences, no prose); keys: held |
| `language` | ISO 639-1 code | py3langid's top language for the reply is that code |
| `contains` / `excludes` | text | the phrase is / is not in the reply (case-insensitive unless `case_sensitive`) |
| `starts_with` / `ends_with` | text | the stripped reply starts / ends with it (case as `contains`) |
| `no_bullets` | — | no line starts with a bullet (`-`, `*`, `+`, `•`) or a list number (`1.` / `1)`) |
| `lowercase` / `uppercase` | — | no upper-case / no lower-case letter |
| `regex` | pattern | `re.search` finds it (add `(?i)` etc. inline) |

`required_phrase` is accepted as another name for `contains`.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from lib.data.fields import InvalidField
from lib.review.checks.patterns import compile_user_pattern, pattern_problem

_BULLET = re.compile(r"(?m)^\s*(?:[-*+•]|\d+[.)])\s+")
ALIASES = {"required_phrase": "contains"}
INT_TYPES = ("max_words", "min_words", "max_chars")
TEXT_TYPES = ("contains", "excludes", "starts_with", "ends_with")
FLAG_TYPES = ("no_bullets", "lowercase", "uppercase")
CONSTRAINT_TYPES = INT_TYPES + TEXT_TYPES + FLAG_TYPES + ("json", "language", "regex")


@dataclass(frozen=True)
class Constraint:
    """One parsed rule; `check(text)` decides it."""

    type: str
    value: Any = None
    required_keys: tuple[str, ...] = ()
    case_sensitive: bool = False

    def check(self, text: str) -> bool:
        return _CHECKS[self.type](self, text)

    def describe(self) -> str:
        if self.type == "json":
            return "json" + (f" with keys {', '.join(self.required_keys)}" if self.required_keys else "")
        return self.type if self.value is None else f"{self.type} {self.value!r}"


def _fold(c: Constraint, text: str) -> str:
    return text if c.case_sensitive else text.casefold()


def _phrase(c: Constraint) -> str:
    return c.value if c.case_sensitive else c.value.casefold()


def _json_ok(c: Constraint, text: str) -> bool:
    try:
        value = json.loads(text.strip())
    except ValueError:
        return False
    if not c.required_keys:
        return True
    return isinstance(value, dict) and all(k in value for k in c.required_keys)


_CHECKS: dict[str, Callable[[Constraint, str], bool]] = {
    "max_words": lambda c, t: len(t.split()) <= c.value,
    "min_words": lambda c, t: len(t.split()) >= c.value,
    "max_chars": lambda c, t: len(t) <= c.value,
    "json": _json_ok,
    "language": lambda c, t: detect_language(t) == c.value,
    "contains": lambda c, t: _phrase(c) in _fold(c, t),
    "excludes": lambda c, t: _phrase(c) not in _fold(c, t),
    "starts_with": lambda c, t: _fold(c, t.strip()).startswith(_phrase(c)),
    "ends_with": lambda c, t: _fold(c, t.strip()).endswith(_phrase(c)),
    "no_bullets": lambda c, t: _BULLET.search(t) is None,
    "lowercase": lambda c, t: not any(ch.isupper() for ch in t),
    "uppercase": lambda c, t: not any(ch.islower() for ch in t),
    "regex": lambda c, t: compile_user_pattern(c.value, what="regex rule").search(t) is not None,
}


# ---------------------------------------------------------------- language

@cache
def _identifier() -> Any:
    """py3langid's model (shipped in its wheel, BSD-3; ~0.5 s to load): loaded on first use only."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)  # our own instance: the module global stays untouched


def detect_language(text: str) -> str:
    """ISO 639-1 code of the most likely language (py3langid over all its languages)."""
    return str(_identifier().classify(text)[0])


def known_languages() -> frozenset[str]:
    return frozenset(_identifier().labels)


# ---------------------------------------------------------------- parsing

def parse_constraints(raw: Any, name: str = "metadata.constraints") -> tuple[Constraint, ...]:
    """Validate a constraint list; raises InvalidField naming the exact item and key."""
    if not isinstance(raw, list) or not raw:
        raise InvalidField(name, "must be a non-empty list of {\"type\": ..., \"value\": ...} objects")
    return tuple(_parse_one(item, f"{name}[{i}]") for i, item in enumerate(raw))


def _parse_one(item: Any, name: str) -> Constraint:
    if not isinstance(item, dict):
        raise InvalidField(name, "must be an object with a 'type'")
    kind = ALIASES.get(item.get("type"), item.get("type"))
    if kind not in CONSTRAINT_TYPES:
        raise InvalidField(f"{name}.type", f"is {item.get('type')!r}; use one of: {', '.join(CONSTRAINT_TYPES)}")
    value, case_sensitive = item.get("value"), item.get("case_sensitive", False)
    if not isinstance(case_sensitive, bool):
        raise InvalidField(f"{name}.case_sensitive", "must be true or false")
    if kind == "json":
        return Constraint(kind, required_keys=_keys(item.get("required_keys", []), f"{name}.required_keys"))
    if kind in FLAG_TYPES:
        return Constraint(kind)
    return Constraint(kind, _value(kind, value, f"{name}.value"), case_sensitive=case_sensitive)


def _keys(raw: Any, name: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(k, str) and k for k in raw):
        raise InvalidField(name, "must be a list of key names")
    return tuple(raw)


def _value(kind: str, value: Any, name: str) -> Any:
    if kind in INT_TYPES:
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if kind == "max_chars" else 1):
            raise InvalidField(name, f"must be a positive whole number for '{kind}', got {value!r}")
        return value
    if not isinstance(value, str) or not value.strip():
        raise InvalidField(name, f"must be a non-empty string for '{kind}'")
    if kind == "language" and value not in known_languages():
        raise InvalidField(name, f"'{value}' is not an ISO 639-1 code the language check knows "
                                 f"(e.g. en, fr, de, es, it, pt, nl, ja, zh)")
    if kind == "regex":
        problem = pattern_problem(value)
        if problem is not None:
            raise InvalidField(name, f"is not a valid regular expression: {problem}")
    return value


def failed_constraints(text: str, constraints: tuple[Constraint, ...]) -> list[str]:
    """Descriptions of the constraints a reply breaks (empty: it follows them all)."""
    return [c.describe() for c in constraints if not c.check(text)]
