""""Find requests like this complaint": the logged requests nearest a pasted text, before and after a change.

Lexical by default (TF-IDF of word 1-2-grams, cosine similarity, over each request's input, or its output
when the log has no inputs); with an embedding model (`local` when the optional sentence-transformers model
is installed, or any litellm embedding model; lib.drift.embeddings, cached), embedding cosine instead.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from lib.release.timeline import TimelineInputError, read_log, timeline

TOP_K = 5


def _scores_lexical(texts: pd.Series, query: str) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    try:
        matrix = vectorizer.fit_transform([*texts.astype(str).tolist(), query])
    except ValueError:  # empty vocabulary: nothing to match
        return np.zeros(len(texts))
    return (matrix[:-1] @ matrix[-1].T).toarray().ravel()


def _scores_embedded(engine: Engine, texts: pd.Series, query: str, model: str, api_base: str | None
                     ) -> np.ndarray:
    """Cosine similarity of embeddings (lib.drift.embeddings: cached by text, so a second search is cheap)."""
    from lib.drift.embeddings import embed_texts

    unique = pd.unique(texts.astype(str))
    vectors = embed_texts(engine, [*unique.tolist(), query], model, api_base)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    by_text = dict(zip(unique, vectors[:-1] @ vectors[-1]))
    return texts.astype(str).map(by_text).to_numpy(dtype=float)


def _split_at(engine: Engine, name: str, model: str | None, at: str | None) -> pd.Timestamp | None:
    if at is not None:
        try:
            stamp = pd.Timestamp(at)
        except ValueError:
            raise TimelineInputError(f"--at '{at}' is not an ISO 8601 time") from None
        return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    points = timeline(engine, name, model)["change_points"]
    return min(pd.Timestamp(p["at"]) for p in points) if points else None


def _row(r: Any, score: float, period: str | None) -> dict[str, Any]:
    return {"request_id": r.request_id, "ts": r.ts.isoformat(), "model": r.model, "input": r.input_text,
            "output": r.output_text, "score": round(float(score), 4), "period": period}


def similar(engine: Engine, name: str, text: str, model: str | None = None, at: str | None = None,
            k: int = TOP_K, embeddings: str | None = None, api_base: str | None = None) -> dict[str, Any]:
    """The `similar --json` document: the k nearest requests before and after the change (`at`, else the
    log's first change point; with neither, the k nearest overall). `embeddings`: a model for
    lib.drift.embeddings (`local`, or a litellm embedding model with `api_base`) instead of TF-IDF."""
    if not text.strip():
        raise TimelineInputError("the complaint text is empty")
    frame = read_log(engine, name, model, texts=True)
    field = "input_text" if frame["input_text"].notna().any() else "output_text"
    texts = frame[field].fillna("")
    scores = (_scores_embedded(engine, texts, text, embeddings, api_base) if embeddings
              else _scores_lexical(texts, text))
    frame = frame.assign(score=scores)
    split = _split_at(engine, name, model, at)
    doc: dict[str, Any] = {"log": name, "query": text, "searched": field.split("_")[0] + "s",
                           "method": f"embeddings ({embeddings})" if embeddings else "lexical",
                           "split_at": split.isoformat() if split is not None else None, "results": []}
    groups = ([("before", frame[frame["ts"] < split]), ("after", frame[frame["ts"] >= split])]
              if split is not None else [(None, frame)])
    for period, rows in groups:
        top = rows[rows["score"] > 0].nlargest(k, "score")
        doc["results"].extend(_row(r, r.score, period) for r in top.itertuples())
    return doc
