"""Structured output: JSON validity against the case schema, and the key contract between sides.

- strict: the output as-is parses as JSON and validates against the case schema.
- lenient: some JSON value in the output validates: the whole output, a fenced ``` block (```json or
  bare), or the first balanced object, or the first balanced array, tried in that order.
Both are applicable only to cases with a schema and a present output (NA otherwise). JSON Schema
`format` keywords are annotations only (jsonschema's default), so results don't depend on which
optional format libraries happen to be installed.

The contract diff compares what baseline and candidate returned on the same case (parsed leniently),
recursively with dotted paths ("user.address.city", list elements as "items[].sku"): keys renamed
(a missing key and an extra key with a similar name or the same value), missing (at the candidate),
extra (only at the candidate) and type changes (same key, different JSON type).
"""
from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from rapidfuzz import fuzz, process

from lib.checks import InvalidSchemaError

RENAME_MIN_SIMILARITY = 80.0  # rapidfuzz ratio of normalized key names (0-100)
MAX_EMBEDDED_ATTEMPTS = 50  # '{' / '[' positions tried per output before giving up
MAX_EXAMPLES = 5

_FENCED = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()
_NOT_FOUND = object()


@lru_cache(maxsize=512)
def schema_validator(schema_text: str) -> Validator:
    """One validator per distinct schema text (the dialect follows the schema's $schema)."""
    try:
        schema = json.loads(schema_text)
    except json.JSONDecodeError as exc:
        raise InvalidSchemaError(f"case schema is not valid JSON: {exc}") from exc
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise InvalidSchemaError(f"case schema is not a valid JSON Schema: {exc.message}") from exc
    return cls(schema)


def json_validity(outputs: pd.Series, schemas: pd.Series) -> pd.DataFrame:
    """Columns `strict` and `lenient` (nullable booleans), NA where there is no schema or no output."""
    strict = pd.Series(pd.NA, index=outputs.index, dtype="boolean")
    lenient = strict.copy()
    rows = outputs.notna() & schemas.notna()
    seen: dict[tuple[str, str], tuple[bool, bool]] = {}  # identical (schema, output) pairs
    verdicts = []
    for text, schema in zip(outputs[rows].astype(str), schemas[rows].astype(str)):
        key = (schema, text)
        if key not in seen:
            seen[key] = _validity(text, schema_validator(schema))
        verdicts.append(seen[key])
    if verdicts:
        pairs = np.array(verdicts, dtype=bool)
        strict[rows], lenient[rows] = pairs[:, 0], pairs[:, 1]
    return pd.DataFrame({"strict": strict, "lenient": lenient})


def _validity(text: str, validator: Validator) -> tuple[bool, bool]:
    value = _parse(text)
    if value is not _NOT_FOUND and validator.is_valid(value):
        return True, True
    return False, any(validator.is_valid(v) for v in _embedded_candidates(text))


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return _NOT_FOUND


def _embedded_candidates(text: str) -> Iterator[Any]:
    """JSON values inside a chatty answer: fenced blocks, then the first balanced object and array."""
    for block in _FENCED.findall(text):
        value = _parse(block)
        if value is not _NOT_FOUND:
            yield value
    for opener in "{[":
        value = _first_balanced(text, opener)
        if value is not _NOT_FOUND:
            yield value


def _first_balanced(text: str, opener: str) -> Any:
    # raw_decode is the C scanner: it handles strings, escapes and nesting, and stops at the end
    # of the value, so "first balanced value" needs no bracket counting of our own.
    start = text.find(opener)
    for _ in range(MAX_EMBEDDED_ATTEMPTS):
        if start < 0:
            break
        try:
            return _DECODER.raw_decode(text, start)[0]
        except json.JSONDecodeError:
            start = text.find(opener, start + 1)
    return _NOT_FOUND


def parse_lenient(text: str) -> Any:
    """The JSON value an output most plausibly carries (see module doc); None when there is none."""
    value = _parse(text)
    if value is _NOT_FOUND:
        value = next(_embedded_candidates(text), None)
    return value


# ---- contract diff -------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyChange:
    path: str  # dotted path at the baseline side ("$" is the root)
    kind: str  # renamed | missing | extra | type_changed
    detail: str | None = None  # "old -> new" for renames, "string -> number" for type changes


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"  # JSON has one number type: 5 -> 5.0 is not a contract change
    return {str: "string", list: "array", dict: "object"}[type(value)]


def key_diff(baseline: Any, candidate: Any, path: str = "$") -> list[KeyChange]:
    """Contract changes from the baseline value to the candidate value, recursively."""
    b_type, c_type = json_type(baseline), json_type(candidate)
    if b_type != c_type:
        return [KeyChange(path, "type_changed", f"{b_type} -> {c_type}")]
    if b_type == "array":
        # Elements pairwise; "[]" collapses indexes so counts aggregate over positions and cases.
        return [ch for b, c in zip(baseline, candidate) for ch in key_diff(b, c, f"{path}[]")]
    if b_type != "object":
        return []
    changes: list[KeyChange] = []
    missing = [k for k in baseline if k not in candidate]
    extra = [k for k in candidate if k not in baseline]
    renames = _renames(missing, extra, baseline, candidate)
    for old, new in renames.items():
        changes.append(KeyChange(_join(path, old), "renamed", f"{old} -> {new}"))
        changes.extend(key_diff(baseline[old], candidate[new], _join(path, old)))
    changed_to = set(renames.values())
    changes += [KeyChange(_join(path, k), "missing") for k in missing if k not in renames]
    changes += [KeyChange(_join(path, k), "extra") for k in extra if k not in changed_to]
    for key in baseline:
        if key in candidate:
            changes.extend(key_diff(baseline[key], candidate[key], _join(path, key)))
    return changes


def _join(path: str, key: str) -> str:
    return key if path == "$" else f"{path}.{key}"


def _renames(missing: list[str], extra: list[str], baseline: dict, candidate: dict) -> dict[str, str]:
    """Greedy best pairs of (missing, extra) keys: similar names (user_name ~ userName) or same value."""
    if not missing or not extra:
        return {}
    scores = process.cdist([_key_form(k) for k in missing], [_key_form(k) for k in extra], scorer=fuzz.ratio)
    pairs = []
    for i, old in enumerate(missing):
        for j, new in enumerate(extra):
            same_value = _informative(baseline[old]) and baseline[old] == candidate[new]
            score = max(float(scores[i, j]), 100.0 if same_value else 0.0)
            if score >= RENAME_MIN_SIMILARITY:
                pairs.append((score, i, j))
    renames: dict[str, str] = {}
    used: set[int] = set()
    for _, i, j in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
        if missing[i] not in renames and j not in used:
            renames[missing[i]] = extra[j]
            used.add(j)
    return renames


def _key_form(key: str) -> str:
    return re.sub(r"[^0-9a-z]", "", key.lower())


def _informative(value: Any) -> bool:
    # null/true/false/"" match by accident too often to say two keys are the same field
    return json_type(value) not in ("null", "boolean") and value not in ("", [], {})


def contract_diff(b_outputs: pd.Series, c_outputs: pd.Series, max_examples: int = MAX_EXAMPLES) -> dict:
    """Key changes aggregated over cases: counts per (path, kind), detail counts, example indexes.

    Pass the outputs of the cases that have a schema (aligned Series; the index labels are the
    examples reported). Pairs where either side carries no JSON are counted as unparsed, not diffed.
    """
    counts: Counter[tuple[str, str]] = Counter()
    details: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    examples: dict[tuple[str, str], list] = defaultdict(list)
    unparsed = {"baseline": 0, "candidate": 0}
    n_compared = n_changed = 0
    for idx, b_text, c_text in zip(b_outputs.index, b_outputs, c_outputs):
        b_value = parse_lenient(b_text) if isinstance(b_text, str) else None
        c_value = parse_lenient(c_text) if isinstance(c_text, str) else None
        unparsed["baseline"] += b_value is None
        unparsed["candidate"] += c_value is None
        if b_value is None or c_value is None:
            continue
        n_compared += 1
        changes = key_diff(b_value, c_value)
        n_changed += bool(changes)
        for key in {(ch.path, ch.kind) for ch in changes}:  # a case counts once per path and kind
            counts[key] += 1
            if len(examples[key]) < max_examples:
                examples[key].append(idx)
        for ch in changes:
            if ch.detail:
                details[(ch.path, ch.kind)][ch.detail] += 1
    return {
        "n_pairs": len(b_outputs),
        "n_compared": n_compared,
        "n_changed": n_changed,
        "unparsed": unparsed,
        "changes": [
            {"path": path, "kind": kind, "count": n, "details": dict(details[(path, kind)]),
             "examples": examples[(path, kind)]}
            for (path, kind), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }
