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

from lib.review.checks import InvalidSchemaError
from lib.review.checks.schemas import offline_validator, reference_problem

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
    problem = reference_problem(schema)  # also for schemas stored before references were checked
    if problem is not None:
        raise InvalidSchemaError(f"case schema: {problem}")
    return offline_validator(cls, schema)


def json_validity(outputs: pd.Series, schemas: pd.Series) -> pd.DataFrame:
    """Columns `strict` and `lenient` (nullable booleans), NA where there is no schema or no output."""
    return json_checks(outputs, schemas)[["strict", "lenient"]]


def json_checks(outputs: pd.Series, schemas: pd.Series, values: dict | None = None) -> pd.DataFrame:
    """`strict`, `lenient` and `found` (some JSON value is carried: `parse_lenient` is not None), as
    nullable booleans, NA where there is no schema or no output. One parse pass for all three; pass a
    dict as `values` to also get each checked row's `parse_lenient` value (index label -> value)."""
    out = pd.DataFrame({k: pd.Series(pd.NA, index=outputs.index, dtype="boolean")
                        for k in ("strict", "lenient", "found")})
    rows = (outputs.notna() & schemas.notna()).to_numpy()
    seen: dict[tuple[str, str], tuple[bool, bool, bool, Any]] = {}  # identical (schema, output) pairs
    verdicts = []
    for label, text, schema in zip(outputs.index[rows], outputs[rows].astype(str), schemas[rows].astype(str)):
        key = (schema, text)
        if key not in seen:
            seen[key] = _verdicts(text, schema_validator(schema))
        verdicts.append(seen[key][:3])
        if values is not None:
            values[label] = seen[key][3]
    if verdicts:
        flags = np.array(verdicts, dtype=bool)
        for i, col in enumerate(("strict", "lenient", "found")):
            out.loc[rows, col] = flags[:, i]
    return out


def _verdicts(text: str, validator: Validator) -> tuple[bool, bool, bool, Any]:
    """(strict, lenient, found, the parse_lenient value) for one output."""
    value = _parse(text)
    if value is not _NOT_FOUND and validator.is_valid(value):
        return True, True, value is not None, value
    first, lenient = value, False  # first: what parse_lenient returns (the whole output, else the first block)
    skip = text.strip() if value is not _NOT_FOUND else None  # the whole output was validated already
    for candidate in _embedded_candidates(text, skip):
        first = candidate if first is _NOT_FOUND else first
        if validator.is_valid(candidate):
            lenient = True
            break
    first = None if first is _NOT_FOUND else first
    return False, lenient, first is not None, first


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return _NOT_FOUND


def _embedded_candidates(text: str, skip: str | None = None) -> Iterator[Any]:
    """JSON values inside a chatty answer: fenced blocks, then the first balanced object and array.
    A value whose JSON text was tried already (or is `skip`) is not yielded again: same text, same value."""
    tried = {skip}
    for block in _FENCED.findall(text):
        value, source = _parse(block), block.strip()
        if value is not _NOT_FOUND and source not in tried:
            tried.add(source)
            yield value
    for opener in "{[":
        value, source = _first_balanced(text, opener)
        if value is not _NOT_FOUND and source not in tried:
            tried.add(source)
            yield value


def _first_balanced(text: str, opener: str) -> tuple[Any, str | None]:
    """The first JSON value starting at an `opener` that decodes, and its source text."""
    # raw_decode is the C scanner: it handles strings, escapes and nesting, and stops at the end
    # of the value, so "first balanced value" needs no bracket counting of our own.
    start = text.find(opener)
    for _ in range(MAX_EMBEDDED_ATTEMPTS):
        if start < 0:
            break
        try:
            value, end = _DECODER.raw_decode(text, start)
            return value, text[start:end]
        except json.JSONDecodeError:
            start = text.find(opener, start + 1)
    return _NOT_FOUND, None


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


def pair_changes(b_text: object, c_text: object) -> str | None:
    """The contract changes between two outputs as JSON ([[path, kind, detail], ...]), None when either
    side carries no JSON (`parse_lenient`). Stored per pair, so reports only aggregate."""
    b_value = parse_lenient(b_text) if isinstance(b_text, str) else None
    c_value = parse_lenient(c_text) if isinstance(c_text, str) else None
    return value_changes(b_value, c_value)


def value_changes(b_value: Any, c_value: Any) -> str | None:
    """`pair_changes` from values `parse_lenient` returned already."""
    if b_value is None or c_value is None:
        return None
    return json.dumps([[ch.path, ch.kind, ch.detail] for ch in key_diff(b_value, c_value)])


def contract_diff(b_outputs: pd.Series, c_outputs: pd.Series, max_examples: int = MAX_EXAMPLES) -> dict:
    """Key changes aggregated over cases: counts per (path, kind), detail counts, example indexes.

    Pass the outputs of the cases that have a schema (aligned Series; the index labels are the
    examples reported). Pairs where either side carries no JSON are counted as unparsed, not diffed.
    """
    def found(texts: pd.Series) -> list[bool]:
        return [isinstance(t, str) and parse_lenient(t) is not None for t in texts]

    changes = [pair_changes(b, c) for b, c in zip(b_outputs, c_outputs)]
    return contract_summary(found(b_outputs), found(c_outputs), changes, list(b_outputs.index), max_examples)


def contract_summary(b_found: list[bool], c_found: list[bool], changes: list[str | None], labels: list,
                     max_examples: int = MAX_EXAMPLES) -> dict:
    """Aggregate per-pair `pair_changes` (in case order) into the contract report (see contract_diff)."""
    counts: Counter[tuple[str, str]] = Counter()
    details: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    examples: dict[tuple[str, str], list] = defaultdict(list)
    n_compared = n_changed = 0
    for label, raw in zip(labels, changes):
        if raw is None:
            continue
        n_compared += 1
        if raw == "[]":
            continue
        pair = json.loads(raw)
        n_changed += 1
        for key in dict.fromkeys((path, kind) for path, kind, _ in pair):  # a case counts once per path and kind
            counts[key] += 1
            if len(examples[key]) < max_examples:
                examples[key].append(label)
        for path, kind, detail in pair:
            if detail:
                details[(path, kind)][detail] += 1
    return {
        "n_pairs": len(labels),
        "n_compared": n_compared,
        "n_changed": n_changed,
        "unparsed": {"baseline": len(labels) - int(sum(b_found)), "candidate": len(labels) - int(sum(c_found))},
        "changes": [
            {"path": path, "kind": kind, "count": n, "details": dict(details[(path, kind)]),
             "examples": examples[(path, kind)]}
            for (path, kind), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }
