"""The common in-memory shape of a recorded comparison, how outputs are paired, and how it is written.

Every loader reduces its file to one "long" frame (one row per output: key, side, ...) and calls
`assemble`, so pairing, repeats and the unpaired-row report behave the same for every format.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Column
from sqlalchemy.engine import Dialect, Engine
from sqlmodel import Session, select

from lib.data.fields import RULES_NEEDING_EXPECTED, InvalidField, check_rule, coerce_input, scalar_text, text_or_json
from lib.data.golden import CASE_FIELDS, CaseRecord, save_cases
from lib.data.tables import Table
from lib.errors import RecordedLoadError
from lib.review.constants import SIDES
from lib.run.redact import scrubber
from lib.run.runner import ModelSpec, config_row
from lib.store.audit import record_event
from lib.store.columns import to_json, utcnow
from lib.store.engine import session_scope
from lib.store.entities import SOURCE_RECORDED, STATUS_RECORDED, Case, Comparison, ModelConfig, Output, Run

CASE_COLUMNS = ("input", "expected", "match", "pattern", "category", "metadata")
OUTPUT_COLUMNS = ("text", "error", "latency_s", "cost_usd", "prompt_tokens", "completion_tokens", "logged_at")
MAX_UNPAIRED_IDS = 10
INSERT_BATCH = 20_000  # output rows per executemany: the tuples of 100k outputs are never all held at once


@dataclass
class Recorded:
    """A parsed recorded comparison, ready to store."""

    cases: list[CaseRecord]
    outputs: pd.DataFrame  # position (index into cases), side, repeat, then OUTPUT_COLUMNS
    baseline: str
    candidate: str
    n_pairs: int
    baseline_only: int
    candidate_only: int
    first_unpaired_ids: list[str]
    warnings: list[str]
    notes: list[str] = field(default_factory=list)  # what was applied by default, said out loud
    has_input: bool = True  # False: a log without an input column (checks needing the input are skipped)


# ---------------------------------------------------------------- choosing sides and rules

def choose_models(source: str, values: list[str], baseline: str | None, candidate: str | None, *,
                  what: str, auto_order: bool) -> tuple[str, str, list[str]]:
    """(baseline, candidate, warnings) among the distinct model values of a file (in file order).

    With `auto_order`, exactly two values and no choice take the order of first appearance.
    """
    listed = ", ".join(f"'{v}'" for v in values)
    for flag, value in (("baseline", baseline), ("candidate", candidate)):
        if value is not None and value not in values:
            raise RecordedLoadError(source, f"is '{value}', which is not among the {what}: {listed}", field=flag)
    if baseline is not None and baseline == candidate:
        raise RecordedLoadError(source, f"is the same as the baseline ('{baseline}')", field="candidate")
    if len(values) < 2:
        raise RecordedLoadError(source, f"needs two models to compare; the {what} are only: {listed}")
    if baseline is None and candidate is None:
        if len(values) == 2 and auto_order:
            note = (f"baseline = '{values[0]}', candidate = '{values[1]}' (order of first appearance; "
                    "pass --baseline/--candidate to choose)")
            return values[0], values[1], [note]
        raise RecordedLoadError(source, f"which is the baseline and which the candidate? the {what} are: "
                                        f"{listed}; pass --baseline and --candidate")
    if baseline is None or candidate is None:
        rest = [v for v in values if v not in (baseline, candidate)]
        if len(rest) != 1:
            missing = "baseline" if baseline is None else "candidate"
            raise RecordedLoadError(source, f"pass --{missing} too; the {what} are: {listed}")
        baseline, candidate = baseline or rest[0], candidate or rest[0]
    ignored = [v for v in values if v not in (baseline, candidate)]
    return baseline, candidate, [f"ignored rows of other {what}: {', '.join(ignored)}"] if ignored else []


def mapping_rule(source: str, match: str | None, pattern: str | None) -> tuple[str | None, str | None] | None:
    """The one rule a load applies to every case, validated; None when none was given."""
    if match is None and pattern is None:
        return None
    try:
        return check_rule(match, pattern, None, needs_expected=False)
    except InvalidField as exc:
        raise RecordedLoadError(source, exc.message, field=exc.field) from None


# ---------------------------------------------------------------- pairing

def assemble(frame: pd.DataFrame, table: Table, baseline: str, candidate: str,
             rule: tuple[str | None, str | None] | None, warnings: list[str], *, has_input: bool = True) -> Recorded:
    """Pair a long frame (key, side, row, case columns, output columns) into a Recorded.

    Rows repeating a (key, side) are repeats, numbered in file order; a (key, repeat) with one side
    only is unpaired: kept (the missing side shows as nulls) and reported. Without `has_input` (a log
    with no input column) every case's input is empty.
    """
    frame = frame.reset_index(drop=True)
    for column in CASE_COLUMNS + OUTPUT_COLUMNS:
        if column not in frame:
            frame[column] = None
    frame["repeat"] = frame.groupby(["key", "side"], sort=False).cumcount()
    paired = frame.groupby(["key", "repeat"], sort=False)["side"].transform("size").to_numpy() == 2
    n_pairs = int(paired.sum()) // 2
    if n_pairs == 0:
        raise RecordedLoadError(table.source, f"no pairs: no case has outputs from both '{baseline}' "
                                              f"and '{candidate}' (check the join key and model values)")
    unpaired = frame.loc[~paired]
    cases, case_warnings = _cases(frame, table, rule, has_input)
    position = {case.key: i for i, case in enumerate(cases)}
    outputs = frame[["side", "repeat", *OUTPUT_COLUMNS]].assign(position=frame["key"].map(position))
    return Recorded(
        cases=cases, outputs=outputs, baseline=baseline, candidate=candidate, n_pairs=n_pairs,
        baseline_only=int((unpaired["side"] == "baseline").sum()),
        candidate_only=int((unpaired["side"] == "candidate").sum()),
        first_unpaired_ids=unpaired["key"].drop_duplicates().head(MAX_UNPAIRED_IDS).tolist(),
        warnings=warnings + case_warnings, has_input=has_input)


def _cases(frame: pd.DataFrame, table: Table, rule: tuple[str | None, str | None] | None, has_input: bool
           ) -> tuple[list[CaseRecord], list[str]]:
    """One case per key in order of first appearance; each field from the first row that has it."""
    firsts = frame.groupby("key", sort=False)[["row", *CASE_COLUMNS]].first()
    firsts = firsts.astype(object).where(firsts.notna(), None)
    cases, lacking = [], 0
    for key, r in zip(firsts.index, firsts.itertuples(index=False)):
        try:
            value = r.input
            if not has_input:
                input_text, messages = "", None
            elif type(value) is str and value.strip() and not value.lstrip().startswith("["):
                input_text, messages = value, None  # a plain prompt, as coerce_input returns it
            else:
                input_text, messages = coerce_input(value, objects=True)
            expected = text_or_json(r.expected)
            category = scalar_text(r.category, "category")
        except InvalidField as exc:
            table.fail(int(r.row), exc.message, field=exc.field)
        match, pattern = rule or (r.match, r.pattern)
        if rule and match in RULES_NEEDING_EXPECTED and expected is None:
            match, pattern, lacking = None, None, lacking + 1
        cases.append(CaseRecord(key=key, input_text=input_text, messages=messages, expected=expected,
                                match=match, pattern=pattern, category=category, metadata=r.metadata))
    warnings = [f"{lacking} cases have no expected value: match rule '{rule[0]}' not applied to them"
                ] if lacking else []
    inputs = frame["input"]
    as_text = inputs if all(type(v) is str for v in inputs) else inputs.map(
        lambda v: v if isinstance(v, str) or v is None else to_json(v))
    differing = int((as_text.groupby(frame["key"]).nunique() > 1).sum())
    if differing:
        warnings.append(f"{differing} cases have rows with different inputs; each case keeps its first")
    return cases, warnings


# ---------------------------------------------------------------- writing

def recorded_dataset_name(comparison: str) -> str:
    return f"{comparison} (recorded)"


def comparison_exists(engine: Engine, name: str) -> bool:
    with Session(engine) as session:
        return session.exec(select(Comparison.id).where(Comparison.name == name)).first() is not None


@dataclass
class OutputValues:
    """A comparison's outputs as they are inserted, and what their checks read, known before the write."""

    columns: dict[str, list]  # output column -> values in `Recorded.outputs` order (no run or case ids)
    # side -> the values its checks read (lib.review.checked's `written_outputs`) as SQLite returns them,
    # output and case ids still placeholders (row numbers, case positions) until `store_recorded` sets them;
    # empty when a value is of a kind the store would convert (the checks then read the outputs back)
    checks: dict[str, dict[str, np.ndarray]]


@dataclass
class StoredRecorded:
    run_ids: dict[str, int]  # side -> its recorded run
    written: dict[int, dict[str, np.ndarray]]  # run id -> its `OutputValues.checks`, stored ids set ({}: none)


def output_values(rec: Recorded) -> OutputValues:
    columns = _output_columns(rec.outputs)
    return OutputValues(columns, _check_values(rec, columns))


def store_recorded(engine: Engine, rec: Recorded, *, name: str, source: str, fmt: str, system: str,
                   report: dict[str, Any], values: OutputValues | None = None) -> StoredRecorded:
    """Dataset, model configs, two recorded runs, outputs and the comparison, in one transaction.
    Returns each run's outputs as stored, for the checks of the same load (`values`: `output_values(rec)`)."""
    values = values or output_values(rec)
    with session_scope(engine) as session:
        # Its own dataset name, so a recorded file never becomes a new version of a golden dataset.
        ds, _ = save_cases(session, recorded_dataset_name(name), source, rec.cases)
        case_ids = dict(session.exec(select(Case.position, Case.id).where(Case.dataset_id == ds.id)).all())
        run_ids = {side: _recorded_run(session, model, ds.id, rec.outputs, side)
                   for side, model in zip(SIDES, (rec.baseline, rec.candidate))}
        conn = session.connection()
        sql, made = _output_rows(rec.outputs, values.columns, case_ids, run_ids, conn.dialect)
        rows = iter(made)
        while batch := list(islice(rows, INSERT_BATCH)):  # in order: the ids follow the rows
            conn.exec_driver_sql(sql, batch)
        del made, rows, batch
        # The rows' ids, in the order they were inserted (the runs are this transaction's own).
        ids = [i for (i,) in conn.exec_driver_sql("SELECT id FROM output WHERE run_id IN (?, ?) ORDER BY id",
                                                  tuple(run_ids.values())).fetchall()]
        session.add(Comparison(name=name, baseline_run_id=run_ids["baseline"],
                               candidate_run_id=run_ids["candidate"], system=system, source=fmt,
                               notes_json=to_json(report), created_at=utcnow()))
        record_event(session, "comparison_loaded", {"comparison": name, "fmt": fmt, "source": source,
                                                    "n_outputs": len(rec.outputs), "dataset_id": ds.id})
    return StoredRecorded(run_ids, _with_ids(rec, values.checks, ids, case_ids, run_ids))


_REAL = ("latency_s", "cost_usd")  # FLOAT columns: SQLite keeps an integer given to them as a REAL


def _object_column(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)  # element by element: never a 2-D array of lists
    out[:] = values
    return out


def _check_values(rec: Recorded, columns: dict[str, list]) -> dict[str, dict[str, np.ndarray]]:
    """side -> the values of its outputs and their cases as SQLite will return them (lib.review.checked's
    `written_outputs`), ids placeholders; empty when a value is of a kind the store would convert."""
    n = len(rec.outputs)
    if any(v is not None and type(v) is not str for c in ("text", "error") for v in columns[c]):
        return {}
    nulls = _object_column([None] * n)
    positions = rec.outputs["position"].to_numpy(dtype=np.int64)
    cases = list(zip(*(c.values(0, i) for i, c in enumerate(rec.cases))))  # CASE_FIELDS order, per field
    values: dict[str, np.ndarray] = {
        "output_id": _object_column(list(range(n))), "case_id": _object_column(positions.tolist()),
        "repeat": _object_column(columns["repeat"]), "finish_reason": nulls,
        **{c: _object_column(columns[c]) for c in ("text", "completion_tokens", "error")},
        **{c: _object_column([None if v is None else float(v) for v in columns[c]]) for c in _REAL},
        **{f: _object_column(list(cases[CASE_FIELDS.index(f)]))[positions] for f in
           ("case_key", "position", "expected", "match", "pattern", "json_schema", "category", "metadata_json",
            "input_text")},
    }
    sides = rec.outputs["side"].to_numpy()
    return {side: {k: v[sides == side] for k, v in values.items()} for side in dict.fromkeys(sides)}


def _with_ids(rec: Recorded, checks: dict[str, dict[str, np.ndarray]], ids: list[int],
              case_ids: dict[int, int | None], run_ids: dict[str, int]) -> dict[int, dict[str, np.ndarray]]:
    """run id -> `checks` of its side with the ids the store gave (in insertion order: `rec.outputs` order)."""
    if not checks or len(ids) != len(rec.outputs):
        return {}
    sides, stored = rec.outputs["side"].to_numpy(), np.asarray(ids, dtype=object)
    written = {}
    for side, values in checks.items():
        values = {**values, "output_id": stored[sides == side],
                  "case_id": _object_column([case_ids[p] for p in values["position"].tolist()])}
        written[run_ids[side]] = values
    return written


def recorded_config_row(model: str) -> dict[str, Any]:
    """A recorded side knows only its model value: the same row (and hash) as a live run of that model
    with every parameter left at the provider's default."""
    return config_row(ModelSpec(model))


def _model_config(session: Session, model: str) -> int:
    row = recorded_config_row(model)
    found = session.exec(select(ModelConfig.id).where(ModelConfig.config_hash == row["config_hash"])).first()
    if found is not None:
        return found
    cfg = ModelConfig(**row, created_at=utcnow())
    session.add(cfg)
    session.flush()
    return cfg.id


def _recorded_run(session: Session, model: str, dataset_id: int, outputs: pd.DataFrame, side: str) -> int:
    repeats = int(outputs.loc[outputs["side"] == side, "repeat"].max()) + 1
    run = Run(config_id=_model_config(session, model), dataset_id=dataset_id, source=SOURCE_RECORDED,
              status=STATUS_RECORDED, repeats=repeats, created_at=utcnow())
    session.add(run)
    session.flush()
    return run.id


def _values(series: pd.Series) -> list:
    """Plain Python values with None for nulls (never NaN, NA or NaT)."""
    return series.astype(object).where(series.notna(), None).tolist()


_OUTPUTS = Output.__table__  # type: ignore[attr-defined]  # SQLModel declares it at runtime


def _bind(column: Column, dialect: Dialect) -> Callable[[Any], Any]:
    """The column type's conversion of a Python value to what the driver stores (datetimes -> text)."""
    return column.type.dialect_impl(dialect).bind_processor(dialect) or (lambda value: value)


def _output_columns(outputs: pd.DataFrame) -> dict[str, list]:
    """Every output column's values as plain Python values (run and case ids aside), built column-wise (this
    runs on 100k-row logs); timestamps as datetimes."""
    error = outputs["error"].map(scrubber(), na_action="ignore")  # a logged provider error may echo a key
    logged_at = pd.to_datetime(outputs["logged_at"], utc=True)
    return {
        "repeat": _values(outputs["repeat"]), "text": _values(outputs["text"]), "error": _values(error),
        "error_kind": _values(error.where(error.isna(), "other")),
        "latency_s": _values(pd.to_numeric(outputs["latency_s"])),
        "cost_usd": _values(pd.to_numeric(outputs["cost_usd"])),
        "prompt_tokens": _values(pd.to_numeric(outputs["prompt_tokens"]).astype("Int64")),
        "completion_tokens": _values(pd.to_numeric(outputs["completion_tokens"]).astype("Int64")),
        "logged_at": np.where(logged_at.notna(), logged_at.array.to_pydatetime(), None).tolist(),
    }


def _output_rows(outputs: pd.DataFrame, every: dict[str, list], case_ids: dict[int, int | None],
                 run_ids: dict[str, int], dialect: Dialect) -> tuple[str, Iterator[tuple]]:
    """The INSERT and its rows (tuples for the driver's executemany, made as they are inserted) from
    `_output_columns`' values; timestamps converted by the columns' own types, as SQLAlchemy would."""
    columns = {"run_id": _values(outputs["side"].map(run_ids)), "case_id": _values(outputs["position"].map(case_ids)),
               **every}
    # Columns null in every row are left out: fewer bound parameters per row (the insert's cost).
    columns = {name: values for name, values in columns.items() if any(v is not None for v in values)}
    if "logged_at" in columns:
        stamp = _bind(_OUTPUTS.c.logged_at, dialect)
        columns["logged_at"] = [None if v is None else stamp(v) for v in columns["logged_at"]]
    constant = {"attempts": 1, "created_at": _bind(_OUTPUTS.c.created_at, dialect)(utcnow())}
    names = [*constant, *columns]
    sql = f"INSERT INTO output ({', '.join(names)}) VALUES ({', '.join(['?'] * len(names))})"
    head = tuple(constant.values())
    return sql, (head + row for row in zip(*columns.values()))
