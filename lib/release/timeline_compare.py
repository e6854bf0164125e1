"""Two periods of a production log side by side: every timeline metric with both values, the unpaired
difference (CI, p, n), the Evidently drift of outputs (and inputs when logged) and example requests.

A period is `START..END`: ISO 8601 dates or times (UTC when naive). START is inclusive; END is exclusive,
except that a bare date as END includes that whole day (`2023-07-01..2023-07-12` is 1 to 12 July).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from lib.release.timeline import MEAN_METRICS, METRICS, RATE_METRICS, TimelineInputError, read_log, unpaired
from lib.review.stats import ALPHA

DRIFT_SAMPLE = 2000  # requests per period sent to the drift report (seeded sample)
MIN_DRIFT_ROWS = 10
N_EXAMPLES = 5
SEED = 0


@dataclass(frozen=True)
class Period:
    start: pd.Timestamp
    end: pd.Timestamp

    def label(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def _stamp(text: str, what: str) -> tuple[pd.Timestamp, bool]:
    try:
        value = pd.Timestamp(text.strip())
    except ValueError:
        raise TimelineInputError(f"{what} '{text}' is not an ISO 8601 date or time") from None
    date_only = len(text.strip()) <= 10
    return (value.tz_localize("UTC") if value.tzinfo is None else value.tz_convert("UTC")), date_only


def parse_period(text: str, flag: str) -> Period:
    """`START..END` as a half-open UTC interval (a bare END date includes its day)."""
    if ".." not in text:
        raise TimelineInputError(f"{flag} '{text}' is not START..END (e.g. 2023-07-01..2023-07-12)")
    left, right = text.split("..", 1)
    start, _ = _stamp(left, f"{flag} start")
    end, date_only = _stamp(right, f"{flag} end")
    if date_only:
        end += pd.Timedelta(days=1)
    if end <= start:
        raise TimelineInputError(f"{flag} '{text}' ends before it starts")
    return Period(start, end)


def _rows(frame: pd.DataFrame, period: Period, flag: str) -> pd.DataFrame:
    rows = frame[(frame["ts"] >= period.start) & (frame["ts"] < period.end)]
    if rows.empty:
        raise TimelineInputError(f"{flag} {period.start.isoformat()}..{period.end.isoformat()} holds no requests "
                                 f"(the log runs {frame['ts'].min().isoformat()} .. {frame['ts'].max().isoformat()})")
    return rows


def _metrics(before: pd.DataFrame, after: pd.DataFrame, alpha: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in METRICS:
        col = RATE_METRICS.get(metric) or MEAN_METRICS[metric]
        b, a = before[col].dropna().to_numpy(), after[col].dropna().to_numpy()
        out[metric] = unpaired(b, a, metric in RATE_METRICS, alpha) if len(b) and len(a) else None
    return out


def _examples(rows: pd.DataFrame) -> list[dict[str, Any]]:
    picked = rows.sample(min(N_EXAMPLES, len(rows)), random_state=SEED).sort_values("ts")
    return [{"request_id": r.request_id, "ts": r.ts.isoformat(), "model": r.model, "input": r.input_text,
             "output": r.output_text, "refused": _flag(r.refused), "empty": _flag(r.empty)}
            for r in picked.itertuples()]


def _flag(value: Any) -> bool | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else bool(value)


def _drift(before: pd.DataFrame, after: pd.DataFrame, column: str) -> tuple[dict[str, Any] | None, str | None]:
    """(summary, html) of the Evidently drift of one text column, or (skip reason, None)."""
    from lib.drift.evidently_report import Sample, inert, run_report  # evidently: seconds to import

    texts = [rows[column].dropna() for rows in (before, after)]
    if min(len(t) for t in texts) < MIN_DRIFT_ROWS:
        return {"skipped": f"fewer than {MIN_DRIFT_ROWS} {column.split('_')[0]}s in a period"}, None
    samples = []
    for t, rows in zip(texts, (before, after)):
        t = t.sample(min(DRIFT_SAMPLE, len(t)), random_state=SEED)
        extra = pd.DataFrame({"refusal": rows.loc[t.index, "refused"].fillna(0).astype(int)})
        samples.append(Sample(inert(t).reset_index(drop=True), extra.reset_index(drop=True)))
    run = run_report(samples[0], samples[1], categorical=["refusal"])
    return {**run.summary, "n_before": run.details["n_reference"], "n_after": run.details["n_current"]}, run.html


def compare_windows(engine: Engine, name: str, before: str, after: str, model: str | None = None,
                    alpha: float = ALPHA, drift: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
    """The `compare-windows --json` document and the drift reports' HTML (outputs, inputs)."""
    frame = read_log(engine, name, model, texts=True)
    periods = parse_period(before, "--before"), parse_period(after, "--after")
    b, a = _rows(frame, periods[0], "--before"), _rows(frame, periods[1], "--after")
    doc: dict[str, Any] = {"log": name, "model": model, "before": {**periods[0].label(), "n": int(len(b))},
                           "after": {**periods[1].label(), "n": int(len(a))}, "metrics": _metrics(b, a, alpha),
                           "drift": {"outputs": None, "inputs": None},
                           "examples": {"before": _examples(b), "after": _examples(a)}}
    html: dict[str, str] = {}
    if drift:
        for kind, column in (("outputs", "output_text"), ("inputs", "input_text")):
            if frame[column].notna().any():
                doc["drift"][kind], page = _drift(b, a, column)
                if page:
                    html[kind] = page
            else:
                doc["drift"][kind] = {"skipped": "the log has no inputs"}
    return doc, html
