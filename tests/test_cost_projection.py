"""The cost of staying vs upgrading: per-1,000-request costs against a hand computation, the bootstrap CI,
unknown prices as null, the report's `cost_projection` block and the `cost_per_1k` policy criterion."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_catalog import load_long

from lib.catalog.catalogue import catalogue
from lib.catalog.cost import bootstrap_delta_ci, cost_projection, monthly
from lib.governance.gate import evaluate
from lib.governance.policy import PolicyError, parse_policy

# gpt-4o-2024-08-06: $2.50 in / $10 out per 1M; gpt-4.1-2025-04-14: $2 in / $8 out per 1M (the bundled map).
TOKENS_CSV = ("request_id,model,input,output,prompt_tokens,completion_tokens\n"
              "r1,gpt-4o-2024-08-06,a,x,100,50\nr1,gpt-4.1-2025-04-14,a,y,100,80\n"
              "r2,gpt-4o-2024-08-06,b,x,200,20\nr2,gpt-4.1-2025-04-14,b,y,200,10\n"
              "r3,gpt-4o-2024-08-06,c,x,50,100\nr3,gpt-4.1-2025-04-14,c,y,50,150\n")
# By hand, USD per request: baseline 100*2.5e-6 + 50*1e-5 = 7.5e-4, 200*2.5e-6 + 20*1e-5 = 7e-4,
# 50*2.5e-6 + 100*1e-5 = 1.125e-3 -> mean 8.58333e-4; candidate 100*2e-6 + 80*8e-6 = 8.4e-4, 4.8e-4, 1.3e-3
# -> mean 8.73333e-4. Per 1,000 requests: 0.858333 and 0.873333, delta 0.015.
BASELINE_PER_1K, CANDIDATE_PER_1K = 2.575 / 3, 2.62 / 3
DIFFS_PER_1K = [0.09, -0.22, 0.175]
KEYS = {"baseline_per_1k", "candidate_per_1k", "delta_per_1k", "ci_low", "ci_high", "prices", "n"}


def test_cost_per_1k_matches_the_hand_computation(engine, tmp_path: Path) -> None:
    load_long(engine, tmp_path, text=TOKENS_CSV)
    cp = cost_projection(engine, "upgrade")
    assert set(cp) == KEYS and cp["n"] == 3
    assert cp["baseline_per_1k"] == pytest.approx(BASELINE_PER_1K)
    assert cp["candidate_per_1k"] == pytest.approx(CANDIDATE_PER_1K)
    assert cp["delta_per_1k"] == pytest.approx(0.015)
    assert min(DIFFS_PER_1K) - 1e-12 <= cp["ci_low"] < cp["delta_per_1k"] < cp["ci_high"] <= max(DIFFS_PER_1K) + 1e-12
    assert cp["prices"]["baseline"]["input_cost_per_token"] == pytest.approx(2.5e-6)
    assert cp["prices"]["candidate"]["output_cost_per_token"] == pytest.approx(8e-6)
    assert "litellm bundled model map" in cp["prices"]["source"]


def test_the_monthly_projection_at_a_given_traffic() -> None:
    assert monthly(CANDIDATE_PER_1K, 10_000) == pytest.approx(2.62 / 3 * 10 * 30)  # 10 x 1k requests x 30 days
    assert monthly(None, 10_000) is None


def test_the_bootstrap_ci_is_the_mean_difference_when_every_case_agrees_and_near_normal_theory_otherwise() -> None:
    same = np.full(20, 0.5)
    assert bootstrap_delta_ci(same, same + 0.25) == pytest.approx((0.25, 0.25))
    rng = np.random.default_rng(7)
    b, d = rng.normal(1.0, 0.1, 400), rng.normal(0.2, 1.0, 400)
    lo, hi = bootstrap_delta_ci(b, b + d)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
    assert lo == pytest.approx(d.mean() - half, abs=0.02) and hi == pytest.approx(d.mean() + half, abs=0.02)


def test_an_unknown_price_gives_null_values_never_zero(engine, tmp_path: Path) -> None:
    text = TOKENS_CSV.replace("gpt-4.1-2025-04-14", "openai/house-model")
    load_long(engine, tmp_path, text=text, candidate="openai/house-model")
    cp = cost_projection(engine, "upgrade")
    assert all(cp[k] is None for k in ("baseline_per_1k", "candidate_per_1k", "delta_per_1k", "ci_low", "ci_high"))
    assert cp["prices"]["candidate"]["input_cost_per_token"] is None
    assert cp["prices"]["candidate"]["source"].startswith("unknown")


def test_override_prices_are_used_and_named(engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = TOKENS_CSV.replace("gpt-4.1-2025-04-14", "openai/house-model")
    load_long(engine, tmp_path, text=text, candidate="openai/house-model")
    path = tmp_path / "prices.toml"
    path.write_text('["openai/house-model"]\ninput_cost_per_token = 1e-6\noutput_cost_per_token = 1e-6\n')
    cp = cost_projection(engine, "upgrade", cat=catalogue(str(path)))
    # candidate by hand: (180 + 210 + 200) tokens x 1e-6 / 3 cases x 1,000
    assert cp["candidate_per_1k"] == pytest.approx(0.59 / 3) and str(path) in cp["prices"]["source"]
    assert str(path) in cp["prices"]["candidate"]["source"]


def test_the_report_carries_the_cost_projection(engine, tmp_path: Path) -> None:
    from lib.review.report import build_report

    load_long(engine, tmp_path, text=TOKENS_CSV)
    report = build_report(engine, "upgrade")
    assert report["cost_projection"]["delta_per_1k"] == pytest.approx(0.015)


def _report(delta: float | None, lo: float | None, hi: float | None) -> dict:
    cost = {"baseline_per_1k": 1.0, "candidate_per_1k": None if delta is None else 1.0 + delta,
            "delta_per_1k": delta, "ci_low": lo, "ci_high": hi, "n": 50, "prices": {}}
    return {"alpha": 0.05, "metrics": {}, "cost_projection": cost}


@pytest.mark.parametrize(("bound", "delta", "lo", "hi", "result"), [
    (0.5, 0.1, 0.05, 0.2, "pass"), (0.5, 0.8, 0.6, 1.0, "fail"), (0.5, 0.4, 0.3, 0.7, "inconclusive")])
def test_the_cost_per_1k_criterion_judges_the_delta_ci(bound, delta, lo, hi, result) -> None:
    spec = parse_policy(f"[criteria.cost_per_1k]\nmax_increase = {bound}\n")
    [res] = evaluate(spec, _report(delta, lo, hi))
    assert res.result == result and res.delta == delta and res.n == 50


def test_the_cost_criterion_is_inconclusive_with_a_reason_when_a_price_is_unknown() -> None:
    spec = parse_policy("[criteria.cost_per_1k]\nmax_increase = 0.5\n")
    [res] = evaluate(spec, _report(None, None, None))
    assert res.result == "inconclusive" and "price is unknown" in res.reason


def test_the_cost_criterion_has_no_categories() -> None:
    with pytest.raises(PolicyError, match="per-category"):
        parse_policy("[criteria.'cost_per_1k@math']\nmax_increase = 0.5\n")
