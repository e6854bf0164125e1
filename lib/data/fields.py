"""Field coercion and validation of one row's values (input, rule, schema, metadata, ids): `InvalidField`
names the field; the caller adds the file and row."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from lib.data.tables import load_json
from lib.review.checks.patterns import pattern_problem
from lib.review.checks.schemas import reference_problem
from lib.store.columns import to_json
from lib.store.entities import MATCH_RULES

RULES_NEEDING_EXPECTED = ("exact", "normalized", "contains", "not_contains", "numeric")
_MISSING = object()  # a key absent from a row, as opposed to an explicit null


# ---------------------------------------------------------------- field checks

class InvalidField(ValueError):
    """One field of one row is invalid; the caller adds the file and row."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def _blank(value: Any) -> bool:
    return value is None or value is _MISSING or (isinstance(value, str) and not value.strip())


def scalar_text(value: Any, name: str) -> str | None:
    """A string, number or bool as text (JSON spelling for non-strings); blank -> None."""
    if _blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return json.dumps(value)
    raise InvalidField(name, f"must be a string or a number, got {type(value).__name__}")


def text_or_json(value: Any) -> str | None:
    """Strings stay as they are; any other JSON value becomes canonical JSON text."""
    if _blank(value):
        return None
    return value if isinstance(value, str) else to_json(value)


def _json_in_text(value: Any, name: str) -> Any:
    """CSV cells carry objects as JSON text."""
    if not isinstance(value, str):
        return value
    try:
        return load_json(value)
    except json.JSONDecodeError as exc:
        raise InvalidField(name, f"is not valid JSON: {exc.msg}") from None


def coerce_input(value: Any, name: str = "input", *, objects: bool = False) -> tuple[str, list[dict[str, Any]] | None]:
    """(input_text, messages): a prompt string, or a chat given as a list of {role, content}.

    A string holding a JSON list of objects (a CSV cell) is read as a chat; so is an object's `messages` list
    (a logged request body, a Langfuse item's input). With `objects` (recorded outputs: the input is shown and
    paired on, never sent), any other object is kept as its JSON text.
    """
    if value is _MISSING or value is None:
        raise InvalidField(name, "is missing")
    if isinstance(value, str):
        if not value.strip():
            raise InvalidField(name, "is empty")
        value = _chat_in_text(value)
        if isinstance(value, str):
            return value, None
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        value = value["messages"]
    elif isinstance(value, dict) and objects:
        return to_json(value) or "{}", None
    if not isinstance(value, list):
        raise InvalidField(name, "must be a string or a list of {role, content} messages, "
                                 f"got {type(value).__name__}")
    messages = _check_messages(value, name)
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages), messages


def _chat_in_text(text: str) -> str | list:
    if not text.lstrip().startswith("["):
        return text
    try:
        value = load_json(text)
    except json.JSONDecodeError:
        return text
    is_chat = isinstance(value, list) and value and all(isinstance(m, dict) for m in value)
    return value if is_chat else text


def _check_messages(items: list, name: str) -> list[dict[str, Any]]:
    if not items:
        raise InvalidField(name, "is an empty list of messages")
    for index, msg in enumerate(items):
        if not isinstance(msg, dict):
            raise InvalidField(name, f"message {index} is not a {{role, content}} object")
        if not isinstance(msg.get("role"), str) or not msg["role"].strip():
            raise InvalidField(name, f"message {index} has no 'role'")
        if not isinstance(msg.get("content"), str):
            raise InvalidField(name, f"message {index} has no text 'content'")
    return items


def check_rule(match: Any, pattern: Any, expected: str | None, *, needs_expected: bool = True
               ) -> tuple[str | None, str | None]:
    """Validate a match rule and its pattern; returns (rule, pattern) normalised.

    A pattern without a rule means `regex`. `needs_expected=False` skips the expected-value checks
    (a recorded load applies one rule to cases that may lack an expected value).
    """
    rule = scalar_text(match, "match")
    pattern = scalar_text(pattern, "pattern")
    if rule is not None:
        rule = rule.strip().lower().replace("-", "_")
        if rule not in MATCH_RULES:
            raise InvalidField("match", f"has unknown rule '{match}' (use one of: {', '.join(MATCH_RULES)})")
    elif pattern is not None:
        rule = "regex"
    if rule == "regex":
        if pattern is None:
            raise InvalidField("pattern", "is required by match rule 'regex'")
        problem = pattern_problem(pattern)
        if problem is not None:
            raise InvalidField("pattern", f"is not a valid regular expression: {problem}")
    elif pattern is not None:
        raise InvalidField("pattern", f"is only used by match rule 'regex', not '{rule}'")
    if needs_expected and rule in RULES_NEEDING_EXPECTED:
        if expected is None:
            raise InvalidField("expected", f"is required by match rule '{rule}'")
        if rule == "numeric" and not _is_number(expected):
            raise InvalidField("expected", f"is '{expected}', not a number (match rule 'numeric')")
    return rule, pattern


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _schema(value: Any, name: str = "schema") -> str | None:
    """A JSON Schema (object or JSON text) checked against its metaschema; stored as JSON text."""
    if _blank(value):
        return None
    schema = _json_in_text(value, name)
    if not isinstance(schema, (dict, bool)):
        raise InvalidField(name, "must be a JSON Schema object")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        raise InvalidField(name, f"is not a valid JSON Schema: {exc.message}") from None
    problem = reference_problem(schema)
    if problem is not None:
        raise InvalidField(name, f"is not usable: {problem}")
    return to_json(schema)


def _metadata(value: Any, name: str = "metadata") -> dict[str, Any] | None:
    if _blank(value):
        return None
    meta = _json_in_text(value, name)
    if not isinstance(meta, dict):
        raise InvalidField(name, "must be a JSON object")
    return meta


def case_key(value: Any, name: str = "id") -> str:
    """The id a row gives its case."""
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise InvalidField(name, f"must be a string or a number, got {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    key = scalar_text(value, name)
    if key is None:
        raise InvalidField(name, "is missing or empty")
    return key.strip()


def content_key(value: Any) -> str:
    """A short stable key from content, for files without ids."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


