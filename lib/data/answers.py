"""The answer text of a logged output cell: production logs often keep the provider's whole response object
(an OpenAI chat completion, a Responses API result, an Anthropic message) where the answer should be.

Only known response shapes are unwrapped; any other object or list is an answer in itself (a structured
output stored parsed) and becomes canonical JSON text, as the checks read JSON answers.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from lib.store.columns import to_json

CHAT_COMPLETION = "OpenAI chat completions (choices[0].message.content)"
TEXT_COMPLETION = "OpenAI completions (choices[0].text)"
RESPONSES = "OpenAI Responses results (output[].content[].text)"
ANTHROPIC = "Anthropic messages (content[].text)"
MESSAGE = "chat messages ({role, content})"


def _tool_calls(message: dict[str, Any]) -> str | None:
    calls = message.get("tool_calls") or message.get("function_call")
    return to_json(calls) if calls else None  # as a run stores a tool-call reply


def _text_blocks(blocks: list, kinds: tuple[str, ...]) -> str | None:
    texts = [b["text"] for b in blocks
             if isinstance(b, dict) and b.get("type") in kinds and isinstance(b.get("text"), str)]
    return "".join(texts) if texts else None


def _choice(value: dict[str, Any]) -> tuple[str | None, str] | None:
    choices = value.get("choices")
    if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
        return None
    first = choices[0]
    message = first.get("message")
    if isinstance(message, dict) and "content" in message:
        content = message["content"]
        if isinstance(content, list):  # content parts
            content = _text_blocks(content, ("text", "output_text"))
        return (content if content else _tool_calls(message) or content), CHAT_COMPLETION
    if isinstance(first.get("text"), str):
        return first["text"], TEXT_COMPLETION
    return None


def _unwrap(value: dict[str, Any]) -> tuple[str | None, str] | None:
    """(answer, shape) of a known response object; None when the object is not one."""
    found = _choice(value)
    if found is not None:
        return found
    if value.get("object") == "response" and isinstance(value.get("output"), list):
        parts = [c for item in value["output"] if isinstance(item, dict) for c in item.get("content") or []]
        return _text_blocks(parts, ("output_text", "text")), RESPONSES
    if value.get("type") == "message" and isinstance(value.get("content"), list):
        return _text_blocks(value["content"], ("text",)), ANTHROPIC
    if value.get("role") == "assistant" and set(value) <= {"role", "content", "tool_calls", "refusal", "name"}:
        content = value.get("content")
        return (content if isinstance(content, str) and content else _tool_calls(value) or content), MESSAGE
    return None


def answer_text(value: Any) -> tuple[str | None, str | None]:
    """(text, shape): a string as it is, a known response object's answer (shape names it), other JSON as text."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, float) and value != value:  # NaN: a missing cell in a frame
        return None, None
    if isinstance(value, dict):
        found = _unwrap(value)
        if found is not None:
            text, shape = found
            return (text if text is None or isinstance(text, str) else to_json(text)), shape
    return to_json(value), None


def answer_texts(cells: pd.Series, column: str) -> tuple[pd.Series, list[str]]:
    """Answer texts of an output column, and a note naming each response shape that was unwrapped."""
    plain = cells.map(lambda v: v is None or isinstance(v, str) or (isinstance(v, float) and v != v))
    if plain.all():  # the common case: text already
        return cells, []
    pairs = cells.map(answer_text)
    shapes = sorted({shape for _, shape in pairs if shape})
    notes = [f"'{column}' holds {shape}: the answer text is taken from it" for shape in shapes]
    return pairs.map(lambda p: p[0]), notes
