"""Secrets stay out: a key planted in the endpoint URL (query and user:password@), in the provider key
variable and echoed back by a provider 401 reaches neither the SQLite file (nor its WAL), nor the JSON and
Markdown exports, nor the recording; the call itself still works with the full URL."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from lib.governance.export import change_record, record_markdown
from lib.run.redact import scrub, strip_url_credentials
from lib.store.entities import ModelConfig, Output
from tests.llm_server import LLMServer
from tests.test_runner import FAST, make_dataset

ENV_KEY = "sk-envkey-" + "E" * 40  # the provider key variable's value: sent as the Bearer token
QUERY_KEY = "sk-querykey-" + "Q" * 36
PASSWORD = "pw-" + "P" * 30


def _store_bytes(db_url: str) -> bytes:
    path = Path(db_url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists())


def test_planted_keys_reach_no_stored_byte_export_or_recording(engine, db_url: str, llm_server: LLMServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lib.data.recording import export_recording
    from lib.run.runner import ModelSpec, RunOptions, run_comparison

    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    make_dataset(engine, n=4)
    options = RunOptions(**FAST, max_retries=0, workers="in-process")
    # 1. Credentials in the endpoint URL (this server refuses such URLs: every call errors, and says where).
    host = llm_server.url.split("://", 1)[1]
    base = f"http://user:{PASSWORD}@{host}?api-key={QUERY_KEY}"
    run_comparison(engine, dataset="golden", name="url", options=options,
                   baseline=ModelSpec("openai/base", api_base=base), candidate=ModelSpec("openai/cand", api_base=base))
    # 2. A provider 401 that echoes the key it was sent (the environment's OPENAI_API_KEY).
    llm_server.add_fault("401", contains="question 0")
    result = run_comparison(engine, dataset="golden", name="echo", options=options,
                            baseline=ModelSpec("openai/base", api_base=llm_server.url),
                            candidate=ModelSpec("openai/cand", api_base=llm_server.url))
    assert result.baseline.errors == 1 and result.candidate.errors == 1  # the rest were answered
    with Session(engine) as s:
        errors = [o.error for o in s.exec(select(Output).where(Output.error.is_not(None)))]
        stored_bases = {c.api_base for c in s.exec(select(ModelConfig))}
    assert len(errors) == 10
    echoed = [e for e in errors if "Incorrect API key" in e]
    assert len(echoed) == 2 and all("provided: [redacted]" in e for e in echoed), echoed
    assert stored_bases == {llm_server.url}
    exported = [text for name in ("url", "echo") for text in (
        json.dumps(change_record(engine, name)), record_markdown(change_record(engine, name)),
        export_recording(engine, name).decode())]
    engine.dispose()  # let SQLite settle the WAL; its bytes are read too
    haystacks = [_store_bytes(db_url), *(e.encode() for e in exported)]
    for secret in (ENV_KEY, QUERY_KEY, PASSWORD, ENV_KEY[10:30], QUERY_KEY[12:30]):
        assert not any(secret.encode() in h for h in haystacks), secret


@pytest.mark.parametrize(("url", "stored"), [
    ("http://127.0.0.1:8000/v1?api-key=sk-abc", "http://127.0.0.1:8000/v1"),
    ("http://user:password@host/v1", "http://host/v1"),
    ("https://gw.example/v1?deployment=x&token=abc&key=k", "https://gw.example/v1?deployment=x"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    (None, None),
])
def test_urls_lose_credentials_and_keep_the_rest(url: str | None, stored: str | None) -> None:
    assert strip_url_credentials(url) == stored


@pytest.mark.parametrize(("text", "clean"), [
    ("Incorrect API key provided: sk-proj-abc123**********************wxyz.",
     "Incorrect API key provided: sk-[redacted]."),
    ("headers: Authorization: Bearer eyJhbGciOi1JIUzI1NiJ9.x", "headers: Authorization: Bearer [redacted]"),
    ("GET http://h/v1?api_key=zzz&q=1", "GET http://h/v1?api_key=[redacted]&q=1"),
    ("at https://u:p4ss@host/x", "at https://[redacted]@host/x"),
    ("the skill of sk-learn; Bearer of bad news", "the skill of sk-learn; Bearer of bad news"),
])
def test_scrub_removes_key_like_strings_only(text: str, clean: str) -> None:
    assert scrub(text) == clean


def test_scrub_removes_the_values_of_provider_key_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "plain-looking-secret-42")
    monkeypatch.setenv("SOME_FLAG", "plain-looking-flag-value")  # not a key variable: kept
    assert scrub("echo plain-looking-secret-42 / plain-looking-flag-value") == \
        "echo [redacted] / plain-looking-flag-value"
