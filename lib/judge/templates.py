"""Versioned judge prompt templates: files `templates/<kind>_v<N>.txt` with a [system] and a [user] part.

A template's version id ("pointwise-v1") and the sha256 of its content are part of the pinned judge
configuration: editing a template's text without a new version changes the hash, so judgements made
with the old text are never mixed with new ones. Placeholders `{{name}}` are filled in one pass, so a
placeholder inside a model's output is left as text.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
CURRENT = {"pointwise": "pointwise-v1", "pairwise": "pairwise-v1"}
MAX_TEXT_CHARS = 20_000  # per input/output in a prompt: longer text is cut with a visible marker
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_SECTION = re.compile(r"^\[(system|user)\]\n", re.MULTILINE)


@dataclass(frozen=True)
class Template:
    version: str  # e.g. "pointwise-v1"
    content_hash: str  # sha256 of the file's text
    system: str
    user: str

    def messages(self, values: dict[str, str]) -> list[dict[str, Any]]:
        return [{"role": "system", "content": fill(self.system, values)},
                {"role": "user", "content": fill(self.user, values)}]


def fill(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return _PLACEHOLDER.sub(value, text)


def clip(text: str | None) -> str:
    """Text for a prompt: '(none)' when empty, cut at MAX_TEXT_CHARS with a marker."""
    if text is None or not text.strip():
        return "(none)"
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return text[:MAX_TEXT_CHARS] + f"\n[... cut: {len(text) - MAX_TEXT_CHARS} more characters]"


@lru_cache(maxsize=16)
def load_template(version: str) -> Template:
    """The template with this version id (raises FileNotFoundError for an unknown one)."""
    kind, _, number = version.partition("-")
    raw = (TEMPLATE_DIR / f"{kind}_{number}.txt").read_text(encoding="utf-8")
    parts = _SECTION.split(raw)  # ["", "system", text, "user", text]
    sections = dict(zip(parts[1::2], parts[2::2]))
    if set(sections) != {"system", "user"}:
        raise ValueError(f"template {version} needs a [system] and a [user] section")
    return Template(version, hashlib.sha256(raw.encode()).hexdigest(),
                    sections["system"].strip(), sections["user"].strip())
