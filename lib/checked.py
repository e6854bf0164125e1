"""Checked pairs: every per-output check and pair value of a comparison, kept in the check store.

`checked_frame(engine, comparison)` is what reports and pages read: one row per (case, repeat) with
`b_*`/`c_*` check columns, the pair's similarity and contract changes, and no texts (`with_texts` adds
them for the rows a page shows). It checks only outputs the store has not seen under the same key
(reviewer settings + check code), stores them, and reads the rest back from columns, so after a run or
a load (which call `ensure_checked`) opening a report costs no text processing at all.

`checked_pairs(pairs, settings)` is the same computation from a `load_pairs` frame, from scratch: the
reference the stored path is tested against.
"""
from __future__ import annotations

import hashlib
import json
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from lib import check_store
from lib.check_store import Scope, Stored
from lib.checks.lengths import (METHOD_LITELLM, char_lengths, error_flags, token_counts, truncation_flags,
                                word_counts)
from lib.checks.matching import match_outputs
from lib.checks.refusal import RefusalDetector
from lib.checks import safety
from lib.checks.safety import safety_checks
from lib.checks.similarity import similarity
from lib.checks.structured import json_checks, parse_lenient, value_changes
from lib.comparisons import get_comparison
from lib.db import session_scope
from lib.errors import ReviewInputError
from lib.models import INPUT_PLACEHOLDER, MATCH_RULES, from_json, to_json

# Bump to invalidate every stored result when what the checks return changes without a code change
# here or in lib/checks (a dependency upgrade, say); code changes there invalidate by themselves.
CHECKS_VERSION = 1
NO_CATEGORY = "(none)"
CASE_COLUMNS = ("case_id", "repeat", "case_key", "position", "category", "has_schema")
RAW_COLUMNS = ("latency_s", "cost_usd", "completion_tokens")  # output fields the report uses as they are
TEXT_COLUMNS = ("input_text", "expected", "match", "pattern", "json_schema", "b_text", "c_text", "b_error",
                "c_error", "b_finish_reason", "c_finish_reason")
# What the checks read (lib/checks/safety.py included): a lean read, texts of the run's outputs only.
_OUTPUT_FIELDS = ("text", "finish_reason", "latency_s", "completion_tokens", "cost_usd", "error")
_CASE_FIELDS = ("case_key", "position", "expected", "match", "pattern", "json_schema", "category", "metadata_json")
_RUN_SQL = ("SELECT o.id AS output_id, o.case_id, o.repeat, {outputs}, {cases} "
            'FROM output o JOIN "case" c ON c.id = o.case_id WHERE o.run_id = ? AND o.id > ? ORDER BY o.id LIMIT ?')
CHUNK = 50_000  # outputs read and checked per step, pairs computed per step: memory stays bounded
TEXT_BUDGET = 250_000  # texts kept from the check step for the pair step; beyond, they are read again
_NULLABLE = {pa.bool_(): pd.BooleanDtype(), pa.int64(): pd.Int64Dtype(), pa.float64(): pd.Float64Dtype()}


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
            raise ReviewSettingsError(f"the input token limit must be a whole number >= 1, got {self.input_token_limit!r}")
        if self.schema is not None:
            object.__setattr__(self, "schema", canonical_schema(self.schema, "the review schema"))
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
        value = json.loads(schema) if isinstance(schema, str) else schema
    except json.JSONDecodeError as exc:
        raise ReviewSettingsError(f"{source}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(value, dict):
        raise ReviewSettingsError(f"{source}: a JSON Schema is a JSON object")
    try:
        validator_for(value).check_schema(value)
    except SchemaError as exc:
        raise ReviewSettingsError(f"{source}: not a valid JSON Schema: {exc.message}") from None
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def read_schema_file(path: Path) -> str:
    """The JSON Schema in `path` (canonical text); errors name the file."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewSettingsError(f"{path}: cannot read the schema file ({exc})") from None
    return canonical_schema(raw, str(path))


def _settings_from_json(raw: str | None) -> ReviewSettings:
    data = from_json(raw) or {}
    schema = data.get("schema")
    return ReviewSettings(match=data.get("match"), pattern=data.get("pattern"),
                          refusal_patterns=tuple(data.get("refusal_patterns", ())),
                          schema=json.dumps(schema) if schema is not None else None,
                          input_token_limit=data.get("input_token_limit"))


def stored_settings(engine: Engine, name: str) -> ReviewSettings:
    with Session(engine) as session:
        return _settings_from_json(get_comparison(session, name).settings_json)


def save_settings(engine: Engine, comparison: str, settings: ReviewSettings) -> None:
    """Store the reviewer's settings with the comparison (validated when they were made)."""
    with session_scope(engine) as session:
        comp = get_comparison(session, comparison)
        comp.settings_json = to_json(settings.as_dict())
        session.add(comp)


@cache
def _code_version() -> str:
    """Hash of the check code and the libraries it leans on: any change invalidates stored results."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for path in sorted([*here.glob("checks/*.py"), *here.glob("redteam/*.py"), Path(__file__)]):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(f"safety={getattr(safety, 'SAFETY_CHECKS_VERSION', 0)}".encode())
    for lib in ("jsonschema", "rapidfuzz", "pyarrow", "pandas", "py3langid"):
        digest.update(f"{lib}={metadata.version(lib)}".encode())
    return digest.hexdigest()


def settings_key(settings: ReviewSettings) -> str:
    """The store key of per-output results: settings, check code and CHECKS_VERSION."""
    raw = to_json({"settings": settings.as_dict(), "code": _code_version(), "version": CHECKS_VERSION})
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def pairs_key(settings: ReviewSettings | None = None) -> str:
    """The store key of pair values: check code, plus the review schema when one applies (it decides
    which pairs have a contract to compare)."""
    schema = f"/{settings.schema}" if settings is not None and settings.schema else ""
    return "pairs-" + hashlib.sha256(f"{_code_version()}/{CHECKS_VERSION}{schema}".encode()).hexdigest()[:26]


# ---------------------------------------------------------------- the checks (pure)

def side_checks(frame: pd.DataFrame, side: str, settings: ReviewSettings, detector: RefusalDetector | None = None,
                values: dict | None = None) -> dict[str, pd.Series]:
    """Every per-output check of one side (`b`/`c` columns of a pairs frame), named `{side}_{check}`.
    `values` (optional) receives the parsed JSON of outputs with a schema (index label -> value)."""
    detector = detector or RefusalDetector(settings.refusal_patterns)
    rule = pd.Series(settings.match, index=frame.index) if settings.match else frame["match"]
    pattern = pd.Series(settings.pattern, index=frame.index) if settings.match else frame["pattern"]
    text = frame[f"{side}_text"]
    validity = json_checks(text, case_schemas(frame, settings), values)
    refused = detector.flags(text)
    return {
        f"{side}_refused": refused,
        f"{side}_correct": match_outputs(text, frame["expected"], rule, pattern),
        f"{side}_json_strict": validity["strict"],
        f"{side}_json_lenient": validity["lenient"],
        f"{side}_truncated": truncation_flags(frame[f"{side}_finish_reason"]),
        f"{side}_errored": error_flags(frame[f"{side}_error"], text),
        f"{side}_len_chars": char_lengths(text),
        f"{side}_len_words": word_counts(text),
        **safety_checks(frame, side, refused),
        f"{side}_json_found": validity["found"],  # for the contract: some JSON value was found
    }


def case_schemas(frame: pd.DataFrame, settings: ReviewSettings) -> pd.Series:
    """Each case's JSON Schema, or the settings' schema where the case has none."""
    schemas = frame["json_schema"]
    return schemas.where(schemas.notna(), settings.schema) if settings.schema else schemas


def pair_values(b_text: pd.Series, c_text: pd.Series, has_schema: pd.Series, b_json: list,
                c_json: list) -> pd.DataFrame:
    """Similarity, and contract changes (JSON list) where the case has a schema and both sides carry JSON
    (`b_json`/`c_json`: each output's `parse_lenient` value, aligned; None where there is none)."""
    contract = [value_changes(b, c) if schema else None
                for b, c, schema in zip(b_json, c_json, has_schema.to_numpy(dtype=bool))]
    return pd.DataFrame({"similarity": similarity(b_text, c_text),
                         "contract": pd.Series(contract, index=b_text.index, dtype=object)})


def checked_pairs(pairs: pd.DataFrame, settings: ReviewSettings = ReviewSettings(),
                  tokenizers: dict[str, RunPrompt] | None = None) -> pd.DataFrame:
    """The `load_pairs` frame plus every check, computed from scratch (no store). Token columns need each
    side's run (`tokenizers`, see `run_prompts`); without, they are NA."""
    detector = RefusalDetector(settings.refusal_patterns)
    has_schema = case_schemas(pairs, settings).notna()
    parsed: dict[str, dict] = {"b": {}, "c": {}}
    columns = {**side_checks(pairs, "b", settings, detector, parsed["b"]),
               **side_checks(pairs, "c", settings, detector, parsed["c"]), "has_schema": has_schema}
    for side in "bc":
        tokens = token_checks(pairs, side, (tokenizers or {}).get(side), settings)
        missing = pairs[f"{side}_id"].isna()  # no output on this side: nothing was sent to count
        columns.update({name: values.mask(missing) for name, values in tokens.items()})
    b_json, c_json = ([parsed[side].get(label) for label in pairs.index] for side in "bc")
    columns.update(pair_values(pairs["b_text"], pairs["c_text"], has_schema, b_json, c_json))
    out = pd.concat([pairs, pd.DataFrame(columns, index=pairs.index)], axis=1)
    out["category"] = out["category"].fillna(NO_CATEGORY)
    return out


# ---------------------------------------------------------------- per-output results, stored

@dataclass
class _RunResults:
    frame: pd.DataFrame  # CASE_COLUMNS + output_id + check and raw columns, one row per output
    texts: dict[int, str | None]  # output id -> text of outputs checked in this call (within TEXT_BUDGET)
    parsed: dict[int, object]  # output id -> parse_lenient value, for those with a schema (same)
    n_checked: int


def _read_outputs(conn: Connection, run_id: int, after: int, with_inputs: bool) -> pd.DataFrame:
    """The run's next CHUNK outputs above id `after` with their cases, columns named like a pairs
    frame's `b` side. Inputs only `with_inputs` (prompts are token-counted against a limit): a million
    outputs' inputs are otherwise read for nothing."""
    cases = _CASE_FIELDS + (("input_text",) if with_inputs else ())
    sql = _RUN_SQL.format(outputs=", ".join(f"o.{f} AS b_{f}" for f in _OUTPUT_FIELDS),
                          cases=", ".join(f"c.{f}" for f in cases))
    cursor = conn.connection.driver_connection.cursor()  # plain tuples: no per-row wrapper objects
    try:
        rows = cursor.execute(sql, (run_id, after, CHUNK)).fetchall()
        names = [d[0] for d in cursor.description]
    finally:
        cursor.close()
    columns = zip(*rows) if rows else ([] for _ in names)
    return pd.DataFrame({name: np.array(values, dtype=object) for name, values in zip(names, columns)})


def _check_outputs(raw: pd.DataFrame, settings: ReviewSettings, parsed: dict | None = None,
                   prompt: RunPrompt | None = None) -> pd.DataFrame:
    """Stored columns for freshly read outputs: case columns, check columns, raw report columns."""
    checks = {**side_checks(raw, "b", settings, values=parsed), **token_checks(raw, "b", prompt, settings)}
    out = pd.DataFrame({"output_id": raw["output_id"].astype("int64"), "case_id": raw["case_id"].astype("int64"),
                        "repeat": raw["repeat"].astype("int64"), "case_key": raw["case_key"].astype(str),
                        "position": raw["position"].astype("int64"), "category": raw["category"],
                        "has_schema": case_schemas(raw, settings).notna()})
    for col in RAW_COLUMNS:
        out[col] = pd.to_numeric(raw[f"b_{col}"]).astype("Float64" if col != "completion_tokens" else "Int64")
    for name, values in checks.items():
        out[name[2:]] = values
    return out


# ---------------------------------------------------------------- tokens (per model)

@dataclass(frozen=True)
class RunPrompt:
    """What a run's model was sent around each input: its tokenizer counts the prompt and the output."""

    model: str
    system_prompt: str | None = None
    prompt_template: str | None = None

    def render(self, inputs: pd.Series) -> pd.Series:
        """The prompt's text per input: system prompt and templated input (no per-message overhead)."""
        text = inputs.astype("string")
        if self.prompt_template:
            head, _, tail = self.prompt_template.partition(INPUT_PLACEHOLDER)
            text = head + text + tail
        return (self.system_prompt + "\n\n" + text) if self.system_prompt else text


def token_checks(frame: pd.DataFrame, side: str, prompt: RunPrompt | None,
                 settings: ReviewSettings) -> dict[str, pd.Series]:
    """Output and prompt tokens under the side's own model (litellm's tokenizer for it), and whether the
    prompt crosses the settings' input token limit. NA without a run (`prompt`) or without a limit."""
    na_int = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    na_bool = pd.Series(pd.NA, index=frame.index, dtype="boolean")
    if prompt is None:
        return {f"{side}_len_tokens": na_int, f"{side}_input_tokens": na_int, f"{side}_tokens_exact": na_bool,
                f"{side}_input_over_limit": na_bool}
    output = token_counts(frame[f"{side}_text"], prompt.model)
    exact = pd.Series(output.method == METHOD_LITELLM, index=frame.index, dtype="boolean")
    checks = {f"{side}_len_tokens": output.counts, f"{side}_input_tokens": na_int, f"{side}_tokens_exact": exact,
              f"{side}_input_over_limit": na_bool}
    if settings.input_token_limit:  # prompts are counted only against a budget: half the counting otherwise
        prompts = prompt.render(frame["input_text"]).astype(object).where(frame["input_text"].notna())
        inputs = token_counts(prompts, prompt.model).counts
        checks.update({f"{side}_input_tokens": inputs,
                       f"{side}_input_over_limit": (inputs > settings.input_token_limit).astype("boolean")})
    return checks


_PROMPT_SQL = text("SELECT m.model, m.system_prompt, m.prompt_template FROM run r "
                   "JOIN modelconfig m ON m.id = r.config_id WHERE r.id = :run")


def run_prompt(conn: Connection, run_id: int) -> RunPrompt | None:
    row = conn.execute(_PROMPT_SQL, {"run": run_id}).first()
    return RunPrompt(*row) if row is not None else None


def run_prompts(engine: Engine, comparison: str) -> dict[str, RunPrompt | None]:
    """Each side's RunPrompt (`b`, `c`): for `checked_pairs`."""
    b_run, c_run = _runs(engine, comparison)
    with engine.connect() as conn:
        return {"b": run_prompt(conn, b_run), "c": run_prompt(conn, c_run)}


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_NULLABLE.get)


def _live_keys(conn: Connection, run_id: int) -> frozenset[str]:
    """Keys of the stored settings of every comparison using this run: results worth keeping."""
    rows = conn.execute(text("SELECT settings_json FROM comparison "
                             "WHERE baseline_run_id = :r OR candidate_run_id = :r"), {"r": run_id}).all()
    return frozenset(settings_key(_settings_from_json(raw)) for (raw,) in rows)


def _run_results(engine: Engine, run_id: int, settings: ReviewSettings, key: str, budget: int) -> _RunResults:
    """Stored results of the run, plus those of outputs not stored yet: checked now, CHUNK outputs at a
    time, each chunk stored as it is done (a later chunk that finds the run changed is not stored)."""
    scope = Scope(run_id, None, key)
    with engine.connect() as conn, conn.begin():  # one snapshot: stored state and outputs agree
        prompt = run_prompt(conn, run_id)
        stored = check_store.read(conn, scope)
        n_all, _ = check_store.output_span(conn, run_id)
        n_new, _ = check_store.output_span(conn, run_id, stored.max_output_id)
        restart = n_all != stored.n_rows + n_new  # not just appends (epochs should have caught it)
        keep = _live_keys(conn, run_id) if n_new or restart else frozenset()
    parts = [_to_pandas(stored.table)] if stored.table is not None and not restart else []
    tables = [stored.table] if parts else []
    after = -1 if restart else stored.max_output_id
    texts: dict[int, str | None] = {}
    parsed: dict[int, object] = {}
    n_checked, n_todo = 0, n_all if restart else n_new
    state: Stored | None = stored
    while n_checked < n_todo:
        with engine.connect() as conn, conn.begin():
            raw = _read_outputs(conn, run_id, after, with_inputs=settings.input_token_limit is not None)
            epochs = (check_store.epoch(conn, run_id), 0)
        if raw.empty:
            break
        chunk_parsed: dict = {}
        new = _check_outputs(raw, settings, chunk_parsed, prompt)
        parts.append(new)
        tables.append(_to_arrow(new))
        ids = raw["output_id"].to_numpy()
        after, n_checked = int(ids.max()), n_checked + len(new)
        if state is not None and epochs == state.epochs:  # else the run changed under us: store no more
            state = check_store.write(engine, scope, state, new=tables[-1], max_output_id=after, keep_keys=keep,
                                      full=pa.concat_tables(tables, promote_options="default"), rewrite=restart)
            restart = False
        if len(texts) + len(raw) <= budget:
            texts.update(zip(ids, raw["b_text"]))
            parsed.update({ids[label]: v for label, v in chunk_parsed.items()})
    frame = pd.concat(parts, ignore_index=True) if parts else _empty_run_frame(settings)
    return _RunResults(frame, texts, parsed, n_checked)


def _empty_run_frame(settings: ReviewSettings) -> pd.DataFrame:
    names = ("output_id", "case_id", "repeat", *_CASE_FIELDS, *(f"b_{f}" for f in _OUTPUT_FIELDS))
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in names})
    return _check_outputs(empty, settings)


# ---------------------------------------------------------------- pairs

def _pair_frame(b: pd.DataFrame, c: pd.DataFrame) -> pd.DataFrame:
    """One row per (case, repeat) present on either side, in dataset order, sides side by side.
    Built column by column with one take per column: no merge, no frame copies (this is the warm path)."""
    b_keys, c_keys = _pair_keys(b), _pair_keys(c)
    keys = np.union1d(b_keys, c_keys)
    b_at, c_at = _rows_at(keys, b_keys), _rows_at(keys, c_keys)
    case_cols = [k for k in CASE_COLUMNS if k not in ("case_id", "repeat")]
    cases = pd.concat([b[case_cols], c[case_cols]], ignore_index=True)
    case_at = np.where(b_at >= 0, b_at, len(b) + c_at)
    order = np.lexsort((keys & 0xFFFFF, keys >> 20, cases["position"].to_numpy(dtype=np.int64)[case_at]))
    keys, b_at, c_at, case_at = keys[order], b_at[order], c_at[order], case_at[order]
    columns = {"case_id": keys >> 20, "repeat": keys & 0xFFFFF}
    columns.update({col: cases[col].array.take(case_at) for col in case_cols})
    for prefix, side, at in (("b", b, b_at), ("c", c, c_at)):
        columns.update({f"{prefix}_{col}": side[col].array.take(at, allow_fill=True)
                        for col in side.columns if col not in CASE_COLUMNS})
    frame = pd.DataFrame(columns)
    frame["category"] = frame["category"].fillna(NO_CATEGORY).astype(object)
    frame["has_schema"] = frame["has_schema"].astype(bool)
    return frame


def _pair_keys(side: pd.DataFrame) -> np.ndarray:
    # (case, repeat) as one int64: repeats stay far below 2**20
    return (side["case_id"].to_numpy(dtype=np.int64) << 20) | side["repeat"].to_numpy(dtype=np.int64)


def _rows_at(keys: np.ndarray, side_keys: np.ndarray) -> np.ndarray:
    """For each key, the side's row holding it, or -1."""
    at = np.full(len(keys), -1, dtype=np.int64)
    at[np.searchsorted(keys, side_keys)] = np.arange(len(side_keys))
    return at


def _pair_ids(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return (frame["b_output_id"].fillna(-1).to_numpy(dtype=np.int64),
            frame["c_output_id"].fillna(-1).to_numpy(dtype=np.int64))


def _attach_pair_values(engine: Engine, frame: pd.DataFrame, b_run: int, c_run: int,
                        texts: dict[int, str | None], parsed: dict[int, object], settings: ReviewSettings) -> int:
    """Add similarity and contract to the frame: stored ones, then those computed (and stored) now.

    Values are keyed by the pair's two output ids; a pair missing a side has none (NA / None)."""
    scope = Scope(b_run, c_run, pairs_key(settings))
    b_ids, c_ids = _pair_ids(frame)
    complete = (b_ids >= 0) & (c_ids >= 0)
    with engine.connect() as conn, conn.begin():
        stored = check_store.read(conn, scope)
    ids = pd.DataFrame({"b_output_id": b_ids, "c_output_id": c_ids})
    if stored.table is None:
        values = ids.assign(similarity=pd.Series(pd.NA, index=ids.index, dtype="Float64"), contract=None)
        todo = complete
    else:
        old = _to_pandas(stored.table).drop_duplicates(["b_output_id", "c_output_id"], keep="last")
        values = ids.merge(old.assign(_stored=True), on=["b_output_id", "c_output_id"], how="left", sort=False)
        todo = complete & values["_stored"].isna().to_numpy()
    if todo.any():
        computed = pd.concat([_compute_pairs(engine, frame.iloc[chunk], texts, parsed)
                              for chunk in np.array_split(np.flatnonzero(todo), -(-int(todo.sum()) // CHUNK))])
        values.loc[todo, "similarity"] = computed["similarity"].to_numpy()
        values.loc[todo, "contract"] = computed["contract"].to_numpy()
        keys = ["b_output_id", "c_output_id", "similarity", "contract"]
        check_store.write(engine, scope, stored, new=_to_arrow(values.loc[todo, keys].reset_index(drop=True)),
                          full=_to_arrow(values.loc[complete, keys].reset_index(drop=True)),
                          max_output_id=int(max(b_ids.max(), c_ids.max())))
    frame["similarity"] = values["similarity"].astype("Float64").to_numpy()
    frame["contract"] = values["contract"].where(complete & frame["has_schema"].to_numpy(), None).to_numpy()
    return int(todo.sum())


def _compute_pairs(engine: Engine, rows: pd.DataFrame, texts: dict[int, str | None],
                   parsed: dict[int, object]) -> pd.DataFrame:
    """pair_values of these rows; texts not kept from the check step are read here, per chunk."""
    texts = ChainMap(_fetch_texts(engine, rows, texts), texts)
    sides = [rows[f"{s}_output_id"].astype("int64").tolist() for s in "bc"]
    return pair_values(*(pd.Series([texts[i] for i in ids], index=rows.index, dtype=object) for ids in sides),
                       rows["has_schema"], *(_parsed(ids, rows["has_schema"], texts, parsed) for ids in sides))


def _fetch_texts(engine: Engine, rows: pd.DataFrame, known: dict[int, str | None]) -> dict[int, str | None]:
    """Texts of the rows' outputs that this call did not read (outputs checked in an earlier call)."""
    ids = pd.concat([rows["b_output_id"], rows["c_output_id"]]).astype("int64").unique().tolist()
    missing = [i for i in ids if i not in known]
    return _fetch(engine, "SELECT id, text FROM output", missing) if missing else {}


def _parsed(ids: list[int], has_schema: pd.Series, texts: Mapping[int, str | None], parsed: dict[int, object]) -> list:
    """parse_lenient values of these outputs where the case has a schema (parsed earlier, or now)."""
    return [None if not schema else parsed[i] if i in parsed
            else parse_lenient(texts[i]) if isinstance(texts[i], str) else None
            for i, schema in zip(ids, has_schema.to_numpy(dtype=bool))]


def _fetch(engine: Engine, select: str, ids: list[int]) -> dict:
    """{id: value} for many ids with one bound parameter (a JSON array), any count."""
    with engine.connect() as conn:
        rows = conn.execute(text(f"{select} WHERE id IN (SELECT value FROM json_each(:ids))"),
                            {"ids": json.dumps(ids)}).all()
    return {r[0]: r[1] if len(r) == 2 else tuple(r[1:]) for r in rows}


# ---------------------------------------------------------------- public entry points

@dataclass(frozen=True)
class CheckCounts:
    outputs_checked: int  # outputs whose checks ran in this call (0 when everything was stored)
    pairs_computed: int


def _runs(engine: Engine, comparison: str) -> tuple[int, int]:
    with Session(engine) as session:
        comp = get_comparison(session, comparison)
        return comp.baseline_run_id, comp.candidate_run_id


def checked_with_counts(engine: Engine, comparison: str,
                        settings: ReviewSettings | None = None) -> tuple[pd.DataFrame, CheckCounts]:
    settings = settings if settings is not None else stored_settings(engine, comparison)
    b_run, c_run = _runs(engine, comparison)
    key = settings_key(settings)
    b = _run_results(engine, b_run, settings, key, TEXT_BUDGET // 2)
    c = b if c_run == b_run else _run_results(engine, c_run, settings, key, TEXT_BUDGET // 2)
    frame = _pair_frame(b.frame, c.frame)
    n_pairs = _attach_pair_values(engine, frame, b_run, c_run, {**b.texts, **c.texts}, {**b.parsed, **c.parsed},
                                  settings)
    return frame, CheckCounts(b.n_checked + (c.n_checked if c is not b else 0), n_pairs)


def checked_frame(engine: Engine, comparison: str, settings: ReviewSettings | None = None) -> pd.DataFrame:
    """Checked pairs of a stored comparison (stored settings when None), computing only what is new."""
    return checked_with_counts(engine, comparison, settings)[0]


def ensure_checked(engine: Engine, comparison: str, settings: ReviewSettings | None = None) -> CheckCounts | None:
    """Check and store what a report of this comparison will need. For the end of a run or a load:
    returns None instead of raising when the data cannot be checked (the report will say why)."""
    try:
        return checked_with_counts(engine, comparison, settings)[1]
    except ReviewInputError:
        return None


def with_texts(engine: Engine, rows: pd.DataFrame) -> pd.DataFrame:
    """These checked rows plus their texts (TEXT_COLUMNS): for the rows a page shows or searches."""
    out = rows.copy()
    cases = _fetch(engine, 'SELECT id, input_text, expected, match, pattern, json_schema FROM "case"',
                   rows["case_id"].astype("int64").unique().tolist())
    for i, col in enumerate(("input_text", "expected", "match", "pattern", "json_schema")):
        out[col] = [cases[c][i] for c in rows["case_id"]]
    for side in ("b", "c"):
        ids = rows[f"{side}_output_id"].dropna().astype("int64").tolist()
        outputs = _fetch(engine, "SELECT id, text, error, finish_reason FROM output", ids)
        for i, col in enumerate(("text", "error", "finish_reason")):
            out[f"{side}_{col}"] = [None if pd.isna(o) else outputs[int(o)][i] for o in rows[f"{side}_output_id"]]
    return out
