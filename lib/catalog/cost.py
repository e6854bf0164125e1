"""The cost of staying vs upgrading, from a comparison's own token counts and each side's prices.

Per case: prompt tokens x input price + completion tokens x output price, each side with its own tokens
(the candidate may tokenise and answer differently); repeats averaged per case; only cases where both
sides returned token counts. Cost per 1,000 requests = 1,000 x the mean per case; the delta's interval
is a percentile bootstrap over cases (paired: a resample keeps both sides of a case together).
A value is None when a price or every token count is unknown: never 0.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import text
from sqlalchemy.engine import Engine

from lib.catalog.catalogue import Catalogue, ModelInfo, catalogue
from lib.review.stats import ALPHA

PER = 1000
DAYS_PER_MONTH = 30
N_BOOT = 2000
BOOT_SEED = 0

_SQL = text("""
SELECT cmp.id AS comparison_id, bc.model AS baseline_model, cc.model AS candidate_model,
       cmp.baseline_run_id AS b_run, cmp.candidate_run_id AS c_run
FROM comparison cmp
JOIN run br ON br.id = cmp.baseline_run_id JOIN modelconfig bc ON bc.id = br.config_id
JOIN run cr ON cr.id = cmp.candidate_run_id JOIN modelconfig cc ON cc.id = cr.config_id
WHERE cmp.name = :name
""")
_TOKENS = text("""
SELECT run_id, case_id, prompt_tokens, completion_tokens FROM output
WHERE run_id IN (:b, :c) AND error IS NULL AND prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL
""")


def _prices(info: ModelInfo) -> dict[str, Any]:
    return {"model": info.model, "input_cost_per_token": info.input_cost_per_token,
            "output_cost_per_token": info.output_cost_per_token,
            "source": info.source if info.priced else "unknown: no price in the map or the override file"}


def per_case_costs(tokens: pd.DataFrame, b_run: int, c_run: int, b: ModelInfo, c: ModelInfo) -> pd.DataFrame:
    """One row per case with both sides' mean cost (USD per request); cases missing a side are dropped."""
    sides = []
    for run, info, col in ((b_run, b, "baseline"), (c_run, c, "candidate")):
        rows = tokens[tokens["run_id"] == run]
        inp, out = info.input_cost_per_token, info.output_cost_per_token
        cost = rows["prompt_tokens"] * inp + rows["completion_tokens"] * out
        sides.append(cost.groupby(rows["case_id"]).mean().rename(col))
    return pd.concat(sides, axis=1, join="inner")


def bootstrap_delta_ci(baseline: np.ndarray, candidate: np.ndarray, alpha: float = ALPHA,
                       n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(candidate - baseline), resampling cases."""
    diffs = candidate - baseline
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(n_boot, len(diffs)))
    means = diffs[idx].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def projection(costs: pd.DataFrame, prices: dict[str, Any], alpha: float = ALPHA,
               n_boot: int = N_BOOT) -> dict[str, Any]:
    """The `cost_projection` block from per-case costs (columns baseline, candidate; USD per request)."""
    out: dict[str, Any] = {"baseline_per_1k": None, "candidate_per_1k": None, "delta_per_1k": None,
                           "ci_low": None, "ci_high": None, "n": int(len(costs)), "prices": prices}
    if costs.empty:
        return out
    b, c = costs["baseline"].to_numpy(float), costs["candidate"].to_numpy(float)
    lo, hi = bootstrap_delta_ci(b, c, alpha, n_boot)
    return out | {"baseline_per_1k": float(b.mean() * PER), "candidate_per_1k": float(c.mean() * PER),
                  "delta_per_1k": float((c - b).mean() * PER), "ci_low": lo * PER, "ci_high": hi * PER}


def _source(b: ModelInfo, c: ModelInfo, cat: Catalogue) -> str:
    files = sorted({i.override_file for i in (b, c) if i.override_file and
                    ({"input_cost_per_token", "output_cost_per_token"} & set(i.overridden))})
    return cat.source if not files else f"override file {files[0]} takes precedence; others: {cat.source}"


def cost_projection(engine: Engine, comparison: str, alpha: float = ALPHA,
                    cat: Catalogue | None = None) -> dict[str, Any] | None:
    """The comparison's cost per 1,000 requests, baseline and candidate, with the delta's CI; None when the
    comparison does not exist. Values are None when a side's price is unknown or no case has tokens."""
    with engine.connect() as conn:
        row = conn.execute(_SQL, {"name": comparison}).mappings().first()
        if row is None:
            return None
        tokens = pd.DataFrame(conn.execute(_TOKENS, {"b": row["b_run"], "c": row["c_run"]}).mappings().all(),
                              columns=["run_id", "case_id", "prompt_tokens", "completion_tokens"])
    cat = cat or catalogue()
    b, c = cat.info(row["baseline_model"]), cat.info(row["candidate_model"])
    prices = {"baseline": _prices(b), "candidate": _prices(c), "source": _source(b, c, cat)}
    if not (b.priced and c.priced):
        return projection(pd.DataFrame(columns=["baseline", "candidate"]), prices) | {"n": 0}
    return projection(per_case_costs(tokens, row["b_run"], row["c_run"], b, c), prices, alpha)


def monthly(per_1k: float | None, requests_per_day: float) -> float | None:
    """USD per month (30 days) at this traffic; None when the cost per 1,000 is unknown."""
    if per_1k is None:
        return None
    return per_1k * requests_per_day * DAYS_PER_MONTH / PER
