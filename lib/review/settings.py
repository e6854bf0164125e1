"""Reviewer settings of a comparison: the match rule, extra refusal patterns, a schema for cases without
one, the input token limit. Stored with the comparison; validated where they are made."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session

from lib.data.tables import load_json
from lib.errors import ReviewInputError
from lib.review.checks.patterns import compile_user_pattern
from lib.review.checks.refusal import RefusalDetector
from lib.review.checks.schemas import reference_problem
from lib.review.comparisons import get_comparison
from lib.store.audit import record_event
from lib.store.columns import from_json, to_json
from lib.store.engine import session_scope
from lib.store.entities import MATCH_RULES


class ReviewSettingsError(ReviewInputError):
    """Invalid reviewer settings (match rule, pattern, refusal pattern)."""


@dataclass(frozen=True)
class ReviewSettings:
    """How a comparison is checked: stored per comparison, extendable from the CLI."""

    match: str | None = None  # one rule for every case (recorded data often has none)
    pattern: str | None = None
    refusal_patterns: tuple[str, ...] = field(default_factory=tuple)
    # A JSON Schema (canonical JSON text) for every case without one: traffic logs carry no schema, yet
    # "the JSON our parser expects" is exactly what an upgrade breaks.
    schema: str | None = None
    input_token_limit: int | None = None  # the system's hard-coded prompt budget, in tokens

    def __post_init__(self) -> None:
        if self.match is not None and self.match not in MATCH_RULES:
            raise ReviewSettingsError(f"unknown match rule '{self.match}' (use one of: {', '.join(MATCH_RULES)})")
        if self.match == "regex" and not self.pattern:
            raise ReviewSettingsError("match rule 'regex' needs a pattern (--pattern)")
        if self.input_token_limit is not None and (isinstance(self.input_token_limit, bool)
                                                   or not isinstance(self.input_token_limit, int)
                                                   or self.input_token_limit < 1):
            raise ReviewSettingsError("the input token limit must be a whole number >= 1, "
                                      f"got {self.input_token_limit!r}")
        if self.schema is not None:
            object.__setattr__(self, "schema", canonical_schema(self.schema, "the review schema"))
        if self.pattern is not None:
            compile_user_pattern(self.pattern, what="match pattern")
        RefusalDetector(self.refusal_patterns)  # compiles every extra pattern: bad ones fail here, before any write

    def merged(self, other: ReviewSettings) -> ReviewSettings:
        """`other` (e.g. CLI flags) on top of these (stored) settings; refusal patterns add up."""
        return ReviewSettings(match=other.match or self.match,
                              pattern=other.pattern if other.match else self.pattern,
                              refusal_patterns=tuple(dict.fromkeys(self.refusal_patterns + other.refusal_patterns)),
                              schema=other.schema or self.schema,
                              input_token_limit=other.input_token_limit or self.input_token_limit)

    def as_dict(self) -> dict:
        data = {"match": self.match, "pattern": self.pattern, "refusal_patterns": list(self.refusal_patterns)}
        # Only when set: the key (and so the stored results) of settings without them stays as it was.
        if self.schema is not None:
            data["schema"] = json.loads(self.schema)
        if self.input_token_limit is not None:
            data["input_token_limit"] = self.input_token_limit
        return data


def canonical_schema(schema: str | dict, source: str) -> str:
    """A JSON Schema as canonical JSON text; ReviewSettingsError naming `source` when it is not one."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        value = load_json(schema) if isinstance(schema, str) else schema
    except json.JSONDecodeError as exc:
        raise ReviewSettingsError(f"{source}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise ReviewSettingsError(f"{source}: a JSON Schema is a JSON object")
    try:
        validator_for(value).check_schema(value)
    except SchemaError as exc:
        raise ReviewSettingsError(f"{source}: not a valid JSON Schema: {exc.message}") from None
    problem = reference_problem(value)
    if problem is not None:
        raise ReviewSettingsError(f"{source}: {problem}")
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def read_schema_file(path: Path) -> str:
    """The JSON Schema in `path` (canonical text); errors name the file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewSettingsError(f"{path}: cannot read the schema file ({exc})") from None
    return canonical_schema(raw, str(path))


def _settings_from_json(raw: str | None) -> ReviewSettings:
    return settings_from_dict(from_json(raw) or {})


def settings_from_dict(data: dict) -> ReviewSettings:
    """Settings from their `as_dict` form (stored with a comparison, or in a signed report)."""
    schema = data.get("schema")
    return ReviewSettings(match=data.get("match"), pattern=data.get("pattern"),
                          refusal_patterns=tuple(data.get("refusal_patterns", ())),
                          schema=json.dumps(schema) if schema is not None else None,
                          input_token_limit=data.get("input_token_limit"))


def stored_settings(engine: Engine, name: str) -> ReviewSettings:
    with Session(engine) as session:
        return _settings_from_json(get_comparison(session, name).settings_json)


def save_settings(engine: Engine, comparison: str, settings: ReviewSettings, actor: str | None = None) -> None:
    """Store the reviewer's settings with the comparison (validated when they were made), audited: report,
    pages and gate all read these."""
    with session_scope(engine) as session:
        comp = get_comparison(session, comparison)
        previous = _settings_from_json(comp.settings_json).as_dict()
        comp.settings_json = to_json(settings.as_dict())
        session.add(comp)
        record_event(session, "settings_changed", {"comparison": comp.name, "settings": settings.as_dict(),
                                                   "previous": previous}, actor=actor)


def describe(settings: ReviewSettings) -> str:
    """One line: the match rule (and pattern), extra refusal patterns, schema and token limit."""
    rule = settings.match or "per case (default: normalized)"
    parts = [f"match {rule}" + (f" pattern {settings.pattern!r}" if settings.pattern else "")]
    if settings.refusal_patterns:
        parts.append("refusal patterns " + ", ".join(repr(p) for p in settings.refusal_patterns))
    if settings.schema:
        parts.append("a review schema")
    if settings.input_token_limit:
        parts.append(f"input token limit {settings.input_token_limit}")
    return "; ".join(parts)


def differs_from_stored(stored: ReviewSettings, used: ReviewSettings) -> bool:
    """True when the figures of `used` are not the ones the gate computes (it uses `stored`)."""
    return used.as_dict() != stored.as_dict()


