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

import json
from collections import ChainMap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from lib.errors import ReviewInputError
from lib.review.checks.structured import parse_lenient
from lib.review.comparisons import comparison_runs
from lib.review.compute import NO_CATEGORY, check_outputs, pair_values, pairs_key, settings_key
from lib.review.labels import apply_labels, labels_for_runs
from lib.review.settings import ReviewSettings, _settings_from_json, stored_settings
from lib.review.tokens import RunPrompt, run_prompt
from lib.store import check_store
from lib.store.check_store import Scope, Stored

CASE_COLUMNS = ("case_id", "repeat", "case_key", "position", "category", "has_schema")
TEXT_COLUMNS = ("input_text", "expected", "match", "pattern", "json_schema", "b_text", "c_text", "b_error",
                "c_error", "b_finish_reason", "c_finish_reason")
# What the checks read (lib/review/checks/safety.py included): a lean read, texts of the run's outputs only.
_OUTPUT_FIELDS = ("text", "finish_reason", "latency_s", "completion_tokens", "cost_usd", "error")
_CASE_FIELDS = ("case_key", "position", "expected", "match", "pattern", "json_schema", "category", "metadata_json")
_RUN_SQL = ("SELECT o.id AS output_id, o.case_id, o.repeat, {outputs}, {cases} "
            'FROM output o JOIN "case" c ON c.id = o.case_id WHERE o.run_id = ? AND o.id > ? ORDER BY o.id LIMIT ?')
CHUNK = 50_000  # outputs read and checked per step, pairs computed per step: memory stays bounded
# Outputs checked per step from a load's written values: smaller, as the load (and its check helper) also holds
# the parsed file's outputs while checking
WRITTEN_CHUNK = 25_000
TEXT_BUDGET = 250_000  # texts kept from the check step for the pair step; beyond, they are read again
_NULLABLE = {pa.bool_(): pd.BooleanDtype(), pa.int64(): pd.Int64Dtype(), pa.float64(): pd.Float64Dtype()}


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



def written_outputs(values: Mapping[str, Sequence | np.ndarray]) -> pd.DataFrame:
    """A run's outputs as `_read_outputs` reads them back (same columns, Python values in object columns),
    from the values its writer just stored: `output_id`, `case_id`, `repeat`, _OUTPUT_FIELDS and
    _CASE_FIELDS (plus `input_text`), each a list in output id order, as SQLite returns them (REAL columns
    as floats). A load checks its outputs from these in the same pass instead of reading them again.
    Without `input_text` (outputs checked without an input token limit), the frame has none."""
    inputs = ("input_text",) if "input_text" in values else ()
    names = {"output_id": "output_id", "case_id": "case_id", "repeat": "repeat",
             **{f: f"b_{f}" for f in _OUTPUT_FIELDS}, **{f: f for f in (*_CASE_FIELDS, *inputs)}}
    return pd.DataFrame({name: np.asarray(values[k], dtype=object) for k, name in names.items()})  # _RUN_SQL order


def _next_outputs(conn: Connection, run_id: int, after: int, with_inputs: bool,
                  written: Written | None) -> pd.DataFrame:
    if written is None:
        return _read_outputs(conn, run_id, after, with_inputs)
    return written_chunk(written, after, with_inputs)


# A run's outputs as just written: `written_outputs`' values (arrays in output id order), kept as arrays so a
# frame is made a WRITTEN_CHUNK at a time (a frame of all of them would copy every column at once).
Written = Mapping[str, np.ndarray]


def written_chunk(written: Written, after: int, with_inputs: bool) -> pd.DataFrame:
    """The next WRITTEN_CHUNK of a run's written outputs above output id `after`, as `_read_outputs` would read
    them."""
    start = int(np.searchsorted(np.asarray(written["output_id"], dtype=np.int64), after, side="right"))
    end = start + WRITTEN_CHUNK
    return written_outputs({k: v[start:end] for k, v in written.items() if with_inputs or k != "input_text"})


# How a chunk of a run's outputs gets its `check_outputs` frame: (run id, outputs, settings, parse_lenient values
# out, prompt) -> frame. Here by default; a big load's helper process hands back what it computed meanwhile
# (lib.review.check_worker).
Checker = Callable[[int, pd.DataFrame, ReviewSettings, dict, RunPrompt | None], pd.DataFrame]


def check_here(run_id: int, raw: pd.DataFrame, settings: ReviewSettings, parsed: dict,
               prompt: RunPrompt | None) -> pd.DataFrame:
    return check_outputs(raw, settings, parsed, prompt)


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_NULLABLE.get)


def _live_keys(conn: Connection, run_id: int) -> frozenset[str]:
    """Keys of the stored settings of every comparison using this run: results worth keeping."""
    rows = conn.execute(text("SELECT settings_json FROM comparison "
                             "WHERE baseline_run_id = :r OR candidate_run_id = :r"), {"r": run_id}).all()
    return frozenset(settings_key(_settings_from_json(raw)) for (raw,) in rows)


def _run_results(engine: Engine, run_id: int, settings: ReviewSettings, key: str, budget: int,
                 written: Written | None = None, checker: Checker = check_here) -> _RunResults:
    """Stored results of the run, plus those of outputs not stored yet: checked now, CHUNK outputs at a
    time, each chunk stored as it is done (a later chunk that finds the run changed is not stored).
    `written`: the run's outputs as just written, checked without reading them back, by `checker`."""
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
        from_written = written is not None and not restart
        with engine.connect() as conn, conn.begin():
            raw = _next_outputs(conn, run_id, after, settings.input_token_limit is not None,
                                written if from_written else None)
            epochs = (check_store.epoch(conn, run_id), 0)
        if raw.empty:
            break
        chunk_parsed: dict = {}
        new = (checker if from_written else check_here)(run_id, raw, settings, chunk_parsed, prompt)
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
    return check_outputs(empty, settings)


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



def checked_with_counts(engine: Engine, comparison: str, settings: ReviewSettings | None = None,
                        written: Mapping[int, Written] | None = None, checker: Checker = check_here
                        ) -> tuple[pd.DataFrame, CheckCounts]:
    settings = settings if settings is not None else stored_settings(engine, comparison)
    b_run, c_run = comparison_runs(engine, comparison)
    key = settings_key(settings)
    written = written or {}
    b = _run_results(engine, b_run, settings, key, TEXT_BUDGET // 2, written.get(b_run), checker)
    c = b if c_run == b_run else _run_results(engine, c_run, settings, key, TEXT_BUDGET // 2, written.get(c_run),
                                              checker)
    frame = _pair_frame(b.frame, c.frame)
    n_pairs = _attach_pair_values(engine, frame, b_run, c_run, {**b.texts, **c.texts}, {**b.parsed, **c.parsed},
                                  settings)
    # Reviewer labels override the rule here, so every count built on this frame uses them.
    frame = apply_labels(frame, labels_for_runs(engine, (b_run, c_run)))
    return frame, CheckCounts(b.n_checked + (c.n_checked if c is not b else 0), n_pairs)


def checked_frame(engine: Engine, comparison: str, settings: ReviewSettings | None = None) -> pd.DataFrame:
    """Checked pairs of a stored comparison (stored settings when None), computing only what is new."""
    return checked_with_counts(engine, comparison, settings)[0]


def ensure_checked(engine: Engine, comparison: str, settings: ReviewSettings | None = None,
                   written: Mapping[int, Written] | None = None, checker: Checker = check_here
                   ) -> CheckCounts | None:
    """Check and store what a report of this comparison will need. For the end of a run or a load:
    returns None instead of raising when the data cannot be checked (the report will say why).
    `written`: run id -> its outputs as just written (`Written`), not read back, checked by `checker`."""
    try:
        return checked_with_counts(engine, comparison, settings, written, checker)[1]
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
