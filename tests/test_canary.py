"""Canary: [canary] policy sections, unpaired statistics, `canary check` exit codes and audit events."""
from __future__ import annotations

import csv
import gzip
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from sqlalchemy import func
from sqlmodel import Session, select

from lib.governance.policy import PolicyError, create_policy, parse_policy
from lib.release.canary import CanaryInputError, CanaryLogError, CanaryMapping, check_canary, check_history
from lib.release.canary_stats import mean_difference, quantile_ci, quantile_difference, rate_difference
from lib.store.audit import check_chain, event_payload, list_events
from lib.store.entities import AuditEvent

POLICY = b"""alpha = 0.05
[criteria.refusal_rate]
max_increase = 0.02
[canary]
traffic_share = 0.1
min_samples = 200
[canary.triggers.refusal_rate]
max_increase = 0.02
[canary.triggers.error_rate]
max_increase = 0.02
[canary.triggers.latency_p95_s]
max_increase = 0.3
[canary.triggers.judge_score]
max_decrease = 0.5
[canary.triggers.json_valid_rate]
min = 0.9
"""
REFUSAL = "I'm sorry, but I can't help with that."
FIELDS = ("request_id", "timestamp", "arm", "output", "latency_ms", "error", "judge_score")


def rows(arm: str, n: int, *, refusals: int = 0, errors: int = 0, latency_ms: int = 500, judge: float | None = 4.0,
         start: int = 0, day: str = "2031-05-01", output: str = '{"ok": true}') -> list[dict]:
    """n calls of one arm: the first `refusals` refuse, the next `errors` fail; latency varies by +-20%."""
    out = []
    for i in range(n):
        text, error = (REFUSAL, "") if i < refusals else ("", "HTTP 500") if i < refusals + errors else (output, "")
        stamp = f"{day}T10:{(start + i) // 60 % 60:02d}:{i % 60:02d}Z"
        out.append({"request_id": f"{arm}-{start + i}", "timestamp": stamp,
                    "arm": arm, "output": text, "latency_ms": int(latency_ms * (0.8 + 0.4 * (i % 50) / 49)),
                    "error": error, "judge_score": "" if judge is None else judge - (i % 3) * 0.5})
    return out


def write_log(path: Path, data: list[dict], fields: tuple[str, ...] = FIELDS) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(data)
    return path


def cli(db_url: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url}
    env.pop("REVIEW_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "lib", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def policy(engine) -> str:
    create_policy(engine, "canary-gate", POLICY, "canary.toml")
    return "canary-gate"


def check(engine, path: Path, **kwargs):
    mapping = kwargs.pop("mapping", CanaryMapping())
    with path.open("rb") as raw:
        return check_canary(engine, raw, path.name, "canary-gate", mapping, **kwargs)


def healthy() -> list[dict]:
    return rows("control", 3000, refusals=60, errors=15) + rows("canary", 1000, refusals=20, errors=5)


# ---------------------------------------------------------------- policy

def test_canary_section_is_parsed_and_locked_with_the_policy() -> None:
    spec = parse_policy(POLICY, "p.toml")
    assert (spec.canary.traffic_share, spec.canary.min_samples) == (0.1, 200)
    assert {t.metric: t.thresholds for t in spec.canary.triggers}["json_valid_rate"] == {"min": 0.9}
    without = parse_policy(POLICY.split(b"[canary]")[0], "p.toml")
    assert "canary" not in without.canonical_toml() and spec.content_hash() != without.content_hash()
    looser = parse_policy(POLICY.replace(b"max_decrease = 0.5", b"max_decrease = 0.6"), "p.toml")
    assert looser.content_hash() != spec.content_hash()  # a trigger is part of what is locked


@pytest.mark.parametrize("section, key", [
    (b"[canary]\nshare = 0.1\n[canary.triggers.error_rate]\nmax = 0.1\n", "canary.share"),
    (b"[canary]\ntraffic_share = 1.5\n[canary.triggers.error_rate]\nmax = 0.1\n", "canary.traffic_share"),
    (b"[canary]\nmin_samples = 0\n[canary.triggers.error_rate]\nmax = 0.1\n", "canary.min_samples"),
    (b"[canary]\nmin_samples = 10.5\n[canary.triggers.error_rate]\nmax = 0.1\n", "canary.min_samples"),
    (b"[canary]\nmin_samples = 10\n", "canary.triggers"),
    (b"[canary.triggers.accuracy]\nmax_decrease = 0.1\n", "canary.triggers.accuracy"),
    (b"[canary.triggers.error_rate]\nmax_increse = 0.1\n", "canary.triggers.error_rate.max_increse"),
    (b"[canary.triggers.error_rate]\nmax_increase = 2\n", "canary.triggers.error_rate.max_increase"),
    (b"[canary.triggers.latency_p95_s]\nmax_increase = -1\n", "canary.triggers.latency_p95_s.max_increase"),
    (b"[canary.triggers.refusal_rate]\nmin = 0.5\nmax = 0.1\n", "canary.triggers.refusal_rate.min"),
    (b"[canary.triggers.judge_score]\n", "canary.triggers.judge_score"),
    (b'canary = "yes"\n', "canary"),
])
def test_invalid_canary_sections_name_the_key(section: bytes, key: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(b"[criteria.accuracy]\nmin = 0.5\n" + section, "gate.toml")
    assert err.value.key == key and f"key '{key}'" in str(err.value) and str(err.value).startswith("gate.toml:")


# ---------------------------------------------------------------- statistics

def test_newcombe_unpaired_interval_matches_the_paper() -> None:
    # Newcombe (1998), independent proportions, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339.
    m = rate_difference(48, 80, 56, 70, 0.05)
    assert m["delta"] == pytest.approx(0.2, abs=1e-12)
    assert (round(m["ci_low"], 4), round(m["ci_high"], 4)) == (0.0524, 0.3339)
    assert rate_difference(0, 0, 1, 10, 0.05) is None


def test_quantile_interval_covers_the_true_p95() -> None:
    rng = np.random.default_rng(7)
    true_p95 = float(np.exp(1.6449 * 0.5))  # lognormal(0, 0.5)
    covered = sum(lo <= true_p95 <= hi for lo, hi in
                  (quantile_ci(rng.lognormal(0, 0.5, 800), 0.95, 0.05) for _ in range(300)))
    assert 0.92 <= covered / 300 <= 0.99


@pytest.mark.parametrize("n", [400, 3000])  # bootstrap below 1,000 per arm, order statistics from there on
def test_p95_difference_detects_a_shift_and_not_an_equal_pair(n: int) -> None:
    rng = np.random.default_rng(3)
    control = rng.lognormal(0, 0.4, n)
    slower = quantile_difference(control, rng.lognormal(0, 0.4, n) + 1.0, 0.05)
    same = quantile_difference(control, rng.lognormal(0, 0.4, n), 0.05)
    assert slower["ci_low"] > 0.5 and slower["ci_method"] == ("bootstrap" if n < 1000 else "order-statistic")
    assert same["ci_low"] < 0 < same["ci_high"]


def test_mean_difference_welch_and_bootstrap_agree() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(4, 1, 1500), rng.normal(3.7, 1, 1500)
    welch, boot = mean_difference(a, b, 0.05), mean_difference(a[:999], b[:999], 0.05)
    assert welch["ci_method"] == "welch" and boot["ci_method"] == "bootstrap"
    assert welch["ci_high"] < 0 and boot["ci_high"] < 0
    assert welch["delta"] == pytest.approx(b.mean() - a.mean())


# ---------------------------------------------------------------- the check

def test_healthy_canary_continues_and_is_an_audit_event(engine, policy: str, tmp_path: Path) -> None:
    result = check(engine, write_log(tmp_path / "log.csv", healthy()))
    assert result.decision == "continue" and result.exit_code == 0
    assert result.n == {"control": 3000, "canary": 1000}
    statuses = {(t.metric, t.threshold): t.status for t in result.triggers}
    assert statuses[("refusal_rate", "max_increase")] == "clear"
    assert statuses[("json_valid_rate", "min")] == "no data"  # no schema given
    assert result.traffic_share["observed"] == 0.25 and result.traffic_share["matches_declared"] is False
    with engine.connect() as conn:
        events = list_events(conn, "canary_checked")
        assert check_chain(conn) == []
    payload = event_payload(events[-1])
    assert (payload["decision"], payload["policy_name"], payload["exit_code"]) == ("continue", policy, 0)
    assert payload["log_sha256"] == result.log_sha256 and len(result.log_sha256) == 64


def test_refusal_spike_rolls_back(engine, policy: str, tmp_path: Path) -> None:
    data = rows("control", 900, refusals=18) + rows("canary", 300, refusals=45)  # 2% -> 15%
    result = check(engine, write_log(tmp_path / "log.csv", data))
    assert result.decision == "rollback"
    fired = [t for t in result.triggers if t.status == "fire"]
    assert [t.metric for t in fired] == ["refusal_rate"] and fired[0].ci[0] > 0.02


def test_small_increase_inside_the_margin_does_not_fire(engine, policy: str, tmp_path: Path) -> None:
    data = rows("control", 900, refusals=18) + rows("canary", 300, refusals=9)  # 2% -> 3%, margin 2 pp
    result = check(engine, write_log(tmp_path / "log.csv", data))
    refusal = next(t for t in result.triggers if t.metric == "refusal_rate")
    assert refusal.status == "watching" and result.decision == "continue"


def test_below_min_samples_waits_even_when_a_trigger_would_fire(engine, policy: str, tmp_path: Path) -> None:
    data = rows("control", 900) + rows("canary", 150, errors=60)
    result = check(engine, write_log(tmp_path / "log.csv", data))
    assert result.decision == "wait" and result.exit_code == 3
    assert any("would fire" in note and "error_rate" in note for note in result.notes)


def test_latency_and_judge_triggers(engine, policy: str, tmp_path: Path) -> None:
    data = rows("control", 600, latency_ms=500) + rows("canary", 400, latency_ms=1200, judge=3.0)
    result = check(engine, write_log(tmp_path / "log.csv", data))
    statuses = {t.metric: t.status for t in result.triggers}
    assert statuses["latency_p95_s"] == "fire" and statuses["judge_score"] == "fire"
    assert result.metrics["latency_p95_s"]["delta"] == pytest.approx(0.84, abs=0.05)
    without_judge = check(engine, write_log(tmp_path / "nojudge.csv", data, FIELDS[:-1]))
    judge = next(t for t in without_judge.triggers if t.metric == "judge_score")
    assert judge.status == "no data" and "no judge score column" in judge.reason


def test_schema_validity_level_trigger(engine, policy: str, tmp_path: Path) -> None:
    data = rows("control", 300) + rows("canary", 150, output='{"ok": true}') + rows(
        "canary", 150, output="ok!", start=150)
    schema = json.dumps({"type": "object", "required": ["ok"]})
    result = check(engine, write_log(tmp_path / "log.csv", data), mapping=CanaryMapping(schema=schema))
    valid = next(t for t in result.triggers if t.metric == "json_valid_rate")
    assert valid.status == "fire" and valid.observed == 0.5 and result.decision == "rollback"


def test_since_keeps_the_recent_window_and_marks_post_hoc(engine, policy: str, tmp_path: Path) -> None:
    bad = rows("control", 300, day="2020-01-01") + rows("canary", 300, refusals=200, day="2020-01-01")
    good = rows("control", 300, start=1000) + rows("canary", 300, start=1000)
    path = write_log(tmp_path / "log.csv.gz", bad + good)
    everything = check(engine, path)
    assert everything.decision == "rollback" and everything.post_hoc is True
    recent = check(engine, path, since="2031-01-01")
    assert recent.decision == "continue" and recent.n == {"control": 300, "canary": 300}
    assert recent.post_hoc is False and recent.window_first.startswith("2031-05-01")
    assert [c["decision"] for c in check_history(engine, policy)] == ["continue", "rollback"]


def test_model_column_with_control_and_canary_values(engine, policy: str, tmp_path: Path) -> None:
    data = [{**r, "model": "v1" if r["arm"] == "control" else "v2"} for r in healthy()]
    path = write_log(tmp_path / "log.csv", data, ("timestamp", "model", "output", "latency_ms"))
    result = check(engine, path, mapping=CanaryMapping(control="v1", canary="v2"))
    assert result.n == {"control": 3000, "canary": 1000}


@pytest.mark.parametrize("content, mapping, kwargs, error, fragment", [
    (b"arm,output\ncontrol,a\nblue,b\n", CanaryMapping(), {}, CanaryLogError, "line 3: field 'arm' is 'blue'"),
    (b"arm,output,latency_ms\ncontrol,a,12\ncanary,b,slow\n", CanaryMapping(), {}, CanaryLogError, "not a number"),
    (b"model,output\nv1,a\n", CanaryMapping(), {}, CanaryLogError, "pass --control and --canary"),
    (b"arm,text\ncontrol,a\n", CanaryMapping(), {}, CanaryLogError, "pass --output-col"),
    (b"arm,output\ncontrol,a\n", CanaryMapping(), {"since": "2025-01-01"}, CanaryLogError, "no timestamp column"),
    (b"arm,output\ncontrol,a\n", CanaryMapping(), {"since": "last tuesday"}, CanaryInputError, "not an ISO 8601"),
    (b"arm,output\ncontrol,a\n", CanaryMapping(schema="{"), {}, Exception, "not valid JSON"),
])
def test_bad_input_is_a_named_error_and_records_nothing(engine, policy: str, tmp_path: Path, content: bytes,
                                                        mapping: CanaryMapping, kwargs: dict, error: type,
                                                        fragment: str) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(content)
    with pytest.raises(error, match=fragment):
        check(engine, path, mapping=mapping, **kwargs)
    with Session(engine) as s:
        checked = select(func.count()).select_from(AuditEvent).where(AuditEvent.kind == "canary_checked")
        assert s.exec(checked).one() == 0


# ---------------------------------------------------------------- the command

@pytest.mark.slow
def test_cli_exit_codes_continue_rollback_wait_and_bad_input(db_url: str, engine, policy: str, tmp_path: Path) -> None:
    healthy_log = write_log(tmp_path / "healthy.csv", healthy())
    spike = write_log(tmp_path / "spike.jsonl", [])
    spike.write_text("".join(json.dumps(r) + "\n" for r in rows("control", 900, refusals=18)
                             + rows("canary", 300, refusals=60)))
    early = write_log(tmp_path / "early.csv", rows("control", 100) + rows("canary", 10))
    go = cli(db_url, "canary", "check", "--policy", policy, "--log", healthy_log)
    assert go.returncode == 0, go.stderr
    assert go.stdout.startswith("Canary: CONTINUE") and "refusal_rate" in go.stdout
    back = cli(db_url, "canary", "check", "--policy", policy, "--log", spike, "--json")
    assert back.returncode == 1, back.stderr
    body = json.loads(back.stdout)
    assert body["decision"] == "rollback" and body["exit_code"] == 1
    wait = cli(db_url, "canary", "check", "--policy", policy, "--log", early, "--since", "2031-05-01T00:00:00Z")
    assert wait.returncode == 3 and "WAIT" in wait.stdout
    create_policy(engine, "no-canary", b"[criteria.accuracy]\nmin = 0.5\n")
    (tmp_path / "x.json").write_text("[]")
    for args, fragment in ((("--policy", "missing", "--log", healthy_log), "no policy 'missing'"),
                           (("--policy", "no-canary", "--log", healthy_log), "has no [canary] section"),
                           (("--policy", policy, "--log", tmp_path / "absent.csv"), "no such file"),
                           (("--policy", policy, "--log", tmp_path / "x.json"), "unsupported log file type")):
        bad = cli(db_url, "canary", "check", *args)
        assert bad.returncode == 2 and bad.stderr.startswith("error: ") and fragment in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    with Session(engine) as s:
        kinds = s.exec(select(AuditEvent.kind).where(AuditEvent.kind == "canary_checked")).all()
    assert len(kinds) == 3


# ---------------------------------------------------------------- the page

def _page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    return at.switch_page("pages/canary.py").run()


def test_canary_page_without_a_canary_policy(engine) -> None:
    create_policy(engine, "plain", b"[criteria.accuracy]\nmin = 0.5\n")
    at = _page()
    assert not at.exception, at.exception
    assert any("No policy declares a canary" in i.value for i in at.info)


def test_canary_page_checks_a_log_by_path_and_lists_the_history(engine, policy: str, tmp_path: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.setenv("REVIEW_LOG_DIR", str(tmp_path))
    data = rows("control", 900, refusals=18) + rows("canary", 300, refusals=45)
    path = write_log(tmp_path / "spike.csv", data)
    at = _page()
    assert not at.exception, at.exception
    declared = at.dataframe[0].value
    criteria = set(zip(declared["metric"], declared["threshold"], declared["margin"]))
    assert ("refusal_rate", "max_increase", 0.02) in criteria
    at.text_input(key="canary_path").set_value(str(path)).run()
    at.button(key="canary_check").click().run()
    assert not at.exception, at.exception
    assert at.error and "rollback" in at.error[0].value
    rates, others, triggers, history = (d.value for d in at.dataframe[1:])
    refusal = rates.set_index("metric").loc["refusal_rate"]
    assert refusal["control"] == 0.02 and refusal["canary"] == 0.15
    assert (refusal["n control"], refusal["n canary"]) == (900, 300)
    low, high = (float(x.rstrip("%")) / 100 for x in refusal["canary CI"].strip("[]").split(", "))
    assert low < 0.15 < high and float(refusal["delta CI"].strip("[]").split(", ")[0].rstrip("%")) > 2
    assert refusal["control CI"].startswith("[") and refusal["control CI"].endswith("%]")
    assert set(others["metric"]) == {"latency_p95_s", "judge_score"}  # not rates: their own table and format
    assert others.set_index("metric").loc["judge_score", "control CI"].startswith("[")
    assert "fire" in triggers["status"].tolist()
    assert history["decision"].tolist() == ["rollback"] and history["fired"].tolist() == ["refusal_rate"]
    assert at.metric[0].value == "rollback"  # the decision so far
    [command] = [c.value for c in at.code if c.value.startswith("./review canary check")]
    assert command == f"./review canary check --policy canary-gate --log {path}"
    words = shlex.split(command)[1:]  # as printed, run by the CLI: the same decision (exit 1: roll back)
    assert cli(os.environ["DATABASE_URL"], *words).returncode == 1


def test_canary_page_keeps_the_result_until_a_new_check(engine, policy: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REVIEW_LOG_DIR", str(tmp_path))
    write_log(tmp_path / "spike.csv", rows("control", 900, refusals=18) + rows("canary", 300, refusals=45))
    write_log(tmp_path / "healthy.csv", healthy())
    at = _page()
    at.text_input(key="canary_path").set_value("spike.csv").run()
    at.button(key="canary_check").click().run()
    at.text_input(key="canary_since").set_value("2031-05-01T00:00:00Z").run()  # any other widget
    assert not at.exception, at.exception
    assert any("Decision: **rollback**" in e.value for e in at.error) and len(at.dataframe) == 5
    at.text_input(key="canary_path").set_value("healthy.csv").run()  # another log: not its result
    assert not any("Decision" in e.value for e in at.error) and not at.success
    at.text_input(key="canary_path").set_value("spike.csv").run()  # the last check is kept until a new one
    assert any("Decision: **rollback**" in e.value for e in at.error)
    at.text_input(key="canary_path").set_value("healthy.csv").run()
    at.button(key="canary_check").click().run()
    assert at.success and "Decision: **continue**" in at.success[0].value
    at.text_input(key="canary_path").set_value("spike.csv").run()
    assert not any("Decision" in e.value for e in at.error)  # replaced by the new check


def test_canary_page_reads_only_files_in_the_log_directory(engine, policy: str, tmp_path: Path, monkeypatch) -> None:
    logs = tmp_path / "logs"
    (logs / "sub").mkdir(parents=True)
    monkeypatch.setenv("REVIEW_LOG_DIR", str(logs))
    outside = write_log(tmp_path / "outside.csv", healthy())
    (logs / "escape.csv").symlink_to(outside)
    at = _page()
    generic = []
    for typed in (str(outside), "../outside.csv", "escape.csv", str(ROOT / "README.md"), "missing.csv", "/etc"):
        at.text_input(key="canary_path").set_value(typed).run()
        assert not at.exception, at.exception
        assert at.button(key="canary_check").disabled
        generic.append(at.error[0].value.replace(_escaped(typed), "PATH"))
    assert set(generic) == {"no log file 'PATH' in the log directory"}  # exists or not: the same answer
    at.text_input(key="canary_path").set_value("sub").run()
    assert "is a directory" in at.error[0].value
    write_log(logs / "sub" / "ok.csv", healthy())
    at.text_input(key="canary_path").set_value("sub/ok.csv").run()
    at.button(key="canary_check").click().run()
    assert not at.exception and at.success and "continue" in at.success[0].value


def _escaped(text: str) -> str:
    from pages._shared import md

    return md(text)


def test_canary_page_shows_bad_input_escaped(engine, policy: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REVIEW_LOG_DIR", str(tmp_path))
    at = _page()
    at.text_input(key="canary_path").set_value(str(tmp_path / "no_such_*file*.csv")).run()
    assert not at.exception and at.error and "no\\_such\\_\\*file\\*\\.csv" in at.error[0].value
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"arm,output\ncontrol,a\npurple,b\n")
    at.text_input(key="canary_path").set_value(str(bad)).run()
    at.button(key="canary_check").click().run()
    assert not at.exception, at.exception
    assert "Not checked" in at.error[0].value and "purple" in at.error[0].value


def test_a_later_check_with_too_little_data_does_not_bury_a_rollback(engine, policy: str, tmp_path: Path) -> None:
    path = write_log(tmp_path / "spike.csv", rows("control", 900, refusals=18) + rows("canary", 300, refusals=45))
    assert check(engine, path).decision == "rollback"
    assert check(engine, path, since="2040-01-01").decision == "wait"  # an empty window
    at = _page()
    assert not at.exception, at.exception
    assert at.metric[0].value == "wait"  # the latest check, as labelled
    assert any("called for **rollback**" in e.value and "later checks do not undo it" in e.value for e in at.error)
