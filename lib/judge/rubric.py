"""Rubrics: the dimensions a judge scores 1-5, from a TOML or JSON file the owner writes.

    [[dimensions]]
    name = "accuracy"                     # lowercase letters, digits, underscores
    description = "Is the answer correct and complete for the question?"
    [dimensions.anchors]                  # optional: what a score means
    1 = "Wrong or missing."
    5 = "Fully correct."

JSON: {"dimensions": [{"name": ..., "description": ..., "anchors": {"1": ..., "5": ...}}]}.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.errors import ReviewInputError
from lib.store.columns import to_json

DEFAULT_RUBRIC = Path(__file__).resolve().parent / "data" / "default_rubric.toml"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
SCORES = range(1, 6)
MAX_DIMENSIONS = 12


class RubricError(ReviewInputError):
    """A rubric file is invalid: the message names the file and the dimension or key."""


@dataclass(frozen=True)
class Dimension:
    name: str
    description: str
    anchors: tuple[tuple[int, str], ...] = ()  # (score, meaning), sorted by score

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "anchors": {str(s): text for s, text in self.anchors}}


@dataclass(frozen=True)
class Rubric:
    dimensions: tuple[Dimension, ...]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def canonical_json(self) -> str:
        return to_json({"dimensions": [d.to_dict() for d in self.dimensions]})

    def subset(self, names: list[str]) -> Rubric:
        """Only these dimensions, in the rubric's order (`--dimensions`)."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise RubricError(f"unknown dimension(s) {', '.join(unknown)} (rubric has: {', '.join(self.names)})")
        return Rubric(tuple(d for d in self.dimensions if d.name in names))

    def prompt_text(self) -> str:
        """The dimensions as the prompt lists them."""
        lines = []
        for d in self.dimensions:
            lines.append(f"- {d.name}: {d.description}")
            lines += [f"    {score} = {meaning}" for score, meaning in d.anchors]
        return "\n".join(lines)


def _fail(source: str, message: str, where: str | None = None) -> RubricError:
    return RubricError(f"{source}: {where + ': ' if where else ''}{message}")


def _anchors(raw: Any, source: str, where: str) -> tuple[tuple[int, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _fail(source, "anchors must be a table of score = meaning", where)
    out = []
    for key, text in raw.items():
        if str(key) not in {str(s) for s in SCORES}:
            raise _fail(source, f"anchor score {key!r} is not one of 1-5", where)
        if not isinstance(text, str) or not text.strip():
            raise _fail(source, f"anchor {key} needs a non-empty text", where)
        out.append((int(key), text.strip()))
    return tuple(sorted(out))


def _dimension(raw: Any, index: int, source: str) -> Dimension:
    where = f"dimension {index + 1}"
    if not isinstance(raw, dict):
        raise _fail(source, "must be a table with name and description", where)
    unknown = set(raw) - {"name", "description", "anchors"}
    if unknown:
        raise _fail(source, f"unknown key(s) {', '.join(sorted(unknown))}", where)
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _fail(source, f"name {name!r} must be lowercase letters, digits and underscores", where)
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise _fail(source, "needs a non-empty description", f"dimension '{name}'")
    return Dimension(name, description.strip(), _anchors(raw.get("anchors"), source, f"dimension '{name}'"))


def rubric_from_dict(raw: Any, source: str = "rubric") -> Rubric:
    if not isinstance(raw, dict) or not isinstance(raw.get("dimensions"), list) or not raw["dimensions"]:
        raise _fail(source, "needs a non-empty list of dimensions ([[dimensions]] in TOML)")
    if len(raw["dimensions"]) > MAX_DIMENSIONS:
        raise _fail(source, f"at most {MAX_DIMENSIONS} dimensions")
    dims = tuple(_dimension(d, i, source) for i, d in enumerate(raw["dimensions"]))
    names = [d.name for d in dims]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise _fail(source, f"duplicate dimension name(s) {', '.join(duplicated)}")
    return Rubric(dims)


def parse_rubric(data: str, source: str) -> Rubric:
    """A rubric from TOML or JSON text (JSON when `source` ends in .json or the text starts with '{')."""
    try:
        if source.lower().endswith(".json") or data.lstrip().startswith("{"):
            raw = json.loads(data)
        else:
            raw = tomllib.loads(data)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _fail(source, f"not valid {'JSON' if source.lower().endswith('.json') else 'TOML'}: {exc}") from exc
    return rubric_from_dict(raw, source)


def load_rubric(path: str | Path | None = None) -> Rubric:
    """The rubric in `path`, or the default rubric (accuracy, format adherence, safety)."""
    path = Path(path) if path is not None else DEFAULT_RUBRIC
    try:
        data = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(str(path), f"cannot read: {exc}") from exc
    return parse_rubric(data, str(path))
