"""The live runner end to end: real HTTP through litellm to the local test server, a real SQLite file."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from lib.errors import ConfigMismatchError, ReviewInputError
from lib.review.comparisons import list_comparisons
from lib.run import llm
from lib.run.executor import _shares, choose_workers
from lib.run.runner import ModelSpec, ProgressEvent, RunOptions, RunResult, estimate_cost, run_comparison, run_model
from lib.store.columns import to_json
from lib.store.engine import session_scope
from lib.store.entities import AuditEvent, Case, Dataset, Output, Run
from tests.llm_server import LLMServer, default_reply

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(backoff_base=0.02, backoff_cap=0.1)  # retries without slow tests


def make_dataset(engine: Engine, name: str = "golden", n: int = 6, version: int = 1) -> list[str]:
    """A dataset of n text cases, created directly with the entities; returns the prompts."""
    prompts = [f"{name} v{version} question {i}" for i in range(n)]
    with session_scope(engine) as session:
        ds = Dataset(name=name, version=version, content_hash=f"{name}-{version}-{n}", n_cases=n)
        session.add(ds)
        session.flush()
        session.add_all(Case(dataset_id=ds.id, case_key=f"c{i}", position=i, input_text=p)
                        for i, p in enumerate(prompts))
    return prompts


def specs(server: LLMServer, **kwargs: Any) -> dict[str, ModelSpec]:
    return {"baseline": ModelSpec("openai/base", api_base=server.url, **kwargs),
            "candidate": ModelSpec("openai/cand", api_base=server.url, **kwargs)}


def run(engine: Engine, server: LLMServer, name: str = "cmp", dataset: str = "golden",
        progress: Callable[[ProgressEvent], None] | None = None, spec_kwargs: dict | None = None,
        **options: Any) -> RunResult:
    return run_comparison(engine, dataset=dataset, name=name, options=RunOptions(**{**FAST, **options}),
                          progress=progress, **specs(server, **(spec_kwargs or {})))


def outputs(engine: Engine, run_id: int) -> list[Output]:
    with Session(engine) as session:
        return list(session.exec(select(Output).where(Output.run_id == run_id).order_by(Output.case_id)))


@pytest.mark.parametrize("workers", ["in-process", "per-side"])
def test_clean_run_stores_every_output(engine, llm_server: LLMServer, workers: str) -> None:
    prompts = make_dataset(engine)
    llm_server.set_fingerprint("cand", "fp_cand_2")
    llm_server.set_served_model("cand", "cand-2025-06")
    events: list[ProgressEvent] = []
    result = run(engine, llm_server, progress=events.append, workers=workers)

    assert result.status == "complete" and result.errors == 0 and result.missing == 0
    assert result.workers == workers and result.client_cpu_s > 0
    assert llm_server.calls() == 12
    assert (result.candidate.served_model, result.candidate.system_fingerprint) == ("cand-2025-06", "fp_cand_2")
    for side, model in ((result.baseline, "base"), (result.candidate, "cand")):
        rows = outputs(engine, side.run_id)
        assert [r.text for r in rows] == [default_reply(model, p) for p in prompts]
        assert all(r.error is None and r.attempts == 1 and r.finish_reason == "stop" for r in rows)
        assert all(r.latency_s > 0 and r.prompt_tokens == 4 and r.completion_tokens == 6 for r in rows)
        assert all(r.cost_usd is None for r in rows)  # custom openai/... model: price unknown
        assert all(json.loads(r.raw_json)["choices"][0]["message"]["content"] == r.text for r in rows)
        assert side.prompt_tokens == 24 and side.cost_usd is None
    cand_rows = outputs(engine, result.candidate.run_id)
    assert {(r.served_model, r.system_fingerprint) for r in cand_rows} == {("cand-2025-06", "fp_cand_2")}
    with Session(engine) as session:
        runs = session.exec(select(Run)).all()
    assert {r.status for r in runs} == {"complete"} and all(r.finished_at for r in runs)
    last = {e.side: e for e in events}
    assert all((e.done, e.total, e.errors, e.skipped) == (6, 6, 0, 0) for e in last.values())


def test_a_finished_run_has_its_checks_stored(engine, llm_server: LLMServer) -> None:
    from lib.review.checked import CheckCounts, ensure_checked

    make_dataset(engine)
    run(engine, llm_server)
    assert ensure_checked(engine, "cmp") == CheckCounts(0, 0)  # the run stored every check already


def test_messages_system_prompt_template_and_chat_cases(engine, llm_server: LLMServer) -> None:
    chat = [{"role": "system", "content": "own system"}, {"role": "user", "content": "chat turn"}]
    with session_scope(engine) as session:
        ds = Dataset(name="golden", version=1, content_hash="x", n_cases=2)
        session.add(ds)
        session.flush()
        session.add(Case(dataset_id=ds.id, case_key="t", position=0, input_text="plain"))
        session.add(Case(dataset_id=ds.id, case_key="c", position=1, input_text="transcript",
                         messages_json=to_json(chat)))
    run(engine, llm_server, spec_kwargs={"system_prompt": "Be brief.", "prompt_template": "Q: {{input}}"})

    sent = {r.prompt: r.messages for r in llm_server.log if r.model == "base"}
    assert sent["Q: plain"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q: plain"}]
    assert sent["chat turn"] == chat  # a chat that has its own system prompt is sent as is


@pytest.mark.parametrize("kind, first", [("500", 2), ("bad_json", 1), ("no_choices", 1), ("slow", 1)])
def test_transient_faults_end_with_every_output_stored(engine, llm_server: LLMServer, kind: str, first: int) -> None:
    make_dataset(engine, n=4)
    llm_server.add_fault(kind, first=first, delay=12.0)  # slow: past the 4 s client timeout (slack: loaded CI)
    result = run(engine, llm_server, timeout=4.0, max_retries=3)

    assert result.status == "complete" and result.errors == 0
    assert llm_server.calls() == 8 * (first + 1)
    rows = outputs(engine, result.baseline.run_id) + outputs(engine, result.candidate.run_id)
    assert all(r.text and r.attempts == first + 1 for r in rows)


@pytest.mark.parametrize("workers", ["in-process", "per-side"])
def test_429_waits_for_retry_after(engine, llm_server: LLMServer, workers: str) -> None:
    make_dataset(engine, n=2)
    llm_server.add_fault("429", first=1, retry_after=1.0)
    result = run(engine, llm_server, workers=workers)

    assert result.status == "complete"
    for prompt in {r.prompt for r in llm_server.log}:
        times = [r.at for r in llm_server.log if r.prompt == prompt and r.model == "base"]
        assert len(times) == 2
        assert 1.0 <= times[1] - times[0] < 8.0  # backoff alone would have retried after ~0.02 s (slack: loaded CI)


def test_bad_request_is_stored_without_retries(engine, llm_server: LLMServer) -> None:
    prompts = make_dataset(engine, n=3)
    llm_server.add_fault("400", contains=prompts[1])
    result = run(engine, llm_server, max_retries=3)

    assert result.status == "partial" and result.errors == 2
    assert llm_server.calls(prompt=prompts[1]) == 2  # once per side
    bad = [r for r in outputs(engine, result.baseline.run_id) if r.error]
    assert len(bad) == 1 and bad[0].error_kind == "bad_request" and bad[0].text is None and bad[0].attempts == 1


@pytest.mark.parametrize("workers", ["in-process", "per-side"])
def test_errors_outlasting_retries_are_stored_then_only_they_are_resent(engine, llm_server: LLMServer,
                                                                        workers: str) -> None:
    prompts = make_dataset(engine, n=10)
    llm_server.add_fault("500", fraction=0.4)
    first = run(engine, llm_server, max_retries=1, workers=workers)

    failed = {(r.model, r.prompt) for r in llm_server.log if r.fault}
    assert first.status == "partial" and first.errors == len(failed) > 0
    errors = [r for r in outputs(engine, first.baseline.run_id) + outputs(engine, first.candidate.run_id) if r.error]
    assert {(r.error_kind, r.attempts, r.text) for r in errors} == {("server", 2, None)}
    with Session(engine) as session:
        assert {r.status for r in session.exec(select(Run))} == {"partial"}

    llm_server.clear_faults()
    logged = len(llm_server.log)
    second = run(engine, llm_server, max_retries=1, workers=workers)

    resent = [(r.model, r.prompt) for r in llm_server.log[logged:]]
    assert sorted(resent) == sorted(failed)
    assert second.status == "complete" and second.errors == 0
    assert second.baseline.skipped + second.baseline.sent == len(prompts)
    rows = outputs(engine, second.baseline.run_id) + outputs(engine, second.candidate.run_id)
    assert len(rows) == 2 * len(prompts) and all(r.error is None for r in rows)


def test_repeats_sample_each_case_r_times(engine, llm_server: LLMServer) -> None:
    prompts = make_dataset(engine, n=3)
    result = run(engine, llm_server, repeats=3)

    assert result.status == "complete" and result.baseline.total == 9
    assert llm_server.prompt_counts("base") == {p: 3 for p in prompts}
    rows = outputs(engine, result.candidate.run_id)
    assert sorted((r.case_id, r.repeat) for r in rows) == sorted({(r.case_id, k) for r in rows for k in range(3)})


@pytest.mark.parametrize("workers", ["in-process", "per-side"])
def test_interrupted_run_stops_sending_leaves_no_worker_and_resumes(engine, llm_server: LLMServer,
                                                                    workers: str) -> None:
    """Ctrl-C, or Streamlit stopping the script, surfaces as an exception from the progress callback."""
    prompts = make_dataset(engine, n=40)
    llm_server.latency = 0.1
    calls = []

    def interrupt(event: ProgressEvent) -> None:
        calls.append(event)
        if event.done >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(engine, llm_server, progress=interrupt, concurrency=4, workers=workers)
    assert not [p.name for p in multiprocessing.active_children() if p.name.startswith("run-worker")]
    sent = len(llm_server.log)
    time.sleep(0.5)
    assert len(llm_server.log) == sent  # nothing is sent after the run returned
    done = _stored_pairs(engine)
    assert 6 <= len(done) < 80

    llm_server.latency = 0.0
    result = run(engine, llm_server, workers=workers)
    resent = [(r.model, r.prompt) for r in llm_server.log[sent:]]
    everything = {(m, p) for m in ("base", "cand") for p in prompts}
    assert result.status == "complete" and sorted(resent) == sorted(everything - done)


def test_workers_auto_choice_and_concurrency_shares() -> None:
    big, small = {"baseline": 500, "candidate": 500}, {"baseline": 20, "candidate": 20}
    assert choose_workers(RunOptions(concurrency=32), big) == "per-side"
    assert choose_workers(RunOptions(concurrency=32), small) == "in-process"  # start-up would not pay
    assert choose_workers(RunOptions(concurrency=4), big) == "in-process"  # one loop is not CPU-bound
    assert choose_workers(RunOptions(concurrency=32), {"baseline": 1000, "candidate": 0}) == "in-process"
    assert choose_workers(RunOptions(concurrency=1, workers="per-side"), small) == "in-process"  # cannot split
    assert choose_workers(RunOptions(concurrency=2, workers="per-side"), small) == "per-side"
    assert choose_workers(RunOptions(concurrency=32, workers="in-process"), big) == "in-process"
    # With the resident worker host, workers start in ms and this process need not import litellm: any size.
    assert choose_workers(RunOptions(concurrency=32), small, resident_ready=True) == "per-side"
    assert choose_workers(RunOptions(concurrency=4), {"baseline": 3, "candidate": 0}, True) == "per-side"
    assert choose_workers(RunOptions(concurrency=1), small, resident_ready=True) == "in-process"  # cannot split
    assert choose_workers(RunOptions(concurrency=32, workers="in-process"), small, True) == "in-process"
    assert choose_workers(RunOptions(concurrency=32), {"baseline": 0, "candidate": 0}, True) == "in-process"
    assert _shares(32, [1000, 1000]) == [16, 16] and _shares(5, [10, 10]) == [3, 2]
    assert _shares(8, [1000, 10]) == [7, 1] and _shares(2, [1, 1000]) == [1, 1]
    with pytest.raises(ReviewInputError, match="workers must be one of"):
        RunOptions(workers="threads").validate()


@pytest.mark.parametrize("change", ["temperature", "dataset version", "repeats"])
def test_resume_with_another_config_is_refused(engine, llm_server: LLMServer, change: str) -> None:
    make_dataset(engine, n=2)
    run(engine, llm_server)
    kwargs: dict = {}
    if change == "temperature":
        kwargs["spec_kwargs"] = {"temperature": 0.7}
    elif change == "dataset version":
        make_dataset(engine, n=3, version=2)
    else:
        kwargs["repeats"] = 2
    with pytest.raises(ConfigMismatchError, match="comparison 'cmp'"):
        run(engine, llm_server, **kwargs)


def test_cost_estimate_unknown_for_custom_model_known_for_gpt_4o_mini(engine, llm_server: LLMServer) -> None:
    make_dataset(engine, n=5)
    custom = estimate_cost(engine, "golden", ModelSpec("openai/my-local", api_base=llm_server.url), repeats=2)
    priced = estimate_cost(engine, "golden", ModelSpec("gpt-4o-mini", max_tokens=100))

    assert custom.n_calls == 10 and custom.prompt_tokens > 0 and custom.usd is None
    assert "approximate" in custom.note and "no price" in custom.note
    price = llm.model_price("gpt-4o-mini")
    assert priced.usd == pytest.approx(priced.prompt_tokens * price.input_per_token + 500 * price.output_per_token)
    assert priced.usd > 0
    assert llm.model_price("claude-sonnet-4-20250514") is None  # the bundled map says 0.0: unknown, not free


def test_token_counting_never_waits_for_a_tokenizer_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, litellm's Hugging Face tokenizers retry the hub for ~23 s: no connection may be tried."""
    llm.litellm_module()  # imported before sockets are watched
    tried: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        tried.append(address)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    count = llm.count_tokens("together_ai/meta-llama/Llama-3-70b-chat-hf", [{"role": "user", "content": "hi"}])
    assert tried == []
    assert count.tokens > 0 and not count.exact and "approximate" in count.note


CHATS = ([{"role": "user", "content": "Benchmark question number 7: what is 7 plus 7?"}],
         [{"role": "system", "content": "You are ACME's assistant."},
          {"role": "user", "content": "Résumé: naïve café <|endoftext|> 😀 " * 5}],
         [{"role": "user", "content": "hi", "name": "bob"}, {"role": "assistant", "content": "hello"},
          {"role": "user", "content": "x" * 3000}])


def test_prices_and_prompt_tokens_without_litellm_agree_with_litellm() -> None:
    """The cost estimate prices from lib/catalog and counts with tiktoken directly (no ~2 s litellm import):
    every chat model of the bundled map gets litellm's price, and every OpenAI chat model litellm's count."""
    from lib.catalog.catalogue import bundled_catalogue

    litellm = llm.litellm_module()

    def litellm_price(model: str) -> tuple | None:
        try:
            info = litellm.get_model_info(model)
        except Exception:  # noqa: BLE001  - unknown to litellm
            return None
        inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        return None if not inp and not out else (float(inp or 0), float(out or 0), info.get("litellm_provider"))

    models = bundled_catalogue().models
    chat = [name for name, info in models.items() if info.mode == "chat"]
    names = chat + [f"openai/{n}" for n in chat if models[n].provider == "openai"] + ["openai/my-local"]
    differ = []
    for name in names:
        price = llm.model_price(name)
        ours = None if price is None else (price.input_per_token, price.output_per_token, price.provider)
        if ours != litellm_price(name):
            differ.append((name, ours, litellm_price(name)))
    # litellm.get_model_info cannot name the provider of a few names (ai21's jamba, azure's mistral-large-latest)
    # and calls them unknown; the map has their price, which is what we say.
    assert all(theirs is None and ours is not None for _, ours, theirs in differ), differ
    assert len(differ) <= 20, differ

    for name in [n for n in chat if models[n].provider == "openai"] + ["openai/my-local", "claude-3-5-sonnet-20240620"]:
        priced = llm.model_price(name)
        reference = name if priced is not None and priced.provider == "openai" else "gpt-3.5-turbo"
        for messages in CHATS:
            counted = llm.count_tokens(name, messages).tokens
            expected = litellm.token_counter(model=reference, messages=messages)
            # litellm counts ft:o4-mini with cl100k_base, where o4-mini's own encoding is o200k_base
            assert counted == expected or name.startswith("ft:o") and abs(counted - expected) <= 2, (name, messages)


def test_a_run_estimate_imports_neither_litellm_nor_pandas(engine, db_url: str) -> None:
    make_dataset(engine, n=3)
    code = ("import sys; from lib.cli import main\ntry:\n    main(['run', '--dataset', 'golden', '--baseline', "
            "'gpt-4o-mini', '--candidate', 'openai/local', '--name', 'n', '--dry-run'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in ('litellm', 'pandas', 'pyarrow') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "DATABASE_URL": db_url},
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "[]", proc.stderr
    assert "estimate baseline gpt-4o-mini: 3 calls" in proc.stderr and "cost $" in proc.stderr


def _cli(db_url: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.Popen([sys.executable, "-m", "lib", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stored_pairs(engine: Engine) -> set[tuple[str, str]]:
    """(model as the server sees it, prompt) of every successful output."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            'SELECT m.model, c.input_text FROM output o JOIN run r ON r.id = o.run_id '
            'JOIN modelconfig m ON m.id = r.config_id JOIN "case" c ON c.id = o.case_id '
            'WHERE o.error IS NULL')).all()
    return {(model.removeprefix("openai/"), prompt) for model, prompt in rows}


def _live_descendants(pid: int) -> set[int]:
    """Processes under `pid` that have not exited (zombies count as exited), from /proc."""
    children: dict[int, list[int]] = {}
    states: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        child = int(stat.parent.name)
        states[child] = fields[0]
        children.setdefault(int(fields[1]), []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return {p for p in found if states.get(p) != "Z"}


def _still_alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _run_processes(proc: subprocess.Popen) -> set[int]:
    """The CLI's live descendants and the resident host's live workers (lib/run/resident.py)."""
    from lib.run import resident

    host = resident.ask("ping")
    return _live_descendants(proc.pid) | (_live_descendants(host) if host else set())


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["in-process", "per-side", "per-side, own fork server"])
def test_killed_cli_run_leaves_a_consistent_store_and_resumes(engine, db_url: str, llm_server: LLMServer,
                                                              workers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if workers.endswith("own fork server"):
        monkeypatch.setenv("REVIEW_RESIDENT", "0")
    prompts = make_dataset(engine, n=30)
    llm_server.latency = 0.4
    args = ["run", "--dataset", "golden", "--baseline", "openai/base", "--candidate", "openai/cand",
            "--name", "killed", "--api-base", llm_server.url, "--concurrency", "4", "--workers", workers.split(",")[0]]
    proc = _cli(db_url, *args)
    deadline = time.monotonic() + 120  # generous: a loaded machine imports slowly
    while len(_stored_pairs(engine)) < 8:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    llm_server.latency = 60.0  # from now on nothing returns: workers must notice the kill by themselves
    time.sleep(1.0)  # the requests already in flight return and are stored
    descendants = _run_processes(proc)  # per side: two workers (and this command's fork server, if its own)
    assert len(descendants) >= {"in-process": 0, "per-side": 2}.get(workers, 3)
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 20
    while _still_alive(descendants):  # the workers see their parent's end of the pipe close, and stop
        assert time.monotonic() < deadline, f"orphaned: {_still_alive(descendants)}"
        time.sleep(0.05)

    done = _stored_pairs(engine)
    logged = len(llm_server.log)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        assert {s for (s,) in conn.execute(text("SELECT status FROM run"))} == {"running"}
        assert conn.execute(text("SELECT count(*) FROM output WHERE text IS NULL")).scalar() == 0
    assert 8 <= len(done) < 60

    llm_server.latency = 0.0
    resumed = _cli(db_url, *args)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err

    resent = [(r.model, r.prompt) for r in llm_server.log[logged:]]
    everything = {(m, p) for m in ("base", "cand") for p in prompts}
    assert not done & set(resent)  # no completed (case, repeat) was sent again
    assert sorted(resent) == sorted(everything - done)  # and every other one exactly once
    assert _stored_pairs(engine) == everything
    assert "complete" in out


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["in-process", "per-side"])
def test_ctrl_c_exits_130_with_one_line_and_keeps_what_was_stored(engine, db_url: str, llm_server: LLMServer,
                                                                  workers: str) -> None:
    """Never exit 1 on Ctrl-C: for gate and canary check, 1 means no-go / roll back."""
    make_dataset(engine, n=30)
    llm_server.latency = 0.3
    proc = _cli(db_url, "run", "--dataset", "golden", "--baseline", "openai/base", "--candidate", "openai/cand",
                "--name", "stopped", "--api-base", llm_server.url, "--concurrency", "4", "--workers", workers)
    deadline = time.monotonic() + 120  # generous: a loaded machine imports slowly
    while len(_stored_pairs(engine)) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    running = _run_processes(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    deadline = time.monotonic() + 10
    while _still_alive(running):  # the workers were told to stop, wherever they were forked from
        assert time.monotonic() < deadline, f"still running: {_still_alive(running)}"
        time.sleep(0.05)
    assert err.strip().splitlines()[-1].startswith("error: interrupted; what was stored is kept"), repr(err[-600:])
    assert "Traceback" not in err and 4 <= len(_stored_pairs(engine)) < 60


@pytest.mark.slow
def test_cli_unknown_dataset_exits_2_with_one_line(db_url: str) -> None:
    proc = _cli(db_url, "run", "--dataset", "nope", "--baseline", "openai/a", "--candidate", "openai/b",
                "--name", "x")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == ["error: no dataset named 'nope' (import one with `./review dataset import`)"]


@pytest.mark.slow
@pytest.mark.parametrize("resident", ["1", "0"])
def test_cli_refuses_a_model_whose_key_is_missing_before_any_call(engine, db_url: str, llm_server: LLMServer,
                                                                 resident: str, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """Answered by the resident worker host (litellm is imported there), or without it by the command."""
    from lib.catalog.keys import key_status

    make_dataset(engine, n=3)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("REVIEW_RESIDENT", resident)
    assert key_status("openai/gpt-4o-mini").message == "key missing: set OPENAI_API_KEY"
    proc = _cli(db_url, "run", "--dataset", "golden", "--baseline", "openai/base", "--baseline-api-base",
                llm_server.url, "--candidate", "openai/gpt-4o-mini", "--name", "nokey")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.strip().splitlines()[-1] == ("error: openai/gpt-4o-mini: key missing: set OPENAI_API_KEY (in the "
                                            "environment or .streamlit/secrets.toml); nothing was called")
    assert llm_server.calls() == 0 and list_comparisons(engine) == []


@pytest.mark.slow
def test_cli_exits_1_when_errors_remain(engine, db_url: str, llm_server: LLMServer) -> None:
    prompts = make_dataset(engine, n=2)
    llm_server.add_fault("400", contains=prompts[0], model="cand")
    proc = _cli(db_url, "run", "--dataset", "golden", "--baseline", "openai/base", "--candidate", "openai/cand",
                "--name", "errs", "--api-base", llm_server.url)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    assert "error: 1 of 4 outputs failed after retries" in err and "re-run" in err
    assert "estimate baseline openai/base: 2 calls" in err and "cost unknown" in err


def test_unreachable_endpoint_is_retried_then_stored_as_server_error(engine, llm_server: LLMServer) -> None:
    make_dataset(engine, n=2)
    dead = LLMServer().start()
    dead_url = dead.url
    dead.stop()  # a port nobody listens on any more
    result = run_comparison(engine, dataset="golden", name="dead", options=RunOptions(max_retries=1, **FAST),
                            baseline=ModelSpec("openai/base", api_base=llm_server.url),
                            candidate=ModelSpec("openai/cand", api_base=dead_url))

    assert result.baseline.status == "complete" and result.candidate.status == "partial"
    rows = outputs(engine, result.candidate.run_id)
    assert [(r.error_kind, r.attempts) for r in rows] == [("server", 2), ("server", 2)]


def test_local_openai_endpoint_gets_a_placeholder_key_only_without_a_real_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert llm.call_kwargs("openai/x", "http://h/v1", {}, 5)["api_key"] == llm.PLACEHOLDER_API_KEY
    assert "api_key" not in llm.call_kwargs("hosted_vllm/x", "http://h/v1", {}, 5)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    kwargs = llm.call_kwargs("openai/x", "http://h/v1", {"temperature": None, "seed": 1}, 5)
    assert "api_key" not in kwargs and "temperature" not in kwargs and kwargs["seed"] == 1
    assert kwargs["num_retries"] == 0 and kwargs["max_retries"] == 0


def test_run_model_runs_one_model_into_a_new_run_without_a_comparison(engine, llm_server: LLMServer) -> None:
    prompts = make_dataset(engine, n=4)
    llm_server.set_fingerprint("pinned", "fp_p1")
    llm_server.add_fault("400", contains=prompts[2])
    events: list[ProgressEvent] = []
    spec = ModelSpec("openai/pinned", api_base=llm_server.url)
    first = run_model(engine, dataset="golden", spec=spec, options=RunOptions(repeats=2, **FAST),
                      purpose="monitor", progress=events.append)

    assert (first.status, first.total, first.n_outputs, first.n_errors) == ("partial", 8, 6, 2)
    assert (first.system_fingerprint, first.dataset, first.dataset_version) == ("fp_p1", "golden", 1)
    assert first.wall_s > 0 and first.prompt_tokens == 24 and first.cost_usd is None
    rows = outputs(engine, first.run_id)
    assert sorted(r.text for r in rows if r.error is None) == sorted(
        default_reply("pinned", p) for p in prompts if p != prompts[2] for _ in range(2))
    assert {r.error_kind for r in rows if r.error} == {"bad_request"}
    assert (events[-1].side, events[-1].done, events[-1].total, events[-1].errors) == ("model", 8, 8, 2)

    llm_server.clear_faults()
    second = run_model(engine, dataset="golden", spec=spec, options=RunOptions(**FAST))
    assert second.run_id != first.run_id and (second.status, second.n_outputs) == ("complete", 4)
    assert llm_server.calls() == 8 + 4  # a new run: nothing resumed, everything sent
    with Session(engine) as session:
        runs = session.exec(select(Run).order_by(Run.id)).all()
        events = session.exec(select(AuditEvent).order_by(AuditEvent.seq))
        kinds = [(e.kind, json.loads(e.payload_json)) for e in events]
    assert [r.status for r in runs] == ["partial", "complete"] and all(r.config_id == runs[0].config_id for r in runs)
    assert list_comparisons(engine) == []
    started = [p for k, p in kinds if k == "run_started"]
    finished = [p for k, p in kinds if k == "run_finished"]
    assert [p["run_id"] for p in started] == [first.run_id, second.run_id]
    assert started[0]["purpose"] == "monitor" and started[0]["comparison"] is None
    assert (finished[0]["n_outputs"], finished[0]["n_errors"], finished[0]["status"]) == (6, 2, "partial")


def test_run_page_runs_per_side_workers_with_progress(engine, llm_server: LLMServer) -> None:
    """The Run page with a worker per side: progress reaches the page, the result is stored."""
    prompts = make_dataset(engine, n=5)
    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
    at.switch_page("pages/run.py").run()
    for side, model in (("baseline", "openai/base"), ("candidate", "openai/cand")):
        at.text_input(key=f"run_{side}_model").set_value(model)
        at.text_input(key=f"run_{side}_api_base").set_value(llm_server.url)
    at.run()
    at.selectbox(key="run_workers").set_value("per-side")
    at.text_input(key="run_name").set_value("paged").run()
    at.button(key="run_start").click().run(timeout=120)

    assert not at.exception, at.exception
    assert any("5/5 done" in m.value for m in at.markdown), [m.value for m in at.markdown]
    assert any("complete" in s.value and "per-side" in s.value for s in at.success), [s.value for s in at.success]
    assert at.button(key="run_go_overview").proto.label == "Open its Overview"
    assert _stored_pairs(engine) == {(m, p) for m in ("base", "cand") for p in prompts}


@pytest.mark.slow
def test_worker_fork_server_preload_leaves_a_single_threaded_process_with_litellm_warm() -> None:
    """Workers are forked from the process that imports lib.run.worker_preload: it must hold no threads."""
    code = ("import sys, threading, lib.run.worker_preload; "
            "print(threading.active_count(), 'litellm' in sys.modules, "
            "'litellm.proxy.openai_files_endpoints.common_utils' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "True", "True"]
    assert "LoggingWorker" not in proc.stderr  # litellm's logging queue was drained, not left behind
