"""Shadow-traffic logs, streamed: one row per (request, model), the serving and the shadow model
answering the same live request, paired on the request key.

The file is read in chunks (`lib.data.loaders.stream`) and written chunk by chunk with Core `executemany`
inside ONE write transaction: a malformed line anywhere rolls everything back, and memory holds one
chunk plus a key -> case index (a few dozen bytes per request), never the file. Traffic has no
expected answers, so no expected column is read: checks that need one (accuracy) are absent from the
report, not false. The comparison's source is `shadow` and its notes say `"traffic": true`.

Sides: `--baseline`/`--candidate` name the model values, or a role column (`role`, `mode`) says
`serving` (baseline) or `shadow` (candidate) per row. Rows of other models are counted and ignored.
With a role column, the sides are recorded under the model each role logs, or under `--baseline` /
`--candidate` when given with `--role-col` (a log without a model column), else `serving` / `shadow`.
Each case keeps the input of its request's first row, which must carry one.
"""
from __future__ import annotations

import hashlib
import io
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import String, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from lib.data.fields import InvalidField, coerce_input, scalar_text, text_or_json
from lib.data.loaders import long
from lib.data.loaders.store import SIDES, _model_config, recorded_dataset_name
from lib.data.loaders.stream import CHUNK_ROWS, HashingReader, chunk_frame, iter_tables
from lib.data.tables import Table
from lib.errors import RecordedLoadError
from lib.store.audit import record_event
from lib.store.columns import to_json, utcnow
from lib.store.engine import session_scope
from lib.store.entities import SOURCE_RECORDED, STATUS_RECORDED, Case, Comparison, Dataset, Output, Run

if TYPE_CHECKING:
    from lib.data.loaders import LoadMapping

FORMAT = "shadow"
ROLE_COLS = ("role", "mode")
BASELINE_ROLES = frozenset({"serving", "primary", "production", "live", "control", "baseline"})
CANDIDATE_ROLES = frozenset({"shadow", "candidate"})
MAX_UNPAIRED_IDS = 10
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite (UTC, naive)


@dataclass
class _Columns:
    """File columns for each field (None: not in the file), resolved on the first chunk."""

    key: str
    input: str | None  # None: the log has no input column (every case's input is empty)
    output: str
    model: str | None
    role: str | None
    optional: dict[str, str | None]

    def needed(self) -> list[str | None]:
        return [self.key, self.input, self.output, self.model, self.role, *self.optional.values()]


@dataclass
class _State:
    """What a streamed load keeps between chunks: small per request, nothing per output."""

    baseline: str | None
    candidate: str | None
    index: dict[str, int] = field(default_factory=dict)  # request key -> case position
    keys: list[str] = field(default_factory=list)
    counts: dict[str, array] = field(default_factory=lambda: {s: array("l") for s in SIDES})
    hasher: Any = field(default_factory=hashlib.sha256)  # the dataset's content hash, streamed
    ignored: int = 0
    rows: int = 0
    first_at: pd.Timestamp | None = None
    last_at: pd.Timestamp | None = None
    models: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SIDES})
    notes: list[str] = field(default_factory=list)  # warnings raised while reading (an ignored timestamp column)


def _resolve(table: Table, m: LoadMapping) -> _Columns:
    pick, require = long.pick, long.require
    key = require(table, pick(table, m.id_col, long.ID_COLS, "id"), long.ID_COLS, "id", "--id-col")
    model = pick(table, m.model_col, long.MODEL_COLS, "model")
    role = pick(table, m.role_col, ROLE_COLS, "role")
    if m.baseline is not None or m.candidate is not None:
        role = m.role_col and role  # model values given: a role column is used only when named
    if role is None:
        model = require(table, model, long.MODEL_COLS, "model", "--model-col")
        if m.baseline is None or m.candidate is None:
            table.fail_header("which is the baseline and which the candidate? pass --baseline and --candidate (the "
                              "model values), or log a role column ('role': serving/shadow); the model values in the "
                              f"first {len(table.records)} rows are: {_first_models(table, model, m)}")
    optional = long.optional_columns(table, m)
    optional.pop("expected")  # traffic has no expected answers
    return _Columns(key=key, model=model, role=role,
                    input=pick(table, m.input_col, long.INPUT_COLS, "input"),
                    output=require(table, pick(table, m.output_col, long.OUTPUT_COLS, "output"),
                                   long.OUTPUT_COLS, "output", "--output-col"),
                    optional=optional)


def _sides(table: Table, df: pd.DataFrame, cols: _Columns, state: _State) -> pd.Series:
    """baseline | candidate | None (another model) per row."""
    if cols.role is not None:
        roles = df[cols.role].map(lambda v: str(v).strip().lower() if v is not None else None)
        side = roles.map(lambda r: "baseline" if r in BASELINE_ROLES else "candidate" if r in CANDIDATE_ROLES
                         else None)
        bad = side.isna().to_numpy()
        if bad.any():
            row = int(bad.argmax())
            table.fail(row, f"is '{df[cols.role].iloc[row]}': use serving or shadow", field=cols.role)
        if cols.model is not None:
            for name in SIDES:
                state.models[name].update(df.loc[side == name, cols.model].dropna().astype(str).unique())
        return side
    models = df[cols.model]
    if models.isna().any():
        table.fail(int(models.isna().to_numpy().argmax()), "is empty", field=cols.model)
    models = models.astype(str)
    return models.map({state.baseline: "baseline", state.candidate: "candidate"})


def _first_models(table: Table, model: str, m: LoadMapping) -> str:
    """Each model value of the first chunk with its row count and first/last timestamp."""
    stamp_col = m.timestamp_col or long.pick(table, None, long.TIMESTAMP_COLS, "timestamp")
    df = chunk_frame(table, [model, stamp_col])
    if df.empty:
        return "(none)"
    stamps = None
    ts_col = next((c for c in df.columns if c != model), None)
    if ts_col is not None:
        stamps = long.parse_timestamps(df[ts_col], m.timestamp_format)
    return long.model_summary(df[model].astype(str), stamps)


def _case_row(table: Table, row: int, key: str, value: Any, category: Any, has_input: bool = True
              ) -> tuple[dict[str, Any], Any]:
    try:
        input_text, messages = coerce_input(value, objects=True) if has_input else ("", None)
        category = scalar_text(category, "category")
    except InvalidField as exc:
        table.fail(row, f"{exc.message} (the first row of request '{key}' must carry its input)", field=exc.field)
    return {"case_key": key, "input_text": input_text, "messages_json": to_json(messages),
            "category": category}, messages


def _canonical(case: dict[str, Any], messages: Any) -> dict[str, Any]:
    """lib.data.golden.CaseRecord.canonical() of a traffic case, so the streamed hash equals content_hash."""
    return {"key": case["case_key"], "input": case["input_text"], "messages": messages, "expected": None,
            "match": None, "pattern": None, "schema": None, "category": case["category"], "metadata": None}


def _plain(series: pd.Series) -> list:
    """Python values with None for nulls (never NaN, NA or NaT)."""
    return series.astype(object).where(series.notna(), None).tolist()


class _Writer:
    """Writes one chunk at a time inside the load's transaction (Core executemany, explicit case ids)."""

    def __init__(self, conn: Connection, dataset_id: int, run_ids: dict[str, int], cols: _Columns, state: _State,
                 mapping: LoadMapping):
        self.conn, self.dataset_id, self.run_ids, self.cols, self.state = conn, dataset_id, run_ids, cols, state
        self.mapping = mapping
        self.seen_rows = False
        # The transaction holds SQLite's write lock (BEGIN IMMEDIATE): nobody else can take these ids.
        self.first_case_id = (conn.execute(select(func.max(Case.id))).scalar() or 0) + 1
        self.created_at = utcnow()

    def chunk(self, table: Table) -> None:
        df = chunk_frame(table, self.cols.needed(), keep_blank=(self.cols.output,))
        if df.empty:
            return
        first, self.seen_rows = not self.seen_rows, True
        state = self.state
        state.rows += len(df)
        side = _sides(table, df, self.cols, state)
        keep = side.notna().to_numpy()
        state.ignored += int((~keep).sum())
        df, side = df[keep], side[keep]
        if df.empty:
            return
        positions = self._cases(table, df, long.keys(table, df, self.cols.key))
        # An auto-picked timestamp column that does not parse in the first chunk is ignored with a warning;
        # once it has parsed, a bad cell later on is an error on its line.
        notes = self.state.notes if first else None
        self._outputs(df, side, positions, long.read_columns(table, df, self.cols.optional, self.mapping, notes))

    def _cases(self, table: Table, df: pd.DataFrame, keys: pd.Series) -> list[int]:
        state, rows, positions = self.state, [], []
        category_col = self.cols.optional.get("category")
        categories = df[category_col] if category_col else [None] * len(df)
        inputs = df[self.cols.input] if self.cols.input else [None] * len(df)
        for row, key, value, category in zip(df.index, keys, inputs, categories):
            position = state.index.get(key)
            if position is None:
                position = len(state.keys)
                state.index[key] = position
                state.keys.append(key)
                for counts in state.counts.values():
                    counts.append(0)
                rows.append(self._new_case(table, int(row), key, value, category, position))
            positions.append(position)
        if rows:
            self.conn.execute(insert(Case.__table__), rows)
        return positions

    def _new_case(self, table: Table, row: int, key: str, value: Any, category: Any, position: int
                  ) -> dict[str, Any]:
        case, messages = _case_row(table, row, key, value, category, self.cols.input is not None)
        self.state.hasher.update(b"[" if position == 0 else b", ")
        self.state.hasher.update(to_json(_canonical(case, messages)).encode())
        return {**case, "id": self.first_case_id + position, "dataset_id": self.dataset_id, "position": position}

    def _outputs(self, df: pd.DataFrame, side: pd.Series, positions: list[int], values: dict[str, pd.Series]
                 ) -> None:
        state, repeats = self.state, []
        for name, position in zip(side, positions):
            counts = state.counts[name]
            repeats.append(counts[position])
            counts[position] += 1
        text = df[self.cols.output].map(lambda v: v if v is None or isinstance(v, str) else text_or_json(v))
        text = long.answered_text(text, values.get("error"))
        columns: dict[str, list] = {
            "run_id": side.map(self.run_ids).tolist(), "case_id": [self.first_case_id + p for p in positions],
            "repeat": repeats, "text": _plain(text)}
        if "error" in values:
            error = values["error"].map(lambda v: None if v is None else str(v))
            columns["error"] = _plain(error)
            columns["error_kind"] = _plain(error.where(error.isna(), "other"))
        for name in ("latency_s", "cost_usd", "prompt_tokens", "completion_tokens"):
            if name in values:
                columns[name] = _plain(values[name])
        if "logged_at" in values:
            self._track_time(values["logged_at"])
            stamps = values["logged_at"]
            columns["logged_at"] = _plain(stamps.dt.strftime(SQLITE_DATETIME))
        constant = {"attempts": 1, "created_at": self.created_at.strftime(SQLITE_DATETIME)}
        rows = [{**constant, **dict(zip(columns, row))} for row in zip(*columns.values())]
        # Datetimes are bound as text already in SQLAlchemy's SQLite storage format: its per-value
        # datetime processing was a quarter of the load time.
        as_text = {name: bindparam(name, type_=String) for name in ("created_at", "logged_at") if name in rows[0]}
        self.conn.execute(insert(Output.__table__).values(**as_text), rows)

    def _track_time(self, stamps: pd.Series) -> None:
        low, high = stamps.min(), stamps.max()
        if pd.isna(low):
            return
        state = self.state
        state.first_at = low if state.first_at is None else min(state.first_at, low)
        state.last_at = high if state.last_at is None else max(state.last_at, high)


# ---------------------------------------------------------------- the load

def _side_names(first: Table, cols: _Columns, m: LoadMapping) -> dict[str, str]:
    """The model each side is recorded under: the given values, else what the first chunk logs per role
    (a log without a model column: `serving` / `shadow`)."""
    if cols.role is None or (m.baseline and m.candidate):
        return {"baseline": m.baseline, "candidate": m.candidate}  # type: ignore[dict-item]
    probe = _State(None, None)
    df = chunk_frame(first, cols.needed())
    side = _sides(first, df, cols, probe) if not df.empty else pd.Series(dtype=object)
    names = {}
    for name, default in zip(SIDES, ("serving", "shadow")):
        seen = df.loc[side == name, cols.model].dropna().astype(str) if cols.model and not df.empty else []
        names[name] = seen.iloc[0] if len(seen) else default
    return names


def _start(session: Session, name: str, source: str, names: dict[str, str]) -> tuple[int, dict[str, int]]:
    """The recorded dataset (its hash and size are set at the end) and one recorded run per side."""
    ds_name = recorded_dataset_name(name)
    latest = session.exec(select(func.max(Dataset.version)).where(Dataset.name == ds_name)).one()[0]
    ds = Dataset(name=ds_name, version=(latest or 0) + 1, content_hash="(streaming)", source=source,
                 created_at=utcnow())
    session.add(ds)
    session.flush()
    run_ids = {}
    for side in SIDES:
        run = Run(config_id=_model_config(session, names[side]), dataset_id=ds.id, source=SOURCE_RECORDED,
                  status=STATUS_RECORDED, created_at=utcnow())
        session.add(run)
        session.flush()
        run_ids[side] = run.id
    return ds.id, run_ids


@dataclass
class _Summary:
    n_pairs: int
    baseline_only: int
    candidate_only: int
    first_unpaired_ids: list[str]
    repeats: dict[str, int]


def _summarise(source: str, state: _State, names: dict[str, str]) -> _Summary:
    if not state.keys:
        raise RecordedLoadError(source, "has no rows of the two models to pair")
    b = pd.Series(state.counts["baseline"], dtype="int64")
    c = pd.Series(state.counts["candidate"], dtype="int64")
    for side, counts in (("baseline", b), ("candidate", c)):
        if counts.sum() == 0:
            raise RecordedLoadError(source, f"has no rows of the {side} ('{names[side]}')", field=side)
    n_pairs = int(pd.concat([b, c], axis=1).min(axis=1).sum())
    if n_pairs == 0:
        raise RecordedLoadError(source, f"no pairs: no request has rows from both '{names['baseline']}' and "
                                        f"'{names['candidate']}' (check the request key)")
    unpaired = (b != c).to_numpy().nonzero()[0][:MAX_UNPAIRED_IDS]
    return _Summary(n_pairs, int((b - c).clip(lower=0).sum()), int((c - b).clip(lower=0).sum()),
                    [state.keys[i] for i in unpaired], {"baseline": int(b.max()), "candidate": int(c.max())})


def _warnings(state: _State, names: dict[str, str], cols: _Columns) -> list[str]:
    out = list(state.notes)
    if cols.input is None:
        out.append(long.NO_INPUT_WARNING)
    if state.ignored:
        out.append(f"ignored {state.ignored} rows of other models")
    for side in SIDES:
        extra = sorted(state.models[side] - {names[side]})
        if extra:
            out.append(f"rows logged as {side} also name other models ({', '.join(extra)}); all are recorded "
                       f"as '{names[side]}'")
    if state.first_at is None:
        out.append("no timestamp column: outputs have no logged_at")
    return out


def _finish(session: Session, name: str, source: str, system: str, dataset_id: int, run_ids: dict[str, int],
            state: _State, summary: _Summary, report: dict[str, Any]) -> None:
    conn = session.connection()
    state.hasher.update(b"]")
    conn.execute(update(Dataset.__table__).where(Dataset.__table__.c.id == dataset_id)
                 .values(content_hash=state.hasher.hexdigest(), n_cases=len(state.keys)))
    for side, run_id in run_ids.items():
        conn.execute(update(Run.__table__).where(Run.__table__.c.id == run_id)
                     .values(repeats=max(1, summary.repeats[side])))
    session.add(Comparison(name=name, baseline_run_id=run_ids["baseline"], candidate_run_id=run_ids["candidate"],
                           system=system, source=FORMAT, notes_json=to_json(report), created_at=utcnow()))
    record_event(session, "comparison_loaded", {"comparison": name, "fmt": FORMAT, "source": source,
                                                "n_outputs": 2 * summary.n_pairs + summary.baseline_only
                                                + summary.candidate_only, "dataset_id": dataset_id})


def load_shadow(engine: Engine, raw: IO[bytes], filename: str, name: str, mapping: LoadMapping,
                system: str = "default", chunk_rows: int = CHUNK_ROWS,
                progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Stream a shadow log into a new comparison; returns the load report (see `lib.data.loaders.LoadResult`).

    One transaction: any bad line raises RecordedLoadError (naming file, line and field) and nothing
    is written. `progress(rows_read)` is called after each chunk.
    """
    if mapping.match is not None or mapping.pattern is not None:
        raise RecordedLoadError(filename, "traffic has no expected answers: set a match rule when reviewing "
                                          "(`./review report NAME --match RULE`), not when loading", field="match")
    reader = HashingReader(raw)
    tables = iter_tables(io.BufferedReader(reader), filename, RecordedLoadError, chunk_rows)
    first = next(tables)
    cols = _resolve(first, mapping)
    if cols.input is None and mapping.review is not None and mapping.review.input_token_limit:
        first.fail_header("has no input column, so the input token limit cannot be checked; name the input "
                          "column (--input-col) or drop --input-token-limit", field="input_token_limit")
    names = _side_names(first, cols, mapping)
    state = _State(names["baseline"], names["candidate"])
    with session_scope(engine) as session:
        dataset_id, run_ids = _start(session, name, filename, names)
        writer = _Writer(session.connection(), dataset_id, run_ids, cols, state, mapping)
        for table in _chain(first, tables):
            writer.chunk(table)
            if progress is not None:
                progress(state.rows)
        summary = _summarise(filename, state, names)
        report = {"format": FORMAT, "file": filename, "sha256": reader.sha256.hexdigest(), "traffic": True,
                  "has_input": cols.input is not None,
                  "baseline": names["baseline"],
                  "candidate": names["candidate"], "n_pairs": summary.n_pairs, "rows": state.rows,
                  "baseline_only": summary.baseline_only, "candidate_only": summary.candidate_only,
                  "first_unpaired_ids": summary.first_unpaired_ids, "warnings": _warnings(state, names, cols),
                  "first_logged_at": state.first_at.isoformat() if state.first_at is not None else None,
                  "last_logged_at": state.last_at.isoformat() if state.last_at is not None else None}
        _finish(session, name, filename, system, dataset_id, run_ids, state, summary, report)
    return report


def _chain(first: Table, rest: Iterator[Table]) -> Iterator[Table]:
    yield first
    yield from rest
