"""One model over time: per-window metrics of a production log and the change points between them.

Windows: each model's requests grouped by hour, day or week (UTC). Metrics per window: refusal, empty and
JSON-valid rates and mean length over answered requests, error rate over all requests, mean latency.

Change points (`ruptures` binary segmentation, l2 cost) run on each metric's window series standardised
under "no change": for means z_t = (x_t - pooled) / (sd / sqrt(n_t)) with the pooled sd of the values; for
rates the variance-stabilised 2 sqrt(n_t) (asin sqrt(x_t) - asin sqrt(pooled)). The penalty is calibrated by
simulation: the (1 - FALSE_ALARM / number of series) quantile of the best single split's l2 gain on null
series (Bonferroni over the metrics and models of a log): N(0, 1) for means (z is close to normal by the CLT),
binomial counts at the pooled rate and the real window sizes for rates (rare events in small windows are
skewed). Each break is then confirmed by the canary's unpaired test of the requests between the
neighbouring breaks (lib.release.canary_stats: Newcombe/Fisher for rates, Welch or bootstrap with
Mann-Whitney for means) and kept only when p < alpha; its interval is reported.
Measured (tests/test_timeline.py, 200 simulated flat 20-day logs): change points in 3.5% of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from sqlmodel import Session

from lib.errors import ReviewInputError
from lib.release.canary_stats import mean_difference, rate_difference
from lib.release.log_import import get_log
from lib.review.stats import ALPHA

WINDOWS = {"hour": "h", "day": "D", "week": "W-MON"}
RATE_METRICS = {"refusal_rate": "refused", "empty_rate": "empty", "json_valid_rate": "json_valid",
                "error_rate": "errored"}
MEAN_METRICS = {"length_chars_mean": "length_chars", "latency_s_mean": "latency_s"}
METRICS = ("refusal_rate", "empty_rate", "json_valid_rate", "length_chars_mean", "error_rate", "latency_s_mean")
FALSE_ALARM = 0.025  # per log, the design target: half the 5% the tests allow (measured rate: docs)
MIN_WINDOWS = 4  # fewer windows: no change-point search
N_SIMULATIONS = 4000
SEED = 0

# What a timeline reads per request (no texts: 1M requests stay well under a gigabyte).
_COLUMNS = ("ts", "model", "refused", "empty", "json_valid", "length_chars", "error IS NOT NULL AS errored",
            "latency_s")


class TimelineInputError(ReviewInputError):
    """A bad window, period, model or log name for the timeline."""


def read_log(engine: Engine, name: str, model: str | None = None, texts: bool = False) -> pd.DataFrame:
    """The log's records (check columns; with `texts`, input and output too), ts as UTC."""
    with Session(engine) as session:
        log = get_log(session, name)
    cols = [*_COLUMNS, *(("request_id", "input_text", "output_text") if texts else ())]
    sql = f"SELECT {', '.join(cols)} FROM logrecord WHERE log_id = ?" + (" AND model = ?" if model else "")
    with engine.connect() as conn:
        frame = pd.read_sql_query(sql, conn.connection.driver_connection,
                                  params=(log.id, model) if model else (log.id,))
    if model and frame.empty:
        with engine.connect() as conn:
            models = pd.read_sql_query("SELECT DISTINCT model FROM logrecord WHERE log_id = ?",
                                       conn.connection.driver_connection, params=(log.id,))["model"].tolist()
        raise TimelineInputError(f"log '{name}' has no rows of model '{model}' (models: {', '.join(models)})")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="mixed")
    for col in ("refused", "empty", "json_valid", "length_chars", "latency_s", "errored"):
        frame[col] = pd.to_numeric(frame[col]).astype(float)
    return frame


def window_starts(frame: pd.DataFrame, window: str) -> pd.Series:
    if window not in WINDOWS:
        raise TimelineInputError(f"unknown window '{window}' (use {', '.join(WINDOWS)})")
    period = "W-SUN" if window == "week" else WINDOWS[window]  # weeks Monday..Sunday
    return frame["ts"].dt.tz_localize(None).dt.to_period(period).dt.start_time.dt.tz_localize("UTC")


def _window_metrics(group: pd.DataFrame) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in METRICS:
        col = RATE_METRICS.get(key) or MEAN_METRICS[key]
        values = group[col].dropna()
        out[key] = float(values.mean()) if len(values) else None
    return out


@dataclass
class Series:
    model: str
    starts: list[pd.Timestamp]
    groups: list[pd.DataFrame]


def _series(frame: pd.DataFrame, window: str) -> list[Series]:
    frame = frame.assign(window=window_starts(frame, window))
    out = []
    for model, rows in frame.groupby("model", sort=True):
        starts, groups = zip(*rows.groupby("window", sort=True))
        out.append(Series(str(model), list(starts), list(groups)))
    return out


def _end(start: pd.Timestamp, window: str) -> pd.Timestamp:
    return start + {"hour": pd.Timedelta(hours=1), "day": pd.Timedelta(days=1), "week": pd.Timedelta(days=7)}[window]


def timeline(engine: Engine, name: str, model: str | None = None, window: str = "day",
             alpha: float = ALPHA) -> dict[str, Any]:
    """The `timeline --json` document: windows per model and the confirmed change points."""
    frame = read_log(engine, name, model)
    series = _series(frame, window)
    windows = [{"model": s.model, "start": start.isoformat(), "end": _end(start, window).isoformat(),
                "n": int(len(group)), "metrics": _window_metrics(group)}
               for s in series for start, group in zip(s.starts, s.groups)]
    n_tests = max(1, len(series) * len(METRICS))
    points = [p for s in series for metric in METRICS for p in change_points(s, metric, n_tests, alpha)]
    return {"log": name, "windows": windows, "change_points": points}


# ---------------------------------------------------------------- change points

def standardised(groups: list[pd.DataFrame], col: str, rate: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(z per window with data, index of those windows, their sizes, the pooled value): each window's
    deviation from the pooled value in standard errors under "no change"."""
    values = [g[col].dropna().to_numpy() for g in groups]
    keep = np.array([i for i, v in enumerate(values) if len(v)], dtype=int)
    if len(keep) == 0:
        return np.zeros(0), keep, np.zeros(0), 0.0
    n = np.array([len(values[i]) for i in keep], dtype=float)
    means = np.array([values[i].mean() for i in keep])
    pooled_all = np.concatenate([values[i] for i in keep])
    center = float(pooled_all.mean())
    if rate:
        return _arcsine_z(means, center, n), keep, n, center
    sd = pooled_all.std(ddof=1) if len(pooled_all) > 1 else 0.0
    if not sd > 0:
        return np.zeros(len(keep)), keep, n, center
    return (means - center) / (sd / np.sqrt(n)), keep, n, center


def _arcsine_z(rates: np.ndarray, pooled: np.ndarray | float, n: np.ndarray) -> np.ndarray:
    """Rates on the variance-stabilised scale: 2 sqrt(n) (asin sqrt(x) - asin sqrt(pooled)) has variance ~1
    whatever the rate, so a window after a step to a higher rate is not noisier than one before."""
    return 2 * np.sqrt(n) * (np.arcsin(np.sqrt(rates)) - np.arcsin(np.sqrt(pooled)))


def _best_split_gain(z: np.ndarray) -> np.ndarray:
    """Per row of `z` (simulations x windows): the largest l2 cost reduction of one split."""
    length = z.shape[1]
    total = z.cumsum(axis=1)
    k = np.arange(1, length)
    # a split after k points gains k (T-k) / T * (mean_left - mean_right)^2
    gain = (total[:, :-1] - k / length * total[:, -1:]) ** 2 * length / (k * (length - k))
    return gain.max(axis=1)


@lru_cache(maxsize=256)
def penalty(length: int, n_tests: int = 1, false_alarm: float = FALSE_ALARM) -> float:
    """The split penalty for a standardised series of a mean metric: the (1 - false_alarm / n_tests)
    quantile of the best single split's gain on simulated N(0, 1) series of this length."""
    rng = np.random.default_rng(SEED)
    return float(np.quantile(_best_split_gain(rng.standard_normal((N_SIMULATIONS, length))),
                             1 - false_alarm / n_tests))


def rate_penalty(n: np.ndarray, rate: float, n_tests: int = 1, false_alarm: float = FALSE_ALARM) -> float:
    """The same for a rate, simulated with binomial counts at the pooled rate and these window sizes (a
    rare event in small windows is skewed: the normal approximation alarms too often)."""
    rng = np.random.default_rng(SEED)
    counts = rng.binomial(n.astype(np.int64), rate, size=(N_SIMULATIONS, len(n)))
    pooled = counts.sum(axis=1, keepdims=True) / n.sum()
    z = _arcsine_z(counts / n, pooled, n)
    return float(np.quantile(_best_split_gain(z), 1 - false_alarm / n_tests))


def _breaks(z: np.ndarray, pen: float) -> list[int]:
    """Binary segmentation (ruptures): a split is made only where its gain beats the penalty, so under no
    change the first split (and so any) happens with the calibrated probability."""
    import ruptures as rpt

    if len(z) < MIN_WINDOWS or not np.any(z):
        return []
    return [b for b in rpt.Binseg(model="l2", min_size=1, jump=1).fit(z.reshape(-1, 1)).predict(pen=pen)
            if b < len(z)]


def change_points(series: Series, metric: str, n_tests: int = 1, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Confirmed change points of one metric of one model's windows."""
    rate = metric in RATE_METRICS
    col = RATE_METRICS.get(metric) or MEAN_METRICS[metric]
    z, keep, n, center = standardised(series.groups, col, rate)
    if len(z) < MIN_WINDOWS:
        return []
    breaks = _breaks(z, rate_penalty(n, center, n_tests) if rate else penalty(len(z), n_tests))
    out = []
    bounds = [0, *breaks, len(keep)]
    for i, b in enumerate(breaks):
        before = np.concatenate([series.groups[j][col].dropna().to_numpy() for j in keep[bounds[i]:b]])
        after = np.concatenate([series.groups[j][col].dropna().to_numpy() for j in keep[b:bounds[i + 2]]])
        test = unpaired(before, after, rate, alpha)
        if test is None or test["p_value"] >= alpha:
            continue
        test.pop("n_before"), test.pop("n_after")  # the change point's keys are an interface
        out.append({"model": series.model, "metric": metric, "at": series.starts[keep[b]].isoformat(), **test})
    return out


def unpaired(before: np.ndarray, after: np.ndarray, rate: bool, alpha: float = ALPHA) -> dict[str, Any] | None:
    """before, after, delta (after - before), CI, p and n of two independent periods (canary statistics)."""
    if rate:
        res = rate_difference(int(before.sum()), len(before), int(after.sum()), len(after), alpha)
    else:
        res = mean_difference(before, after, alpha)
    if res is None:
        return None
    return {"before": res["control"], "after": res["canary"], "delta": res["delta"], "ci_low": res["ci_low"],
            "ci_high": res["ci_high"], "p_value": res["p_value"], "n_before": res["n_control"],
            "n_after": res["n_canary"]}
