"""The JSON a judge must reply with: schemas, lenient extraction, validation.

Extraction accepts the object alone, inside a ```json fence, or surrounded by prose (the first '{'
to the last '}'); the object must then satisfy the schema exactly. A reply that fails gets a
correction turn (see calls.py); one that still fails is stored as unparseable with its raw text.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

PREFERENCES = ("A", "B", "tie")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    value: dict[str, Any] | None
    error: str | None  # why the reply is not a valid judgement

    @property
    def ok(self) -> bool:
        return self.value is not None


def pointwise_schema(dimensions: list[str]) -> dict[str, Any]:
    score = {"type": "integer", "minimum": 1, "maximum": 5}
    return {"type": "object", "required": ["scores"],
            "properties": {"scores": {"type": "object", "required": dimensions,
                                      "properties": {d: score for d in dimensions}},
                           "rationale": {"type": "string"}}}


PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["preference"],
    "properties": {"preference": {"enum": list(PREFERENCES)}, "rationale": {"type": "string"}},
}


def score_keys(dimensions: list[str]) -> str:
    """The scores object as the prompt shows it: {"accuracy": <1-5>, ...}."""
    return "{" + ", ".join(f'"{d}": <1-5>' for d in dimensions) + "}"


def extract_json(text: str | None) -> Any:
    """The JSON object in a reply (raises ValueError when there is none)."""
    text = (text or "").strip()
    candidates = [text, *(m.strip() for m in _FENCE.findall(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise ValueError("the reply holds no JSON object")


def _normalise_preference(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("preference"), str):
        pref = value["preference"].strip().strip(".").strip()
        value = {**value, "preference": {"a": "A", "b": "B", "tie": "tie"}.get(pref.lower(), pref)}
    return value


def parse_reply(text: str | None, schema: dict[str, Any]) -> Parsed:
    """Validate a reply against a judgement schema."""
    try:
        value = extract_json(text)
    except ValueError as exc:
        return Parsed(None, str(exc))
    value = _normalise_preference(value)
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(top level)"
        return Parsed(None, f"{where}: {errors[0].message}"[:500])
    return Parsed(value, None)
