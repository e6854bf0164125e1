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


# ---- errors taken from loaded files, and URLs stored before stripping existed ---------------------------
FILE_KEY = "sk-filekey-" + "F" * 30
BEARER = "Bearer eyJfile" + "7" * 30
ERROR = f"401 Incorrect API key provided: {FILE_KEY} (sent {BEARER})"


def _csv(rows: list[dict]) -> bytes:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _assert_clean(db_url: str, *texts: str) -> None:
    haystacks = [_store_bytes(db_url), *(t.encode() for t in texts)]
    for secret in (FILE_KEY, FILE_KEY[11:35], BEARER, BEARER[7:40], QUERY_KEY, PASSWORD):
        assert not any(secret.encode() in h for h in haystacks), secret


def test_errors_in_loaded_files_are_scrubbed_before_they_are_stored(engine, db_url: str) -> None:
    """Wide, long and shadow comparisons and a production log, each with a key echoed in an error cell."""
    import io

    from lib.data.loaders import LoadMapping, load_recorded
    from lib.release.log_entities import LogRecord
    from lib.release.log_import import import_log

    sides = LoadMapping(baseline="m-old", candidate="m-new")
    wide = [{"id": f"c{i}", "input": f"q{i}", "baseline_output": "a", "candidate_output": "" if i == 0 else "a",
             "candidate_error": ERROR if i == 0 else ""} for i in range(3)]
    load_recorded(engine, _csv(wide), "wide.csv", "wide")
    long_rows = [{"id": f"c{i}", "input": f"q{i}", "model": model, "output": "" if i == 1 else "a",
                  "error": ERROR if i == 1 else ""} for i in range(3) for model in ("m-old", "m-new")]
    load_recorded(engine, "".join(json.dumps(r) + "\n" for r in long_rows).encode(), "long.jsonl", "long",
                  mapping=sides)
    shadow_rows = [{"request_id": f"r{i}", "timestamp": f"2025-03-01T09:00:0{i}Z", "model": model, "input": f"q{i}",
                    "output": "" if i == 2 else "a", "error": ERROR if i == 2 else ""}
                   for i in range(3) for model in ("m-old", "m-new")]
    load_recorded(engine, _csv(shadow_rows), "traffic.csv", "shadow", "shadow", sides)
    import_log(engine, io.BytesIO(_csv(shadow_rows)), "prod.csv", "prod", LoadMapping())
    with Session(engine) as s:
        errors = [o.error for o in s.exec(select(Output).where(Output.error.is_not(None)))]
        errors += [r.error for r in s.exec(select(LogRecord).where(LogRecord.error.is_not(None)))]
    errors = [e for e in errors if e]  # (a CSV's empty error cell may be stored as '')
    assert len(errors) == 1 + 2 + 2 + 2, errors  # wide, long (both sides), shadow (both), production log (both)
    assert all(e == "401 Incorrect API key provided: sk-[redacted] (sent Bearer [redacted])" for e in errors), errors
    exported = [json.dumps(change_record(engine, name)) for name in ("wide", "long", "shadow")]
    engine.dispose()
    _assert_clean(db_url, *exported)


ROOT = Path(__file__).resolve().parent.parent
SECRET_BASE = f"http://user:{PASSWORD}@gw.example/v1?api-key={QUERY_KEY}"


def test_an_old_recordings_urls_are_stripped_on_import(engine, db_url: str) -> None:
    """A recording written before credentials were stripped (its configs carry them) imports without them."""
    from lib.data.recording import export_recording, load_recording

    lines = (ROOT / "demo" / "recording.jsonl").read_bytes().splitlines()
    meta = json.loads(lines[0])
    for side in ("baseline", "candidate"):
        meta[side]["config"]["api_base"] = SECRET_BASE
    first = {**json.loads(lines[1]), "e": ERROR}  # and a provider error that echoed the key
    old = b"\n".join([json.dumps(meta).encode(), json.dumps(first).encode(), *lines[2:]]) + b"\n"
    done = load_recording(engine, old, dataset_data=(ROOT / "demo" / "golden.jsonl").read_bytes(),
                          dataset_filename="golden.jsonl", name="old")
    with Session(engine) as s:
        assert {c.api_base for c in s.exec(select(ModelConfig))} == {"http://gw.example/v1"}
        assert "provided: sk-[redacted]" in s.exec(select(Output).where(Output.error.is_not(None))).first().error
    exported = export_recording(engine, done.comparison).decode() + json.dumps(change_record(engine, "old"))
    engine.dispose()
    _assert_clean(db_url, exported)


def test_urls_stored_before_stripping_are_scrubbed_when_the_store_is_opened(engine, db_url: str,
                                                                          tmp_path: Path) -> None:
    """An old store's configurations and errors lose their credentials when it is opened (one audit event),
    except those a signed decision covers (its data digest binds the stored value, docs/security.md): a URL
    among them is stripped wherever it is shown, exported or recorded, and the decision still verifies."""
    from gov_helpers import make_comparison, pairs, tamper

    from lib.data.recording import export_recording
    from lib.governance.decisions import DecisionRequest, decide, set_owner
    from lib.governance.policy import create_policy
    from lib.governance.signing import create_key
    from lib.governance.verify import verify_store
    from lib.review.comparisons import list_comparisons
    from lib.store.engine import _engine, get_engine
    from lib.store.entities import AuditEvent

    make_comparison(engine, "signed", pairs(30))
    make_comparison(engine, "plain", pairs(30))
    create_policy(engine, "strict", "alpha = 0.05\n[criteria.accuracy]\nmax_decrease = 0.02\n")
    create_key(engine, "alice", "correct horse", tmp_path / "keys")
    set_owner(engine, "default", "alice")
    # What the old code stored: credentials in every endpoint URL, a key echoed in one error of each comparison.
    assert tamper(db_url, "UPDATE modelconfig SET api_base = ?", SECRET_BASE) == 4
    assert tamper(db_url, "UPDATE output SET error = ? WHERE id IN (2, 62)", ERROR) == 2
    tamper(db_url, "PRAGMA user_version = 0")
    decide(engine, DecisionRequest("signed", "go", "alice", "ok", None, "strict"), "correct horse", tmp_path / "keys")
    engine.dispose()
    _engine.cache_clear()  # open the store again, as the next process does
    reopened = get_engine(db_url)
    with Session(reopened) as s:
        bases = sorted((c.id, c.api_base) for c in s.exec(select(ModelConfig)))
        scrubbed = [json.loads(e.payload_json) for e in s.exec(select(AuditEvent)
                                                              .where(AuditEvent.kind == "credentials_scrubbed"))]
    assert bases == [(1, SECRET_BASE), (2, SECRET_BASE), (3, "http://gw.example/v1"), (4, "http://gw.example/v1")]
    assert scrubbed == [{"rows": [{"table": "modelconfig", "column": "api_base", "ids": [3, 4]},
                                  {"table": "output", "column": "error", "ids": [62]}]}]
    with Session(reopened) as s:
        errors = {o.id: o.error for o in s.exec(select(Output).where(Output.error.is_not(None)))}
    assert errors == {2: ERROR, 62: "401 Incorrect API key provided: sk-[redacted] (sent Bearer [redacted])"}
    assert verify_store(reopened, anchors=[]).ok
    shown = [json.dumps(list_comparisons(reopened))]
    shown += [json.dumps(change_record(reopened, n)) + record_markdown(change_record(reopened, n))
              + export_recording(reopened, n).decode() for n in ("signed", "plain")]
    assert all("http://gw.example/v1" in text for text in shown)
    for text in shown:
        assert QUERY_KEY not in text and PASSWORD not in text and FILE_KEY not in text
    _engine.cache_clear()
    assert get_engine(db_url) is not reopened  # opened once more: nothing left to scrub, no second event
    with Session(get_engine(db_url)) as s:
        assert len(s.exec(select(AuditEvent).where(AuditEvent.kind == "credentials_scrubbed")).all()) == 1
