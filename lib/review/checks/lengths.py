"""Lengths (characters, words, tokens), empty answers, truncation and provider-error flags (the input token
limit: lib.review.checked).

Token counts come from litellm's `token_counter` (the tokenizer litellm picks for the model). Models
whose tokenizer litellm would download from Hugging Face (Llama, Cohere Command-R) would block for
~20 s offline while it retries the hub, so they are counted with tiktoken's cl100k_base instead and the
result says so (`method`). litellm is imported lazily, with its network price-map fetch disabled, and not
at all for a model of `tiktoken_models.json` (made by scripts/tiktoken_models.py from the installed litellm):
its encoding is known, and tiktoken counts exactly as litellm would (~2.3 s of CPU saved per process). A model
the table lacks (a local model's name) is counted through litellm once; the encoding litellm chose, checked on
probe texts, is then remembered in the user's cache (`tiktoken_learned.json`, per litellm version), so later
processes count it without litellm too.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.run.llm import bundled_encoding  # light: litellm itself is imported lazily

METHOD_LITELLM = "litellm"
METHOD_FALLBACK = "tiktoken cl100k_base (fallback: the model's tokenizer needs a Hugging Face download)"
_BUNDLED_HF_TOKENIZERS = frozenset({"anthropic", "deepseek"})  # shipped inside litellm, no download
_TIKTOKEN_MODELS = Path(__file__).with_name("tiktoken_models.json")
# Texts on which an encoding must agree with litellm.token_counter before it is learned for a model (the
# same kinds scripts/tiktoken_models.py checks: special-token text, CJK, code, emoji).
_PROBES = ("Hello <|endoftext|> world", "注文番号 1234 の配送状況", "def f(x):\n    return {'a': [1, 2.5e3]}\n",
           "Ünïcödé — “quotes” 😀")
TRUNCATED_REASONS = frozenset({"length", "max_tokens"})  # OpenAI style; Anthropic's stop reason


def char_lengths(texts: pd.Series) -> pd.Series:
    """Characters per output (nullable Int64; NA where the output is missing)."""
    return texts.astype("string").str.len().astype("Int64")


def word_counts(texts: pd.Series) -> pd.Series:
    """Whitespace-separated words per output (nullable Int64; NA where the output is missing)."""
    present = texts.notna()
    out = pd.Series(pd.NA, index=texts.index, dtype="Int64")
    # len(str.split()) per text: ~9x faster than .str.split().str.len(), which keeps every word list
    out[present] = np.array([len(str(t).split()) for t in texts[present]], dtype=np.int64)
    return out


@dataclass(frozen=True)
class TokenCounts:
    counts: pd.Series  # nullable Int64, NA where the text is missing
    method: str  # METHOD_LITELLM or METHOD_FALLBACK


def token_counts(texts: pd.Series, model: str) -> TokenCounts:
    """Tokens per text under `model`'s tokenizer; identical texts are counted once."""
    present = texts.notna()
    unique = list(pd.unique(texts[present].astype(str)))
    encoding = tiktoken_encoding_name(model)
    if encoding is not None:
        counted, method = _lengths(bundled_encoding(encoding).encode_ordinary, unique), METHOD_LITELLM
    else:
        counted, method = _litellm_counts(model, unique)
    out = pd.Series(pd.NA, index=texts.index, dtype="Int64")
    out[present] = texts[present].astype(str).map(counted).to_numpy()
    return TokenCounts(out, method)


@cache
def _litellm_version() -> str | None:
    try:
        return version("litellm")
    except PackageNotFoundError:
        return None


@cache
def _tiktoken_table() -> dict[str, str]:
    """model -> tiktoken encoding litellm counts it with; empty unless made from the installed litellm."""
    table = json.loads(_TIKTOKEN_MODELS.read_text(encoding="utf-8"))
    return table["models"] if table["litellm"] == _litellm_version() else {}


def tiktoken_encoding_name(model: str) -> str | None:
    """The tiktoken encoding litellm's token_counter uses for `model`, when known without importing litellm:
    from the table, or learned by an earlier count of a model it lacks (a local model's name, say)."""
    return _tiktoken_table().get(model) or _learned().get(model)


# ---- encodings learned from litellm, for models the table lacks ------------------------------------
def learned_file() -> Path:
    """REVIEW_CACHE_DIR, else the user's cache directory for the app."""
    import platformdirs

    configured = os.environ.get("REVIEW_CACHE_DIR")
    return Path(configured or platformdirs.user_cache_dir("upgrade-review")) / "tiktoken_learned.json"


def _learned() -> dict[str, str]:
    try:
        data = json.loads(learned_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    models = data.get("models") if isinstance(data, dict) and data.get("litellm") == _litellm_version() else None
    return {str(k): str(v) for k, v in models.items()} if isinstance(models, dict) else {}


def _learn(model: str, encoding: str) -> None:
    """Remember litellm's choice for `model`, so the next process counts it without importing litellm
    (~2 s). Written whole and renamed into place: concurrent writers lose an entry at worst, never the file."""
    path = learned_file()
    models = {**_learned(), model: encoding}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps({"litellm": _litellm_version(), "models": models}, sort_keys=True))
        os.replace(partial, path)
    except OSError:
        pass  # a read-only home: counting still works, only not faster next time


def _litellm_counts(model: str, unique: list[str]) -> tuple[dict[str, int], str]:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before the first import: no network fetch
    import litellm  # lazy: ~2.5 s and ~200 MB, only for a model the table does not know

    try:
        hf_kind = litellm.utils.huggingface_tokenizer_kind(model)  # None: litellm counts with tiktoken
        if hf_kind is None:
            counted, method = _tiktoken_counts(litellm, model, unique), METHOD_LITELLM
        elif hf_kind in _BUNDLED_HF_TOKENIZERS:
            counted, method = {t: litellm.token_counter(model=model, text=t) for t in unique}, METHOD_LITELLM
        else:
            counted, method = _fallback_counts(unique), METHOD_FALLBACK
    except Exception:  # noqa: BLE001 - a model name litellm chokes on must not fail a load or a report
        counted, method = _fallback_counts(unique), METHOD_FALLBACK
    return counted, method


def _fallback_counts(texts: list[str]) -> dict[str, int]:
    # encode_ordinary = litellm's own counting (special-token text counted as plain text)
    return _lengths(bundled_encoding("cl100k_base").encode_ordinary, texts)


def _tiktoken_counts(litellm: Any, model: str, texts: list[str]) -> dict[str, int]:
    """litellm's counts, fast: the tiktoken encoding litellm picks for `model`, called directly
    (~25 us a text; litellm.token_counter costs ~80 us). A probe of a few texts must agree with
    litellm.token_counter itself, else every text goes through it."""
    try:  # the encoding token_counter uses on its openai_tokenizer path (from its bundled files: offline)
        from litellm.litellm_core_utils.token_counter import openai_tokenizer_encoding

        encoding = openai_tokenizer_encoding(model)
        encode = encoding.encode_ordinary  # tiktoken's; native encodings have none
    except (ImportError, AttributeError, KeyError, ValueError):  # ask litellm text by text
        return {t: litellm.token_counter(model=model, text=t) for t in texts}
    probe = [*texts[:3], *_PROBES]
    if [len(encode(t)) for t in probe] != [litellm.token_counter(model=model, text=t) for t in probe]:
        return {t: litellm.token_counter(model=model, text=t) for t in texts}
    _learn(model, encoding.name)
    return _lengths(encode, texts)


def _lengths(encode: Callable[[str], list[int]], texts: list[str]) -> dict[str, int]:
    """len(encode(text)) per text. tiktoken releases the GIL while it encodes, so one worker thread counts
    the second half beside this one: two plain loops (tiktoken's own batch, a task per text, was 4x
    slower on this shared 2-core machine)."""
    half = len(texts) // 2
    if half < 1000:
        return {t: len(encode(t)) for t in texts}
    with ThreadPoolExecutor(max_workers=1) as pool:
        second = pool.submit(lambda: [len(encode(t)) for t in texts[half:]])
        counts = [len(encode(t)) for t in texts[:half]]
        counts += second.result()
    return dict(zip(texts, counts))


def truncation_flags(finish_reasons: pd.Series) -> pd.Series:
    """True where the provider stopped at the token limit; NA where no finish reason was recorded."""
    reasons = finish_reasons.astype("string").str.lower()
    return reasons.isin(TRUNCATED_REASONS).astype("boolean").mask(reasons.isna())


def empty_flags(texts: pd.Series) -> pd.Series:
    """True for an empty or whitespace-only answer; NA where the output is missing (an error, no row)."""
    return (texts.astype("string").str.strip() == "").astype("boolean")


def error_flags(errors: pd.Series, texts: pd.Series) -> pd.Series:
    """True for a provider error; False for an answer; NA where the side has no output row at all."""
    flags = errors.notna().astype("boolean")
    return flags.mask(errors.isna() & texts.isna())
