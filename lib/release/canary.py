"""Canary checks: a policy's pre-declared `[canary]` rollback triggers against a live-traffic log.

The log is the long shape, one row per call: the arm (`arm` column: control / canary, or a model
column with the two model values), the output, and optionally latency, error, a judge score, a JSON
Schema and a timestamp (needed for `--since`). It is streamed (`lib.data.loaders.stream`), so a day of
traffic never sits in memory: per arm only counts and the latency / score columns are kept.

Per arm: `error_rate` (rows with an error / rows), `refusal_rate` (refusals / answered rows: rows
without an error and with an output), `json_valid_rate` (strictly valid / answered rows with a schema),
`latency_p95_s` (over rows with a latency) and `judge_score` (mean over rows with a score). The arms
are different requests, so the statistics are unpaired (`lib.release.canary_stats`).

Each threshold of a trigger is judged like the gate, at the policy's alpha:
- `max_increase` / `max_decrease` bound the canary-minus-control delta: the trigger FIRES when the CI
  of the delta lies wholly beyond the margin on the bad side, is CLEAR when wholly on the good side,
  and WATCHING otherwise; `min` / `max` bound the canary's own value (its CI) the same way.
- a metric the log cannot give (no judge score column, no schema, no applicable row in an arm) is
  "no data": it never fires and never clears.

Decision: **wait** (exit 3) while either arm has fewer than `min_samples` rows in the window, or when
no trigger has data; else **rollback** (exit 1) when any trigger fires; else **continue** (exit 0).
A trigger that would fire before `min_samples` is reported (`would_fire`) but does not decide: the
sample size was declared in advance to stop early looks from deciding. Every check is an audit event
(`canary_checked`) holding the policy version and hash, the log's sha256 and the result. Repeated
checks of a running canary are repeated looks: each is at the policy's alpha, and the margins (a CI
wholly beyond a margin, not merely beyond zero) are what keeps false rollbacks rare.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session

from lib.data.fields import text_or_json
from lib.data.loaders import long
from lib.data.loaders.stream import HashingReader, chunk_frame, iter_tables
from lib.data.tables import Table
from lib.errors import FileInputError, ReviewInputError
from lib.governance.policy import CanarySpec, Trigger, get_policy, stored_spec
from lib.release import canary_stats
from lib.review.checks.refusal import RefusalDetector
from lib.review.checks.structured import json_validity, schema_validator
from lib.review.stats import t_mean_ci, wilson
from lib.store.audit import as_utc, event_payload, list_events, record_event
from lib.store.engine import session_scope

ARMS = ("control", "canary")
ARM_COLS = ("arm", "variant", "group", "cohort")
CONTROL_VALUES = frozenset({"control", "baseline", "stable", "primary"})
CANARY_VALUES = frozenset({"canary", "candidate"})
JUDGE_COLS = ("judge_score", "score")
SCHEMA_COLS = ("schema",)
ERROR_COLS = ("error", "error_message")
CONTINUE, ROLLBACK, WAIT = "continue", "rollback", "wait"
EXIT_CODES = {CONTINUE: 0, ROLLBACK: 1, WAIT: 3}
FIRE, CLEAR, WATCHING, NO_DATA = "fire", "clear", "watching", "no data"
# threshold key -> (judged on the delta?, bad when above the bound?)
_RULES = {"max_increase": (True, True), "max_decrease": (True, False), "min": (False, False), "max": (False, True)}


class CanaryLogError(FileInputError):
    """A canary log cannot be read: names the file, the line and the column."""


class CanaryInputError(ReviewInputError):
    """Bad canary flags or a policy without a [canary] section."""


@dataclass
class CanaryMapping:
    """Log columns (None: the default names, or absent) and arm values."""

    arm_col: str | None = None
    control: str | None = None  # the control's value in the arm (or model) column
    canary: str | None = None
    model_col: str | None = None  # instead of an arm column: the two model values name the arms
    output_col: str | None = None
    latency_col: str | None = None
    error_col: str | None = None
    judge_col: str | None = None
    schema_col: str | None = None
    timestamp_col: str | None = None
    schema: str | None = None  # one JSON Schema (text) for rows without their own
    refusal_patterns: tuple[str, ...] = ()


@dataclass
class _Columns:
    output: str
    arm: str | None
    model: str | None
    latency: str | None
    error: str | None
    judge: str | None
    schema: str | None
    timestamp: str | None

    def needed(self) -> list[str]:
        return [c for c in asdict(self).values() if c is not None]


@dataclass
class _Arm:
    """What is kept per arm while the log streams by."""

    n: int = 0
    errored: int = 0
    answered: int = 0
    refused: int = 0
    with_schema: int = 0
    schema_valid: int = 0
    latency: list[np.ndarray] = field(default_factory=list)
    judge: list[np.ndarray] = field(default_factory=list)


@dataclass
class _Window:
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    ignored: int = 0  # rows of other models, or before --since

    def track(self, stamps: pd.Series) -> None:
        low, high = stamps.min(), stamps.max()
        if pd.isna(low):
            return
        self.first = low if self.first is None else min(self.first, low)
        self.last = high if self.last is None else max(self.last, high)


@dataclass
class TriggerResult:
    metric: str
    threshold: str  # max_increase | max_decrease | min | max
    margin: float
    status: str  # fire | clear | watching | no data
    reason: str
    observed: float | None = None  # the delta for delta thresholds, else the canary's value
    ci: tuple[float, float] | None = None


@dataclass
class CanaryCheck:
    policy_name: str
    policy_version: int
    policy_hash: str
    policy_locked_at: str
    post_hoc: bool  # the policy was locked after the window's first logged call
    log: str
    log_sha256: str
    since: str | None
    window_first: str | None
    window_last: str | None
    alpha: float
    min_samples: int
    n: dict[str, int]
    traffic_share: dict[str, Any]
    decision: str
    metrics: dict[str, Any]
    triggers: list[TriggerResult]
    notes: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.decision]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


# ---------------------------------------------------------------- reading the log

def _resolve(table: Table, m: CanaryMapping) -> _Columns:
    pick = long.pick
    arm = pick(table, m.arm_col, ARM_COLS, "arm")
    model = pick(table, m.model_col, long.MODEL_COLS, "model") if arm is None or m.model_col else None
    if m.model_col:
        arm = None
    if arm is None:
        long.require(table, model, ARM_COLS + long.MODEL_COLS, "arm", "--arm-col or --model-col")
        if m.control is None or m.canary is None:
            table.fail_header("without an arm column, pass --control and --canary (the two model values)",
                              field="arm")
    return _Columns(
        output=long.require(table, pick(table, m.output_col, long.OUTPUT_COLS, "output"), long.OUTPUT_COLS,
                            "output", "--output-col"),
        arm=arm, model=model, latency=pick(table, m.latency_col, long.LATENCY_COLS, "latency"),
        error=pick(table, m.error_col, ERROR_COLS, "error"), judge=pick(table, m.judge_col, JUDGE_COLS, "judge"),
        schema=pick(table, m.schema_col, SCHEMA_COLS, "schema"),
        timestamp=pick(table, m.timestamp_col, long.TIMESTAMP_COLS, "timestamp"))


def _arms(table: Table, df: pd.DataFrame, cols: _Columns, m: CanaryMapping) -> pd.Series:
    """control | canary | None (another model) per row; an unknown arm value is an error."""
    if cols.arm is None:
        return df[cols.model].map({m.control: "control", m.canary: "canary"})
    control = {m.control} if m.control else CONTROL_VALUES
    canary = {m.canary} if m.canary else CANARY_VALUES
    values = df[cols.arm].map(lambda v: None if v is None else str(v).strip())
    folded = values if (m.control or m.canary) else values.str.lower()
    arms = folded.map(lambda v: "control" if v in control else "canary" if v in canary else None)
    bad = arms.isna().to_numpy()
    if bad.any():
        row = int(bad.argmax())
        table.fail(row, f"is '{df[cols.arm].iloc[row]}': expected {' or '.join(sorted(control | canary))}",
                   field=cols.arm)
    return arms


def _accumulate(table: Table, cols: _Columns, m: CanaryMapping, since: pd.Timestamp | None,
                detector: RefusalDetector, arms: dict[str, _Arm], window: _Window) -> None:
    df = chunk_frame(table, cols.needed(), keep_blank=(cols.output,))
    if df.empty:
        return
    arm = _arms(table, df, cols, m)
    keep = arm.notna()
    if cols.timestamp:
        stamps = long.timestamps(table, df, cols.timestamp)
        if since is not None:
            keep &= stamps.ge(since).fillna(False)
        window.track(stamps[keep])
    window.ignored += int((~keep).sum())
    df, arm = df[keep], arm[keep]
    text = df[cols.output].map(lambda v: v if v is None or isinstance(v, str) else text_or_json(v))
    errored = df[cols.error].notna() if cols.error else pd.Series(False, index=df.index)
    answered = ~errored & text.notna()
    refused = detector.flags(text.where(answered, None)).fillna(False).astype(bool)
    schemas = df[cols.schema].map(text_or_json) if cols.schema else pd.Series([None] * len(df), index=df.index,
                                                                              dtype=object)
    if m.schema is not None:
        schemas = schemas.where(schemas.notna(), m.schema)
    valid = json_validity(text.where(answered, None), schemas)["strict"]
    latency = long.seconds(table, df, cols.latency) if cols.latency else None
    judge = long.numbers(table, df, cols.judge) if cols.judge else None
    for name in ARMS:
        rows = (arm == name).to_numpy()
        acc = arms[name]
        acc.n += int(rows.sum())
        acc.errored += int(errored[rows].sum())
        acc.answered += int(answered[rows].sum())
        acc.refused += int(refused[rows].sum())
        acc.with_schema += int(valid[rows].notna().sum())
        acc.schema_valid += int(valid[rows].fillna(False).sum())
        for values, into in ((latency, acc.latency), (judge, acc.judge)):
            if values is not None:
                picked = values[rows].to_numpy(dtype=float)
                into.append(picked[np.isfinite(picked)])


def read_log(raw: IO[bytes], filename: str, m: CanaryMapping, since: pd.Timestamp | None
             ) -> tuple[dict[str, _Arm], _Window, _Columns, str]:
    """Per-arm accumulators, the window, the columns used and the log's sha256."""
    reader = HashingReader(raw)
    tables = iter_tables(io.BufferedReader(reader), filename, CanaryLogError)
    first = next(tables)
    cols = _resolve(first, m)
    if since is not None and cols.timestamp is None:
        first.fail_header("has no timestamp column, which --since needs (pass --timestamp-col)", field="timestamp")
    detector = RefusalDetector(m.refusal_patterns)
    arms, window = {name: _Arm() for name in ARMS}, _Window()
    for table in _chain(first, tables):
        _accumulate(table, cols, m, since, detector, arms, window)
    return arms, window, cols, reader.sha256.hexdigest()


def _chain(first: Table, rest: Iterator[Table]) -> Iterator[Table]:
    yield first
    yield from rest


def log_dir() -> Path:
    """Where the page may read logs by path: $REVIEW_LOG_DIR, else `logs/` under the working directory."""
    return Path(os.environ.get("REVIEW_LOG_DIR") or Path.cwd() / "logs").expanduser().resolve()


MAX_LOG_PATH_CHARS = 1024


def resolve_log_path(text: str, root: Path | None = None) -> Path:
    """A log file named by a user, relative to (or inside) `root`. Anything else gets one generic message,
    so the answer never tells whether a path outside `root` exists (the page's users are not the server's)."""
    shown = text if len(text) <= 300 else text[:40] + "..." + text[-40:]  # a long path still ends with its file
    if "\x00" in text or len(text) > MAX_LOG_PATH_CHARS:  # the OS would raise ValueError / ENAMETOOLONG
        raise CanaryInputError(f"no log file '{shown.replace(chr(0), '?')}' in the log directory (a path is "
                               f"at most {MAX_LOG_PATH_CHARS} characters, without NUL bytes)")
    root = (root or log_dir()).resolve()
    try:
        file = (root / Path(text).expanduser()).resolve()  # an absolute `text` replaces root; symlinks followed
        if not file.is_relative_to(root) or not file.exists():
            raise CanaryInputError(f"no log file '{shown}' in the log directory")
    except (OSError, ValueError, RuntimeError):  # a component too long, a symlink loop, "~nouser"
        raise CanaryInputError(f"no log file '{shown}' in the log directory") from None
    if file.is_dir():
        raise CanaryInputError(f"'{text}' is a directory: name a log file in it")
    if not file.is_file():
        raise CanaryInputError(f"no log file '{text}' in the log directory")
    return file


def parse_since(text: str | None) -> pd.Timestamp | None:
    """ISO 8601 (naive means UTC) as a UTC timestamp."""
    if text is None or not text.strip():
        return None
    try:
        stamp = pd.Timestamp(text.strip())
    except ValueError:
        raise CanaryInputError(f"--since '{text}' is not an ISO 8601 timestamp (e.g. 2025-06-01T12:00:00Z)") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# ---------------------------------------------------------------- metrics and triggers

def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0)


def arm_metrics(arms: dict[str, _Arm], alpha: float) -> dict[str, Any]:
    """Every metric the log gives, control vs canary (absent: no data)."""
    c0, c1 = arms["control"], arms["canary"]
    rate = canary_stats.rate_difference
    out = {"error_rate": rate(c0.errored, c0.n, c1.errored, c1.n, alpha),
           "refusal_rate": rate(c0.refused, c0.answered, c1.refused, c1.answered, alpha),
           "json_valid_rate": rate(c0.schema_valid, c0.with_schema, c1.schema_valid, c1.with_schema, alpha),
           "latency_p95_s": canary_stats.quantile_difference(_concat(c0.latency), _concat(c1.latency), alpha),
           "judge_score": canary_stats.mean_difference(_concat(c0.judge), _concat(c1.judge), alpha)}
    if out["judge_score"] is not None:  # each arm's own CI beside its value, as for the other metrics
        out["judge_score"]["control_ci"] = list(t_mean_ci(_concat(c0.judge), alpha))
    return {k: v for k, v in out.items() if v is not None}


def _no_data_reason(metric: str, cols: _Columns) -> str:
    if metric == "judge_score" and cols.judge is None:
        return "no data: the log has no judge score column (judge_score / score, or --judge-col)"
    if metric == "json_valid_rate" and cols.schema is None:
        return "no data: no JSON Schema (a schema column, or --schema FILE)"
    if metric == "latency_p95_s" and cols.latency is None:
        return "no data: the log has no latency column"
    return "no data: an arm has no applicable row in the window"


def _status(lo: float, hi: float, bound: float, bad_above: bool) -> str:
    if bad_above:
        return FIRE if lo > bound else CLEAR if hi <= bound else WATCHING
    return FIRE if hi < bound else CLEAR if lo >= bound else WATCHING


def judge_trigger(trigger: Trigger, key: str, m: dict[str, Any] | None, cols: _Columns) -> TriggerResult:
    margin = trigger.thresholds[key]
    if m is None:
        return TriggerResult(trigger.metric, key, margin, NO_DATA, _no_data_reason(trigger.metric, cols))
    on_delta, bad_above = _RULES[key]
    bound = -margin if key == "max_decrease" else margin
    observed = m["delta"] if on_delta else m["canary"]
    lo, hi = (m["ci_low"], m["ci_high"]) if on_delta else m["canary_ci"]
    status = _status(lo, hi, bound, bad_above)
    what = "CI of canary - control" if on_delta else "canary's CI"
    side = {FIRE: "wholly beyond", CLEAR: "wholly within", WATCHING: "straddles"}[status]
    return TriggerResult(trigger.metric, key, margin, status, f"{what} [{lo:.4g}, {hi:.4g}] {side} {bound:.4g}",
                         float(observed), (float(lo), float(hi)))


def decide(spec: CanarySpec, n: dict[str, int], results: list[TriggerResult]) -> tuple[str, list[str]]:
    """The decision and notes (see the module docstring)."""
    short = [arm for arm in ARMS if n[arm] < spec.min_samples]
    if short:
        fired = [r.metric for r in results if r.status == FIRE]
        notes = [f"{' and '.join(short)} below min_samples {spec.min_samples} "
                 f"(control {n['control']}, canary {n['canary']})"]
        if fired:
            notes.append(f"would fire once min_samples is reached: {', '.join(sorted(set(fired)))}")
        return WAIT, notes
    if all(r.status == NO_DATA for r in results):
        return WAIT, ["no trigger has data in this log"]
    if any(r.status == FIRE for r in results):
        return ROLLBACK, [f"fired: {', '.join(sorted({r.metric for r in results if r.status == FIRE}))}"]
    return CONTINUE, []


def _share(spec: CanarySpec, n: dict[str, int], alpha: float) -> dict[str, Any]:
    total = n["control"] + n["canary"]
    out: dict[str, Any] = {"declared": spec.traffic_share, "observed": n["canary"] / total if total else None}
    if total:
        out["ci"] = list(wilson(n["canary"], total, alpha))
        declared = spec.traffic_share
        out["matches_declared"] = None if declared is None else out["ci"][0] <= declared <= out["ci"][1]
    return out


# ---------------------------------------------------------------- the check

def check_canary(engine: Engine, raw: IO[bytes], filename: str, policy_name: str, mapping: CanaryMapping,
                 *, since: str | None = None, version: int | None = None, actor: str | None = None) -> CanaryCheck:
    """Evaluate the policy's canary triggers on the log's window and record the check (audit event)."""
    since_at = parse_since(since)
    with Session(engine) as session:
        policy = get_policy(session, policy_name, version)
    spec = stored_spec(policy)
    if spec.canary is None:
        raise CanaryInputError(f"policy '{policy.name}' v{policy.version} has no [canary] section")
    if mapping.schema is not None:
        schema_validator(mapping.schema)  # a bad --schema is refused before the log is read
    arms, window, cols, digest = read_log(raw, filename, mapping, since_at)
    metrics = arm_metrics(arms, spec.alpha)
    results = [judge_trigger(t, key, metrics.get(t.metric), cols) for t in spec.canary.triggers
               for key in t.thresholds]
    n = {arm: arms[arm].n for arm in ARMS}
    decision, notes = decide(spec.canary, n, results)
    if window.ignored:
        notes.append(f"{window.ignored} rows outside the window or of other models were left out")
    locked_at = as_utc(policy.created_at)
    check = CanaryCheck(
        policy_name=policy.name, policy_version=policy.version, policy_hash=policy.content_hash,
        policy_locked_at=locked_at.isoformat(), post_hoc=window.first is not None and locked_at > window.first,
        log=filename, log_sha256=digest, since=since_at.isoformat() if since_at is not None else None,
        window_first=_iso(window.first), window_last=_iso(window.last), alpha=spec.alpha,
        min_samples=spec.canary.min_samples, n=n, traffic_share=_share(spec.canary, n, spec.alpha),
        decision=decision, metrics=metrics, triggers=results, notes=notes)
    with session_scope(engine) as session:
        record_event(session, "canary_checked", check.to_dict(), actor)
    return check


def _iso(stamp: pd.Timestamp | None) -> str | None:
    return None if stamp is None else stamp.isoformat()


def check_history(engine: Engine, policy_name: str | None = None) -> list[dict[str, Any]]:
    """Recorded canary checks (newest first), from the audit trail."""
    with engine.connect() as conn:
        events = list_events(conn, "canary_checked")
    out = []
    for event in reversed(events):
        payload = event_payload(event)
        if policy_name is None or payload.get("policy_name") == policy_name:
            out.append({"at": event["at"], "seq": event["seq"], **payload})
    return out


def declared_triggers(engine: Engine, policy_name: str, version: int | None = None) -> dict[str, Any]:
    """The policy's [canary] section as declared (for the page), with the policy's version and hash."""
    with Session(engine) as session:
        policy = get_policy(session, policy_name, version)
    spec = stored_spec(policy)
    return {"policy_name": policy.name, "policy_version": policy.version, "policy_hash": policy.content_hash,
            "locked_at": as_utc(policy.created_at).isoformat(), "alpha": spec.alpha,
            "canary": spec.canary.to_dict() if spec.canary else None}

