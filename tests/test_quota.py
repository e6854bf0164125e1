"""Runs at the provider's quota: declared rpm/tpm pace the calls, headers tighten the pace, an undeclared
quota is found from 429s (AIMD); the flags, the pre-run warning and the summary of `run`."""
from __future__ import annotations

import asyncio
import re
from dataclasses import replace

import pytest

from lib.run.quota import Bucket, Pacer, Quota, feasibility, parse_duration
from lib.run.runner import RunResult
from tests.llm_server import LLMServer
from tests.test_runner import _cli, make_dataset, run


def _times(server: LLMServer, model: str) -> list[float]:
    return sorted(r.at for r in server.log if r.model == model)


def _max_in_window(times: list[float], window: float) -> int:
    """The most requests that arrived within any `window` seconds."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _share_429(server: LLMServer, model: str) -> tuple[int, int]:
    log = [r for r in server.log if r.model == model]
    return sum(r.fault == "429" for r in log), len(log)


# ---- pieces ---------------------------------------------------------------------------------------
def test_reset_durations_in_provider_formats() -> None:
    assert parse_duration("1.5") == 1.5
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("6m0s") == 360.0
    assert parse_duration("1h2m3s") == 3723.0
    assert parse_duration("soon") is None and parse_duration(None) is None


def test_a_quota_the_concurrency_cannot_reach_is_said() -> None:
    assert feasibility(Quota(rpm=600), 8, 2.0) == ("at 8 in flight and ~2 s per call, at most 240 rpm (quota 600): "
                                                   "raise --concurrency to reach it")
    assert feasibility(Quota(rpm=200), 8, 2.0) is None
    assert feasibility(Quota(), 8, 2.0) is None
    assert "no latency known yet" in feasibility(Quota(rpm=600), 8, None)


def test_a_bucket_lets_a_call_larger_than_it_through_when_full_and_stays_in_debt() -> None:
    bucket = Bucket(600.0, now=0.0, full=True)  # 10 per second, holds 2.5
    assert bucket.wait(100.0, now=0.0) == 0.0
    bucket.take(100.0)
    assert bucket.wait(1.0, now=0.0) == pytest.approx((1.0 + 97.5) / 10.0)


def test_headers_set_the_rate_and_an_empty_quota_holds_the_side() -> None:
    async def scenario() -> Pacer:
        clock = [100.0]
        pacer = Pacer(Quota(), concurrency=8, clock=lambda: clock[0])
        await pacer.acquire()
        pacer.release(ok=True, rate_limited=False, latency_s=0.1, headers={
            "x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "30s", "x-ratelimit-limit-tokens": "1000"})
        return pacer

    pacer = asyncio.run(scenario())
    assert pacer.requests.per_minute == 60 and pacer.tokens.per_minute == 1000 and pacer.counts_tokens
    assert pacer.hold_until == pytest.approx(101.0)  # one call's worth of a 60 rpm bucket, not the full reset


def test_a_429_storm_cuts_the_in_flight_limit_once_and_successes_grow_it() -> None:
    async def scenario() -> Pacer:
        pacer = Pacer(Quota(rpm=6000), concurrency=8)
        sent = [await pacer.acquire() for _ in range(4)]
        for at in sent:  # the calls in flight when the quota ran out: one cut for all of them
            pacer.release(ok=False, rate_limited=True, latency_s=0.5, retry_after=0.2, sent_at=at)
        assert pacer.limit == 4.0 and pacer.hold_until > pacer.clock() + 0.15
        await pacer.acquire()  # waits out the hold
        pacer.release(ok=True, rate_limited=False, latency_s=0.5)
        return pacer

    pacer = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert pacer.limit == pytest.approx(4.25) and pacer.stats.rate_limited == 4 and pacer.stats.ok == 1


def test_a_first_429_before_any_success_does_not_set_a_crawling_rate() -> None:
    async def scenario() -> Pacer:
        pacer = Pacer(Quota(), concurrency=8)
        await pacer.acquire()
        pacer.release(ok=False, rate_limited=True, latency_s=0.1, retry_after=0.01)
        await pacer.acquire()
        pacer.release(ok=True, rate_limited=False, latency_s=0.1)
        return pacer

    pacer = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert pacer.requests is None and pacer.limit == pytest.approx(4.25)


# ---- against the test server ----------------------------------------------------------------------
@pytest.mark.parametrize("workers", ["in-process", pytest.param("per-side", marks=pytest.mark.slow)])
def test_a_declared_rpm_paces_the_calls_to_it(engine, llm_server: LLMServer, workers: str) -> None:
    make_dataset(engine, n=10)
    for model in ("base", "cand"):
        llm_server.set_quota(model, rpm=120, burst_s=1.0, headers=False)  # 2 per second, a 1 s bucket
    result = run(engine, llm_server, concurrency=8, workers=workers, quota=Quota(rpm=120))

    assert result.status == "complete"
    for side, model in ((result.baseline, "base"), (result.candidate, "cand")):
        times = _times(llm_server, model)
        assert _share_429(llm_server, model) == (0, 10)
        assert _max_in_window(times, 1.0) <= 3  # 2 per second, plus the one the client may start with
        assert times[-1] - times[1] >= 8 * 0.5 * 0.9  # paced, not sent at once (8 in flight would allow it)
        assert side.rate_limited == 0 and 90 <= side.rpm <= 150


def test_an_undeclared_quota_is_found_not_hammered(engine) -> None:
    # The calls in flight when the quota first runs out all get 429 (up to --concurrency per side): the
    # price of finding it, paid once. 160 calls per side keep that price within the 10% the goal allows.
    make_dataset(engine, n=160)
    with LLMServer(latency=0.05) as server:
        for model in ("base", "cand"):
            server.set_quota(model, rpm=1200, burst_s=1.0, headers=False)  # 20 per second
        result = run(engine, server, concurrency=8)
        shares = {m: _share_429(server, m) for m in ("base", "cand")}

    assert result.status == "complete"
    for model, (n_429, sent) in shares.items():
        assert n_429 >= 1, model  # it did hit the quota: found, not told
        assert sent / (sent - n_429) <= 1.1, (model, n_429, sent)
    assert result.baseline.rate_limited >= 1 and result.baseline.rpm <= 1200 * 1.3


def test_rate_limit_headers_set_the_pace_of_an_undeclared_quota(engine) -> None:
    make_dataset(engine, n=80)
    with LLMServer(latency=0.05) as server:
        for model in ("base", "cand"):
            server.set_quota(model, rpm=1200, burst_s=1.0, headers=True)
        result = run(engine, server, concurrency=16)
        shares = {m: _share_429(server, m) for m in ("base", "cand")}

    assert result.status == "complete"
    for model, (n_429, sent) in shares.items():
        # without headers the first 429s are how it learns; with them, at most 1% (one, on a loaded machine)
        assert n_429 <= max(1, 0.01 * sent), (model, n_429, sent)


def test_a_declared_tpm_paces_by_estimated_then_counted_tokens(engine, llm_server: LLMServer) -> None:
    make_dataset(engine, n=8)
    for model in ("base", "cand"):  # the server counts prompt words + max_tokens: ~25 per call, 50 per second
        llm_server.set_quota(model, tpm=3000, burst_s=1.0, headers=False)
    result = run(engine, llm_server, concurrency=8, quota=Quota(tpm=3000), spec_kwargs={"max_tokens": 20})

    assert result.status == "complete"
    for model in ("base", "cand"):
        times = _times(llm_server, model)
        assert _share_429(llm_server, model) == (0, 8)
        assert times[-1] - times[0] >= 1.5  # 8 x ~25 tokens at 50 per second, less the server's 1 s bucket


# ---- the CLI --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--rpm", "--candidate-tpm"])
def test_cli_rejects_a_non_positive_quota_with_one_line(engine, db_url: str, flag: str) -> None:
    make_dataset(engine, n=2)
    proc = _cli(db_url, "run", "--dataset", "golden", "--baseline", "openai/a", "--candidate", "openai/b",
                "--name", "x", flag, "0")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [f"error: {flag} must be a positive number, not 0.0"]


@pytest.mark.slow
def test_cli_judge_rejects_a_non_positive_rpm_with_one_line(db_url: str) -> None:
    proc = _cli(db_url, "judge", "cmp", "--judge", "openai/j", "--rpm", "-1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == ["error: --rpm must be a positive number, not -1.0"]


@pytest.mark.slow
def test_cli_says_an_unreachable_quota_before_the_run_and_the_achieved_rate_after(engine, db_url: str) -> None:
    make_dataset(engine, n=4)
    with LLMServer(latency=0.2) as server:
        def cli_run(name: str) -> tuple[str, str]:
            proc = _cli(db_url, "run", "--dataset", "golden", "--baseline", "openai/base", "--candidate",
                        "openai/cand", "--name", name, "--api-base", server.url, "--concurrency", "2",
                        "--rpm", "6000", "--baseline-rpm", "3000")
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, (out, err)
            return out, err

        out, err = cli_run("first")
        assert "quota baseline openai/base: 3000 rpm" in err and "quota candidate openai/cand: 6000 rpm" in err
        assert "no latency known yet" in err
        assert "rpm achieved, 0 429s" in out
        _, err = cli_run("second")  # now the store knows the models' latency
        found = re.search(r"warning: candidate at 1 in flight and ~([\d.]+) s per call, at most (\d+) rpm "
                          r"\(quota 6000\): raise --concurrency to reach it", err)
        assert found, err
        latency, ceiling = float(found[1]), int(found[2])
        assert latency >= 0.2 and ceiling == pytest.approx(60 / latency, rel=0.1)


def test_run_result_carries_the_achieved_rate(engine, llm_server: LLMServer) -> None:
    make_dataset(engine, n=3)
    result: RunResult = run(engine, llm_server)
    assert result.baseline.rpm is not None and result.baseline.rpm > 0 and result.candidate.rate_limited == 0


def test_server_quota_answers_429_with_retry_after_and_headers(llm_server: LLMServer) -> None:
    import json
    import urllib.error
    import urllib.request

    llm_server.set_quota("m", rpm=60, burst_s=1.0)  # one request per second, a bucket of one

    def post() -> tuple[int, dict]:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        req = urllib.request.Request(f"{llm_server.url}/chat/completions", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers)

    status, headers = post()
    assert status == 200 and headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    status, headers = post()
    assert status == 429 and headers["Retry-After"] == "1" and 0 < float(headers["retry-after-ms"]) <= 1000
    assert [r.fault for r in llm_server.log] == [None, "429"]


@pytest.mark.slow
def test_run_page_takes_a_quota_per_side_and_shows_the_achieved_rate(engine, llm_server: LLMServer) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.test_runner import ROOT

    make_dataset(engine, n=6)
    llm_server.set_quota("cand", rpm=120, burst_s=1.0, headers=False)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    at.switch_page("pages/run.py").run()
    for side, model in (("baseline", "openai/base"), ("candidate", "openai/cand")):
        at.text_input(key=f"run_{side}_model").set_value(model)
        at.text_input(key=f"run_{side}_api_base").set_value(llm_server.url)
    at.run()
    at.number_input(key="run_candidate_rpm").set_value(120)
    at.text_input(key="run_name").set_value("paced").run()
    at.button(key="run_start").click().run(timeout=120)

    assert not at.exception, at.exception
    captions = [c.value for c in at.caption]
    assert any("candidate:" in c and "rpm achieved, 0 429s" in c for c in captions), captions
    times = _times(llm_server, "cand")
    assert _share_429(llm_server, "cand") == (0, 6)
    # from the second: the first call's connection set-up may delay its arrival next to the second's
    assert times[-1] - times[1] >= 4 * 0.5 * 0.9, [round(t - times[0], 3) for t in times]


def test_judge_calls_are_paced_to_the_judge_models_quota(engine, llm_server: LLMServer) -> None:
    from tests.test_judge import judge, load_comparison, script_defaults

    load_comparison(engine, n=4)
    script_defaults(llm_server)
    llm_server.set_quota("judge", rpm=600, burst_s=1.0, headers=False)  # 10 per second, a bucket of 10
    result = judge(engine, llm_server, calls={"concurrency": 8, "quota": Quota(rpm=600)})

    assert result.status == "complete" and result.n_errors == 0
    times = _times(llm_server, "judge")
    n_429, sent = _share_429(llm_server, "judge")
    assert n_429 == 0 and sent == result.n_sent
    assert _max_in_window(times, 1.0) <= 10 + 2  # 10 per second, plus the client's start and arrival jitter
    assert times[-1] - times[1] >= (sent - 2) * 0.1 * 0.9  # paced, where 8 in flight would send at once


def test_judge_result_carries_the_judge_models_achieved_rate_and_its_429s(engine, llm_server: LLMServer) -> None:
    from tests.test_judge import judge, load_comparison, script_defaults

    load_comparison(engine, n=6)
    script_defaults(llm_server)
    llm_server.add_fault("429", first=1, model="judge", contains="question 1")  # both sides' judgements of it
    result = judge(engine, llm_server, calls={"concurrency": 8})

    assert result.status == "complete" and _share_429(llm_server, "judge") == (2, result.n_sent + 2)
    assert result.rate_limited == 2
    assert result.rpm is not None and result.rpm > 0


@pytest.mark.slow
def test_cli_judge_prints_the_judge_models_achieved_rate(engine, db_url: str, llm_server: LLMServer) -> None:
    from tests.test_judge import JUDGE, cli, load_comparison, script_defaults

    load_comparison(engine, n=6)
    script_defaults(llm_server)
    llm_server.add_fault("429", first=1, model="judge", contains="question 1")
    out = cli("judge", "cmp", "--judge", JUDGE, "--api-base", llm_server.url, "--concurrency", "8", db_url=db_url)

    assert out.returncode == 0, out.stderr
    found = re.search(r"; openai/judge: (\d+) rpm achieved, (\d+) 429s$", out.stderr, re.MULTILINE)
    assert found, out.stderr
    assert int(found[1]) > 0 and int(found[2]) == _share_429(llm_server, "judge")[0] == 2


def test_monitor_run_paces_its_model_to_the_quota_of_the_side_it_plays(engine, llm_server: LLMServer) -> None:
    from tests.test_monitor import FAST, make_dataset, point

    make_dataset(engine, n=24)
    llm_server.set_quota("pinned", rpm=600, burst_s=1.0, headers=False)  # 10 per second, a bucket of 10
    paced, flooding = Quota(rpm=600), Quota(rpm=60_000)

    # The first point becomes the baseline snapshot: the baseline's quota applies, not the candidate's.
    first = point(engine, llm_server, options=replace(FAST, side_quotas={"baseline": paced, "candidate": flooding}))
    assert first.is_baseline and _share_429(llm_server, "pinned") == (0, 24)
    # A later point is compared with the snapshot: the candidate's quota applies.
    llm_server.log.clear()
    second = point(engine, llm_server, options=replace(FAST, side_quotas={"baseline": flooding, "candidate": paced}))
    assert not second.is_baseline and _share_429(llm_server, "pinned") == (0, 24)
    times = _times(llm_server, "pinned")
    assert times[-1] - times[1] >= (24 - 4) * 0.1 * 0.9  # paced to 10 per second, where 8 in flight would flood
