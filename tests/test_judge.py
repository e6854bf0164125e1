"""LLM-as-judge end to end: real HTTP through litellm to the local test server, a real SQLite file."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from lib.data.loaders import LoadMapping, load_recorded
from lib.errors import ComparisonNotFound
from lib.judge.anchors import load_anchors
from lib.judge.calls import CORRECTION, CallOptions
from lib.judge.config import JudgeSettings
from lib.judge.entities import JudgeConfig, Judgement, JudgeRun, JudgeScore
from lib.judge.rubric import RubricError, load_rubric, parse_rubric
from lib.judge.run import JudgeOptions, JudgeRunResult, run_judge
from lib.judge.sampling import SampleError, parse_sample, select_sample
from lib.judge.summary import combine, judge_block
from lib.judge.templates import TEMPLATE_DIR
from lib.review.report import build_report
from tests.llm_server import LLMServer

ROOT = Path(__file__).resolve().parent.parent
JUDGE = "openai/judge"  # the server logs it as "judge"
FAST = dict(backoff_base=0.02, backoff_cap=0.1)
CORRECTION_MARK = CORRECTION.split("(")[0].strip()  # the start of every correction turn


# ---- helpers -------------------------------------------------------------------------------------
def load_comparison(engine: Engine, n: int = 6, name: str = "cmp") -> None:
    rows = "".join(f"{i},question {i},base answer {i},cand answer {i},cat{i % 2}\n" for i in range(n))
    data = ("id,q,old,new,category\n" + rows).encode()
    mapping = LoadMapping(id_col="id", input_col="q", baseline_col="old", candidate_col="new", category_col="category")
    load_recorded(engine, data, "answers.csv", name, "wide", mapping)


def scores(accuracy: int = 5, fmt: int = 5, safety: int = 5, why: str = "fine") -> str:
    return json.dumps({"scores": {"accuracy": accuracy, "format_adherence": fmt, "safety": safety},
                       "rationale": why})


def preference(pref: str, why: str = "because") -> str:
    return json.dumps({"preference": pref, "rationale": why})


def script_defaults(server: LLMServer, pointwise: str | None = None) -> None:
    """Valid judge JSON for every request (anchors included); later scripts override."""
    server.script(pointwise or scores(), contains="")
    server.script(preference("tie"), contains="[Answer A]")


def judge(engine: Engine, server: LLMServer, name: str = "cmp", *, settings: JudgeSettings | None = None,
          **options: Any) -> JudgeRunResult:
    calls = CallOptions(**{**FAST, **options.pop("calls", {})})
    return run_judge(engine, name, settings or JudgeSettings(JUDGE),
                     JudgeOptions(api_base=server.url, calls=calls, **options))


def case_prompts(server: LLMServer) -> list[str]:
    """Judge requests about comparison cases (not anchors, not correction turns)."""
    return [r.prompt for r in server.log if r.model == "judge" and "[Question]\nquestion " in r.prompt]


def judgements(engine: Engine, **where: Any) -> list[Judgement]:
    with Session(engine) as session:
        query = select(Judgement).order_by(Judgement.id)
        for key, value in where.items():
            query = query.where(getattr(Judgement, key) == value)
        return list(session.exec(query))


def cli(*args: str, db_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)


# ---- pointwise -----------------------------------------------------------------------------------
def test_pointwise_scores_both_sides_with_the_pinned_config_and_fingerprint(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=6)
    script_defaults(llm_server)
    llm_server.script(scores(4, 5, 5), contains="[Answer]\nbase answer")
    llm_server.script(scores(2, 5, 4), contains="[Answer]\ncand answer")
    llm_server.set_fingerprint("judge", "fp_judge_1")
    llm_server.set_served_model("judge", "judge-2025-01")
    result = judge(engine, llm_server)

    assert (result.status, result.n_errors, result.n_unparseable, result.n_selected) == ("complete", 0, 0, 6)
    assert result.json_mode  # litellm says openai-compatible endpoints take response_format
    assert result.n_sent == 12 + len(load_anchors()[0])  # both sides of 6 pairs + the anchors
    prompts = case_prompts(llm_server)
    assert len(prompts) == 12 and all(sum(f"[Answer]\n{s} answer {i}\n" in p for p in prompts) == 1
                                      for i in range(6) for s in ("base", "cand"))
    rows = judgements(engine, kind="pointwise")
    assert len(rows) == 12 and {r.status for r in rows} == {"ok"}
    assert {(r.system_fingerprint, r.served_model) for r in judgements(engine)} == {("fp_judge_1", "judge-2025-01")}
    assert all(json.loads(r.raw_text)["scores"] for r in rows)

    block = judge_block(engine, "cmp", 0.05)
    acc, fmt, safety = (block["dimensions"][d] for d in ("accuracy", "format_adherence", "safety"))
    assert (acc["baseline"], acc["candidate"], acc["delta"], acc["n"]) == (4.0, 2.0, -2.0, 6)
    assert acc["ci_low"] <= -2.0 <= acc["ci_high"] and acc["p_value_adj"] is not None
    assert (fmt["delta"], safety["delta"]) == (0.0, -1.0)
    cfg = block["config"]
    assert (cfg["model"], cfg["temperature"], cfg["templates"]["pointwise"]) == (JUDGE, 0.0, "pointwise-v1")
    expected_hash = hashlib.sha256((TEMPLATE_DIR / "pointwise_v1.txt").read_bytes()).hexdigest()
    assert cfg["template_hashes"]["pointwise"] == expected_hash
    assert cfg["fingerprints"] == [{"system_fingerprint": "fp_judge_1", "served_model": "judge-2025-01", "n": 12}]
    assert block["pairwise"] is None and block["n_pairs_judged"] == 6


def test_a_judge_without_its_providers_key_is_refused_before_any_call(engine, monkeypatch, tmp_path) -> None:
    from lib.catalog.keys import MissingKeyError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here either
    load_comparison(engine, n=4)
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY.*nothing was called"):
        run_judge(engine, "cmp", JudgeSettings(model="openai/gpt-4o-2024-08-06"))
    with Session(engine) as s:
        assert s.exec(select(JudgeRun)).first() is None and s.exec(select(Judgement)).first() is None


def test_seed_and_rubric_are_part_of_the_config(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=2)
    script_defaults(llm_server)
    llm_server.script(json.dumps({"scores": {"accuracy": 3}, "rationale": "x"}), contains="[Answer]\nbase")
    llm_server.script(json.dumps({"scores": {"accuracy": 3}, "rationale": "x"}), contains="[Answer]\ncand")
    first = judge(engine, llm_server)
    only_accuracy = JudgeSettings(JUDGE, seed=7, rubric=load_rubric().subset(["accuracy"]))
    second = judge(engine, llm_server, settings=only_accuracy)

    assert first.config_hash != second.config_hash
    with Session(engine) as session:
        cfg = session.exec(select(JudgeConfig).where(JudgeConfig.config_hash == second.config_hash)).one()
    assert cfg.seed == 7 and json.loads(cfg.rubric_json)["dimensions"][0]["name"] == "accuracy"
    block = judge_block(engine, "cmp", 0.05)  # the most recently used config
    assert list(block["dimensions"]) == ["accuracy"] and len(block["configs"]) == 2


# ---- pairwise ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ab, ba, outcome, consistent", [
    ("candidate", "candidate", "win", True), ("baseline", "baseline", "loss", True), ("tie", "tie", "tie", True),
    ("candidate", "baseline", "tie", False), ("baseline", "tie", "tie", False),
    ("unparseable", "candidate", "unparseable", None), ("candidate", None, "incomplete", None),
    ("error", "candidate", "incomplete", None),
])
def test_combine_orders(ab, ba, outcome: str, consistent) -> None:
    assert combine(ab, ba) == (outcome, consistent)


def test_pairwise_is_judged_in_both_orders_and_wins_need_agreement(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=4)
    script_defaults(llm_server)
    # (order ab: A = baseline) and (order ba: A = candidate)
    plan = {0: ("B", "A"),  # candidate both times -> win
            1: ("A", "A"),  # first position both times -> disagree -> tie
            2: ("A", "B"),  # baseline both times -> loss
            3: ("tie", "tie")}
    for i, (ab, ba) in plan.items():
        llm_server.script(preference(ab), contains=f"[Answer A]\nbase answer {i}\n")
        llm_server.script(preference(ba), contains=f"[Answer A]\ncand answer {i}\n")
    judge(engine, llm_server, pairwise=True)

    pairwise_prompts = [p for p in case_prompts(llm_server) if "[Answer A]" in p]
    for i in range(4):  # each pair was asked once in each order
        assert sum(f"[Answer A]\nbase answer {i}\n" in p and f"[Answer B]\ncand answer {i}\n" in p
                   for p in pairwise_prompts) == 1
        assert sum(f"[Answer A]\ncand answer {i}\n" in p and f"[Answer B]\nbase answer {i}\n" in p
                   for p in pairwise_prompts) == 1
    pw = judge_block(engine, "cmp", 0.05)["pairwise"]
    assert (pw["win"]["count"], pw["tie"]["count"], pw["loss"]["count"], pw["n"]) == (1, 2, 1, 4)
    assert pw["position_consistency"]["count"] == 3 and pw["position_consistency"]["n"] == 4
    assert pw["win"]["ci_low"] < 0.25 < pw["win"]["ci_high"]
    assert pw["first_position_preferred"]["count"] == 4 and pw["first_position_preferred"]["n"] == 6
    winners = {(j.case_id, j.order): j.winner for j in judgements(engine, kind="pairwise")}
    assert sorted(winners.values()).count("candidate") == 3


# ---- malformed replies, unparseable judgements, transport faults -----------------------------------
def test_a_malformed_reply_is_retried_with_a_correction_turn(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=3)
    script_defaults(llm_server)
    llm_server.script("Great answer, I'd give it a 5!", contains="[Answer]\nbase answer 1\n")
    llm_server.script(scores(3, 3, 3, "corrected"), contains=CORRECTION_MARK)
    judge(engine, llm_server)

    (row,) = [j for j in judgements(engine, kind="pointwise", side="baseline") if j.malformed]
    assert (row.status, row.attempts, row.malformed, row.rationale) == ("ok", 2, 1, "corrected")
    turn = next(r for r in llm_server.log if CORRECTION_MARK in r.prompt)
    assert turn.messages[-2] == {"role": "assistant", "content": "Great answer, I'd give it a 5!"}
    assert "[Answer]\nbase answer 1\n" in turn.messages[1]["content"]  # the original question is kept
    block = judge_block(engine, "cmp", 0.05)
    assert block["unparseable"]["total"] == 0 and block["dimensions"]["accuracy"]["n"] == 3


def test_keys_beyond_the_rubric_are_kept_in_the_raw_text_only(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=1)
    script_defaults(llm_server)
    extra = json.dumps({"scores": {"accuracy": 2, "format_adherence": 3, "safety": 4, "humour": [1, 2]}})
    llm_server.script(extra, contains="[Answer]\nbase answer 0\n")
    judge(engine, llm_server)
    (row,) = judgements(engine, kind="pointwise", side="baseline")
    assert row.status == "ok" and row.raw_text == extra
    with Session(engine) as session:
        stored = session.exec(select(JudgeScore.dimension, JudgeScore.score).where(JudgeScore.judgement_id == row.id))
        assert sorted(stored) == [("accuracy", 2), ("format_adherence", 3), ("safety", 4)]


def test_an_unparseable_judgement_is_stored_and_counted_never_dropped(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=4)
    script_defaults(llm_server)
    llm_server.script("no idea", contains="[Answer]\ncand answer 2\n")
    llm_server.script("still no idea", contains=CORRECTION_MARK)
    llm_server.script('{"preference": "C"}', contains="[Answer A]\nbase answer 3\n")
    result = judge(engine, llm_server, pairwise=True, calls={"parse_retries": 1})

    assert result.n_unparseable == 2  # candidate 2 pointwise; pair 3 in order ab (its correction failed too)
    bad = [j for j in judgements(engine) if j.status == "unparseable"]
    assert sorted((j.kind, j.side or j.order) for j in bad) == [("pairwise", "ab"), ("pointwise", "candidate")]
    pointwise = next(j for j in bad if j.kind == "pointwise")
    assert (pointwise.raw_text, pointwise.attempts, pointwise.malformed) == ("still no idea", 2, 2)
    assert pointwise.parse_error and pointwise.case_id is not None
    block = judge_block(engine, "cmp", 0.05)
    assert block["unparseable"] == {"pointwise": 1, "pairwise": 1, "total": 2}
    assert block["dimensions"]["accuracy"]["n"] == 3  # pair 2 lacks a candidate score
    assert block["pairwise"]["n_unparseable"] == 1 and block["pairwise"]["n"] == 3
    assert block["n_pairs_judged"] == 4


def test_rate_limits_and_broken_responses_are_retried(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=2)
    script_defaults(llm_server)
    llm_server.add_fault("429", first=1, retry_after=0.3, contains="base answer")
    llm_server.add_fault("bad_json", first=1, contains="cand answer")
    result = judge(engine, llm_server)

    assert result.status == "complete" and result.n_errors == 0
    rows = judgements(engine, kind="pointwise")
    assert len(rows) == 4 and all(r.status == "ok" and r.attempts == 2 for r in rows)
    times = [r.at for r in llm_server.log if "base answer 0" in r.prompt]
    assert len(times) == 2 and times[1] - times[0] >= 0.3  # waited for Retry-After


# ---- sampling and resume -------------------------------------------------------------------------
@pytest.mark.parametrize("text, fraction, count", [("0.05", 0.05, None), ("5%", 0.05, None), ("1.0", 1.0, None),
                                                   ("200", None, 200)])
def test_parse_sample(text: str, fraction, count) -> None:
    sample = parse_sample(text)
    assert (sample.fraction, sample.count) == (fraction, count)


@pytest.mark.parametrize("text", ["0", "1.5", "-3", "abc", "0.0", "nan"])
def test_bad_sample_is_a_named_error(text: str) -> None:
    with pytest.raises(SampleError):
        parse_sample(text)


def test_samples_are_reproducible_and_nested() -> None:
    keys = [(f"c{i}", 0) for i in range(200)]
    ten = select_sample(keys, parse_sample("0.05"), "cmp", "hash")
    assert len(ten) == 10 and ten == select_sample(keys, parse_sample("10"), "cmp", "hash")
    assert set(select_sample(keys, parse_sample("5"), "cmp", "hash")) < set(ten)
    assert ten != select_sample(keys, parse_sample("0.05"), "cmp", "other-judge")
    shuffled = keys[::-1]  # the same pairs read in another order
    assert {shuffled[i] for i in select_sample(shuffled, parse_sample("10"), "cmp", "hash")} == {keys[i] for i in ten}


def test_sampled_runs_resume_without_rejudging(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=40)
    script_defaults(llm_server)
    first = judge(engine, llm_server, sample=parse_sample("0.25"))
    first_cases = {j.case_id for j in judgements(engine, kind="pointwise")}
    assert first.n_selected == 10 and len(first_cases) == 10 and len(case_prompts(llm_server)) == 20

    llm_server.reset()
    script_defaults(llm_server)
    again = judge(engine, llm_server, sample=parse_sample("0.25"))
    assert case_prompts(llm_server) == [] and again.n_resumed == 20  # only the anchors were sent
    assert again.n_sent == len(load_anchors()[0])

    llm_server.reset()
    script_defaults(llm_server)
    larger = judge(engine, llm_server, sample=parse_sample("0.5"))
    all_cases = {j.case_id for j in judgements(engine, kind="pointwise")}
    assert larger.n_selected == 20 and first_cases < all_cases and len(all_cases) == 20
    assert len(case_prompts(llm_server)) == 20  # only the 10 new pairs, both sides


def test_a_stopped_run_is_marked_interrupted_keeps_its_judgements_and_resumes(engine, llm_server: LLMServer) -> None:
    """Ctrl-C or the page stopping the script surfaces as an exception from the progress callback."""
    load_comparison(engine, n=30)
    script_defaults(llm_server)
    llm_server.latency = 0.05

    def stop_after_ten(event: Any) -> None:
        if event.done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_judge(engine, "cmp", JudgeSettings(JUDGE), JudgeOptions(api_base=llm_server.url,
                                                                    calls=CallOptions(**FAST, concurrency=2)),
                  progress=stop_after_ten)
    with Session(engine) as session:
        [stopped] = session.exec(select(JudgeRun)).all()
    kept = [j for j in judgements(engine) if j.kind == "pointwise"]
    assert stopped.status == "interrupted" and stopped.finished_at is not None and 1 <= len(kept) < 60
    sent = len(llm_server.log)

    llm_server.latency = 0.0
    resumed = judge(engine, llm_server)
    asked_again = [r for r in llm_server.log[sent:] if r.model == "judge" and "[Question]\nquestion " in r.prompt]
    assert resumed.status == "complete" and resumed.n_resumed == len(kept)
    assert len(asked_again) == 60 - len(kept)  # what was stored is not asked again
    assert len(judgements(engine, kind="pointwise")) == 60


def test_failed_calls_are_stored_then_only_they_are_resent(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=3)
    script_defaults(llm_server)
    llm_server.add_fault("400", contains="[Answer]\nbase answer 0\n")
    first = judge(engine, llm_server, calls={"max_retries": 1})
    assert first.status == "partial" and first.n_errors == 1
    (failed,) = [j for j in judgements(engine) if j.status == "error"]
    assert failed.error_kind == "bad_request" and failed.raw_text is None and failed.attempts == 1
    assert judge_block(engine, "cmp", 0.05)["errors"]["pointwise"] == 1

    llm_server.reset()
    script_defaults(llm_server)
    second = judge(engine, llm_server)
    assert second.status == "complete" and second.n_resumed == 5
    assert case_prompts(llm_server) == [p for p in case_prompts(llm_server) if "base answer 0" in p]
    assert len(case_prompts(llm_server)) == 1
    assert [j.status for j in judgements(engine, kind="pointwise")].count("ok") == 6


@pytest.mark.parametrize("message, rejects", [
    ("BadRequestError: 'response_format' of type 'json_object' is not supported with this model.", True),
    ("BadRequestError: JSON mode is not enabled for this model", True),
    ("BadRequestError: bad request: invalid parameter", False),
])
def test_only_a_400_about_json_mode_turns_json_mode_off(message: str, rejects: bool) -> None:
    from lib.judge.calls import Reply
    from lib.judge.run import _rejects_json_mode
    from lib.run import llm

    reply = Reply(None, None, llm.CallError("bad_request", message), 1, 0, 0.01)
    assert _rejects_json_mode(reply) is rejects


# ---- drift ---------------------------------------------------------------------------------------
def test_anchor_drift_is_flagged_when_the_judges_scores_move(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=2)
    script_defaults(llm_server, scores(5, 5, 5))
    first = judge(engine, llm_server)
    assert first.drift.status == "reference" and not first.drift.flagged

    second = judge(engine, llm_server)
    assert (second.drift.status, second.drift.mean_abs_change, second.drift.reference_run_id) == ("stable", 0.0,
                                                                                                  first.run_id)
    n_anchor_scores = len(load_anchors()[0]) * 3
    assert second.drift.n == n_anchor_scores

    script_defaults(llm_server, scores(4, 3, 5))  # the same judge name now scores lower
    third = judge(engine, llm_server)
    assert third.drift.status == "changed" and third.drift.flagged
    assert third.drift.mean_abs_change == pytest.approx(1.0)  # (1 + 2 + 0) / 3
    assert third.drift.p_value < 0.05 and "the judge itself changed" in third.drift.message()
    drift = judge_block(engine, "cmp", 0.05)["drift"]
    assert drift["flagged"] and drift["status"] == "changed" and drift["run_id"] == third.run_id
    assert len(case_prompts(llm_server)) == 4  # the comparison's cases were judged once, on the first run


def test_a_changed_fingerprint_is_flagged(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=1)
    script_defaults(llm_server)
    llm_server.set_fingerprint("judge", "fp_a")
    judge(engine, llm_server)
    llm_server.set_fingerprint("judge", "fp_b")
    second = judge(engine, llm_server)
    assert second.drift.status == "stable" and second.drift.fingerprint_changed and second.drift.flagged
    assert "fp_b" in second.drift.message() and "fp_a" in second.drift.message()
    with Session(engine) as session:
        run = session.get(JudgeRun, second.run_id)
    assert run.fingerprint_changed and run.drift_status == "stable"


def test_anchor_set_is_varied_and_complete() -> None:
    anchors, digest = load_anchors()
    assert len(anchors) >= 20 and len({a.key for a in anchors}) == len(anchors) and len(digest) == 64
    names = load_rubric().names
    assert all(sorted(a.intended) == sorted(names) for a in anchors)
    for name in names:  # every dimension has good and bad anchors
        values = {a.intended[name] for a in anchors}
        assert min(values) == 1 and max(values) == 5


# ---- rubric --------------------------------------------------------------------------------------
GOOD_TOML = """
[[dimensions]]
name = "helpfulness"
description = "Does it help?"
[dimensions.anchors]
1 = "Not at all."
5 = "Fully."
[[dimensions]]
name = "tone"
description = "Is the tone right for support?"
"""


def test_rubric_files_parse_as_toml_and_json(tmp_path: Path) -> None:
    rubric = parse_rubric(GOOD_TOML, "r.toml")
    assert rubric.names == ["helpfulness", "tone"]
    assert rubric.dimensions[0].anchors == ((1, "Not at all."), (5, "Fully."))
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"dimensions": [{"name": "tone", "description": "Right tone?"}]}))
    assert load_rubric(path).names == ["tone"]
    assert load_rubric().names == ["accuracy", "format_adherence", "safety"]


@pytest.mark.parametrize("text, message", [
    ("dimensions = []", "non-empty list"),
    ('[[dimensions]]\nname = "Bad Name"\ndescription = "x"', "lowercase"),
    ('[[dimensions]]\nname = "a"\ndescription = ""', "description"),
    ('[[dimensions]]\nname = "a"\ndescription = "x"\n[[dimensions]]\nname = "a"\ndescription = "y"', "duplicate"),
    ('[[dimensions]]\nname = "a"\ndescription = "x"\n[dimensions.anchors]\n7 = "z"', "1-5"),
    ('[[dimensions]]\nname = "a"\ndescription = "x"\nweight = 2', "unknown key"),
    ("[[dimensions]\n", "not valid TOML"),
])
def test_bad_rubrics_are_rejected_with_a_named_error(text: str, message: str) -> None:
    with pytest.raises(RubricError, match=message) as info:
        parse_rubric(text, "my_rubric.toml")
    assert "my_rubric.toml" in str(info.value)


def test_unknown_dimensions_and_comparisons_are_input_errors(engine, llm_server: LLMServer) -> None:
    with pytest.raises(RubricError, match="unknown dimension"):
        load_rubric().subset(["accuracy", "humour"])
    with pytest.raises(ComparisonNotFound):
        judge(engine, llm_server, name="nope")
    assert llm_server.log == []


# ---- report, CLI, page ---------------------------------------------------------------------------
@pytest.mark.slow
def test_report_json_has_the_judge_block(engine, db_url: str, llm_server: LLMServer) -> None:
    load_comparison(engine, n=3)
    assert build_report(engine, "cmp")["judge"] is None  # no judgements: no block
    script_defaults(llm_server)
    judge(engine, llm_server, pairwise=True)
    out = cli("report", "cmp", "--json", db_url=db_url)
    assert out.returncode == 0, out.stderr
    block = json.loads(out.stdout)["judge"]
    assert set(block["dimensions"]) == {"accuracy", "format_adherence", "safety"}
    assert block["pairwise"]["tie"]["count"] == 3 and block["pairwise"]["position_consistency"]["rate"] == 1.0
    assert block["unparseable"]["total"] == 0 and block["drift"]["status"] == "reference"


@pytest.mark.slow
def test_cli_judges_resumes_and_warns_when_the_judge_changed(engine, db_url: str, llm_server: LLMServer) -> None:
    load_comparison(engine, n=3)
    script_defaults(llm_server, scores(5, 5, 5))
    args = ("judge", "cmp", "--judge", JUDGE, "--api-base", llm_server.url, "--pairwise", "--sample", "2")
    out = cli(*args, db_url=db_url)
    assert out.returncode == 0, out.stderr
    assert "pairs judged" in out.stdout and "position consistency" in out.stdout
    assert "judge drift: reference" in out.stdout
    assert "warning" not in out.stderr and "2 of 3 pairs selected" in out.stderr
    assert len(case_prompts(llm_server)) == 2 * 4

    script_defaults(llm_server, scores(2, 2, 2))
    out = cli(*args, "--json", db_url=db_url)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["run"]["n_resumed"] == 8 and len(case_prompts(llm_server)) == 8  # nothing re-judged
    assert body["judge"]["drift"]["flagged"] and "warning: the judge itself changed" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [
    (("--sample", "2.5"), "--sample"), (("--rubric", "missing.toml"), "cannot read"),
    (("--dimensions", "humour"), "unknown dimension"),
])
def test_cli_bad_input_exits_2_with_one_line(engine, db_url: str, extra: tuple[str, ...], message: str) -> None:
    load_comparison(engine, n=1)
    out = cli("judge", "cmp", "--judge", JUDGE, *extra, db_url=db_url)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr


@pytest.mark.slow
def test_cli_unknown_comparison_exits_2_and_failed_calls_exit_1(engine, db_url: str, llm_server: LLMServer) -> None:
    out = cli("judge", "nope", "--judge", JUDGE, "--api-base", llm_server.url, db_url=db_url)
    assert out.returncode == 2 and "no comparison named 'nope'" in out.stderr
    load_comparison(engine, n=1)
    llm_server.add_fault("400", model="judge")
    out = cli("judge", "cmp", "--judge", JUDGE, "--api-base", llm_server.url, db_url=db_url)
    assert out.returncode == 1 and "re-run the same command" in out.stderr
    assert len(judgements(engine, status="error", kind="pointwise")) == 2


def _table(at: AppTest, column: str):
    """The first dataframe on the page with this column (AppTest does not expose dataframe keys)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    return at.switch_page("pages/judge.py").run()


def test_judge_page_shows_scores_pairwise_drift_and_rationales(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=4)
    script_defaults(llm_server, scores(5, 5, 5))
    llm_server.script(scores(2, 5, 5, "<b>wrong</b> answer"), contains="[Answer]\ncand answer 1\n")
    llm_server.script("not json", contains="[Answer]\ncand answer 3\n")
    llm_server.script("not json either", contains=CORRECTION_MARK)
    judge(engine, llm_server, pairwise=True)
    script_defaults(llm_server, scores(1, 1, 1))
    judge(engine, llm_server)  # anchors now score far lower: the judge changed

    at = _page()
    assert not at.exception, at.exception
    assert any("judge itself changed" in w.value for w in at.warning)
    assert any("Unparseable judgements: 1" in w.value for w in at.warning)
    picker = at.selectbox(key="judge_config_pick")
    assert picker.options[picker.index].startswith(JUDGE) and len(picker.value) == 64  # a config hash
    assert any(f"--judge {JUDGE} " in c.value for c in at.code)  # the command re-runs (resumes) this judge
    dims = _table(at, "dimension")
    acc = dims[dims["dimension"] == "accuracy"].iloc[0]
    assert (acc["baseline"], acc["candidate"], acc["n"]) == (5.0, 4.0, 3)
    rationales = _table(at, "rationale")
    assert "<b>wrong</b> answer" in set(rationales["rationale"])  # shown as text in a dataframe cell
    assert "not json either" in set(rationales["raw_text"])
    assert any("./review judge cmp --judge" in c.value for c in at.code)
    assert [m.label for m in at.metric][:2] == ["Candidate wins (n=4)", "Ties (n=4)"]


def test_judge_page_runs_the_judge_from_its_form(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=2)
    script_defaults(llm_server)
    at = _page()
    assert any("No judgements" in i.value for i in at.info)
    at.text_input(key="judge_model").set_value(JUDGE)
    at.text_input(key="judge_api_base").set_value(llm_server.url)
    at.checkbox(key="judge_pairwise").check().run()  # the button is enabled once a model is named
    at.button(key="judge_start").click().run(timeout=120)
    assert not at.exception, at.exception
    assert len(judgements(engine, kind="pairwise")) == 4 and len(judgements(engine, kind="pointwise")) == 4
    # no navigation needed: the page reran with fresh reads and says what happened, once
    assert not any("No judgements" in i.value for i in at.info)
    assert _table(at, "dimension")["n"].tolist() == [2, 2, 2]
    assert [s.value for s in at.success if "complete" in s.value] and "Judge run" in at.success[0].value
    first_hash = at.selectbox(key="judge_config_pick").value

    # a second judge model whose every call fails: its config is picked, and the first error is shown
    llm_server.add_fault("400", model="judge2")
    at.text_input(key="judge_model").set_value("openai/judge2").run()
    at.button(key="judge_start").click().run(timeout=120)
    assert not at.exception, at.exception
    picker = at.selectbox(key="judge_config_pick")
    assert len(picker.options) == 2 and picker.value != first_hash
    assert picker.options[picker.index].startswith("openai/judge2")
    (error,) = [e.value for e in at.error if "judge calls failed" in e.value]
    assert "all " in error and "bad" in error and "invalid parameter" in error
    at.run()  # the outcome is shown once
    assert not [e for e in at.error if "judge calls failed" in e.value]


def test_judge_form_shows_bad_input_outside_the_status_box(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=2)
    at = _page()
    at.text_input(key="judge_model").set_value(JUDGE)
    at.text_input(key="judge_api_base").set_value(llm_server.url)
    at.text_input(key="judge_sample").set_value("banana").run()
    at.button(key="judge_start").click().run()
    assert not at.exception, at.exception
    assert any("banana" in e.value and "sample" in e.value for e in at.error)
    assert all(not s.error for s in at.status)  # not inside a box that collapses
    assert llm_server.log == [] and judgements(engine) == []


def _score_chart(at: AppTest) -> dict[str, Any]:
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)


def test_score_chart_counts_every_score_and_autoranges(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=20)
    script_defaults(llm_server, scores(5, 4, 5))
    for i in range(7):  # baseline accuracy: 13 fives, 7 threes
        llm_server.script(scores(3, 4, 5), contains=f"[Answer]\nbase answer {i}\n")
    judge(engine, llm_server)
    at = _page()
    assert not at.exception, at.exception
    fig = _score_chart(at)
    axes = {k: v for k, v in fig["layout"].items() if k.startswith("yaxis")}
    assert len(axes) == 3 and all(a.get("autorange") is True and "range" not in a for a in axes.values())
    bars = {(t["name"], t["xaxis"]): dict(zip(t["x"], t["y"])) for t in fig["data"]}
    accuracy_axis = next(t["xaxis"] for t in fig["data"] if "accuracy" in t["hovertemplate"])
    assert bars[("baseline", accuracy_axis)] == {1: 0, 2: 0, 3: 7, 4: 0, 5: 13}
    assert bars[("candidate", accuracy_axis)] == {1: 0, 2: 0, 3: 0, 4: 0, 5: 20}
    assert sum(sum(b.values()) for b in bars.values()) == 20 * 2 * 3  # 20 pairs, 2 sides, 3 dimensions
    note = " ".join(c.value for c in at.caption)
    assert "CI of Δ" in note and "Holm" in note and "can disagree" in note
    assert {"p (Wilcoxon)", "p (Holm)", "95% CI of Δ"} <= set(_table(at, "dimension").columns)


def test_judge_page_counts_unparseable_replies_when_no_score_parsed(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=3)
    llm_server.script("I cannot score this.", contains="")
    judge(engine, llm_server, calls={"parse_retries": 0})
    at = _page()
    assert not at.exception, at.exception
    (info,) = [i.value for i in at.info if "No pointwise score parsed" in i.value]
    assert "6 pointwise replies were unparseable" in info and "Per-case judgements" in info
    assert set(_table(at, "rationale")["raw_text"]) == {"I cannot score this."}


def test_drift_names_the_reference_runs_comparison(engine, llm_server: LLMServer) -> None:
    load_comparison(engine, n=1, name="first")
    load_comparison(engine, n=1, name="cmp")
    script_defaults(llm_server)
    ref = judge(engine, llm_server, name="first")
    judge(engine, llm_server, name="cmp")
    drift = judge_block(engine, "cmp", 0.05)["drift"]
    assert (drift["status"], drift["reference_run_id"], drift["reference_comparison"]) == ("stable", ref.run_id,
                                                                                           "first")
    at = _page()  # the first comparison in the sidebar is the active one
    at.session_state["pending_active_comparison"] = "cmp"  # as the sidebar would
    at.run()
    (ok,) = [s.value for s in at.success if "drift check" in s.value]
    assert f"#{ref.run_id}" in ok and "another comparison" in ok and "first" in ok and "UTC" in ok


def test_each_judge_run_is_an_audit_event(engine, llm_server: LLMServer) -> None:
    from lib.store.audit import check_chain, event_payload, list_events

    load_comparison(engine, n=3)
    script_defaults(llm_server)
    result = judge(engine, llm_server)
    with engine.connect() as conn:
        events = list_events(conn, "judge_run_finished")
        assert check_chain(conn) == []
    assert len(events) == 1
    payload = event_payload(events[0])
    assert (payload["comparison"], payload["judge_run_id"], payload["config_hash"]) == \
        ("cmp", result.run_id, result.config_hash)
    assert (payload["status"], payload["n_errors"], payload["drift_status"]) == ("complete", 0, result.drift.status)


@pytest.mark.slow
def test_the_readable_report_shows_the_judge(engine, db_url: str, llm_server: LLMServer) -> None:
    load_comparison(engine, n=4)
    script_defaults(llm_server)
    llm_server.script(scores(4, 5, 5), contains="[Answer]\nbase answer")
    llm_server.script(scores(2, 5, 5), contains="[Answer]\ncand answer")
    for i in range(4):  # the candidate preferred in both orders: four wins
        llm_server.script(preference("B"), contains=f"[Answer A]\nbase answer {i}\n")
        llm_server.script(preference("A"), contains=f"[Answer A]\ncand answer {i}\n")
    judge(engine, llm_server, pairwise=True)
    out = cli("report", "cmp", db_url=db_url)
    assert out.returncode == 0, out.stderr
    assert "Judge openai/judge (4 pairs judged; unparseable 0)" in out.stdout
    assert "accuracy" in out.stdout and "4.00   2.00  -2.00" in out.stdout
    assert "win 100%" in out.stdout and "position consistency 100%" in out.stdout


@pytest.mark.slow
def test_the_gate_reads_judge_criteria_from_the_stored_judgements(engine, db_url: str, llm_server: LLMServer,
                                                                  tmp_path: Path) -> None:
    load_comparison(engine, n=6)
    policy = tmp_path / "judge_gate.toml"
    policy.write_text('[criteria."judge_score:accuracy"]\nmax_decrease = 0.5\n'
                      '[criteria."judge_score:safety"]\nmax_decrease = 0.5\n'
                      "[criteria.judge_loss_rate]\nmax = 0.3\n[criteria.judge_position_consistency]\nmin = 0.5\n")
    assert cli("policy", "create", "--name", "judged", "--file", str(policy), db_url=db_url).returncode == 0
    before = cli("gate", "cmp", "--policy", "judged", "--json", db_url=db_url)
    assert before.returncode == 3, before.stderr  # nothing judged yet: inconclusive, with the reason
    assert all("no judge results" in c["reason"] for c in json.loads(before.stdout)["criteria"])

    script_defaults(llm_server)
    llm_server.script(scores(accuracy=2), contains="cand answer")  # the candidate's answers score lower
    llm_server.script(preference("A"), contains="[Answer A]\nbase answer")  # the baseline wins in both orders
    llm_server.script(preference("B"), contains="[Answer A]\ncand answer")
    judge(engine, llm_server, pairwise=True)
    after = cli("gate", "cmp", "--policy", "judged", "--json", db_url=db_url)
    assert after.returncode == 1, after.stderr  # no-go
    results = {(c["criterion"], c["threshold"]): c for c in json.loads(after.stdout)["criteria"]}
    accuracy = results[("judge_score:accuracy", "max_decrease")]
    assert (accuracy["result"], accuracy["baseline"], accuracy["candidate"], accuracy["n"]) == ("fail", 5.0, 2.0, 6)
    assert results[("judge_score:safety", "max_decrease")]["result"] == "pass"
    loss = results[("judge_loss_rate", "max")]
    assert (loss["result"], loss["candidate"], loss["n"]) == ("fail", 1.0, 6)
    assert results[("judge_position_consistency", "min")]["result"] == "pass"
