"""Lengths (characters, words, tokens), the input-limit check, truncation and provider-error flags.

Token counts come from litellm's `token_counter` (the tokenizer litellm picks for the model). Models
whose tokenizer litellm would download from Hugging Face (Llama, Cohere Command-R) would block for
~20 s offline while it retries the hub, so they are counted with tiktoken's cl100k_base instead and the
result says so (`method`). litellm is imported lazily, with its network price-map fetch disabled.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

METHOD_LITELLM = "litellm"
METHOD_FALLBACK = "tiktoken cl100k_base (fallback: the model's tokenizer needs a Hugging Face download)"
_BUNDLED_HF_TOKENIZERS = frozenset({"anthropic", "deepseek"})  # shipped inside litellm, no download
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
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before the first import: no network fetch
    import litellm  # lazy: ~2.5 s and ~200 MB, only when token counts are asked for

    present = texts.notna()
    unique = pd.unique(texts[present].astype(str))
    hf_kind = litellm.utils.huggingface_tokenizer_kind(model)  # None: litellm counts with tiktoken
    if hf_kind is None or hf_kind in _BUNDLED_HF_TOKENIZERS:
        counted = {t: litellm.token_counter(model=model, text=t) for t in unique}
        method = METHOD_LITELLM
    else:
        import tiktoken  # litellm's import points tiktoken at its bundled encodings (offline)

        # encode_ordinary = litellm's own counting (special-token text counted as plain text)
        encoded = tiktoken.get_encoding("cl100k_base").encode_ordinary_batch(list(unique))
        counted = {t: len(tokens) for t, tokens in zip(unique, encoded)}
        method = METHOD_FALLBACK
    out = pd.Series(pd.NA, index=texts.index, dtype="Int64")
    out[present] = texts[present].astype(str).map(counted).to_numpy()
    return TokenCounts(out, method)


@dataclass(frozen=True)
class InputLimitCheck:
    over: pd.Series  # boolean: the input crosses the limit under at least one model (NA: no input)
    tokens: dict[str, pd.Series]  # per model
    methods: dict[str, str]  # per model: how it was counted


def input_limit_check(inputs: pd.Series, models: Sequence[str], limit: int) -> InputLimitCheck:
    """Inputs whose token count under any of `models` exceeds `limit` tokens."""
    counts = {model: token_counts(inputs, model) for model in dict.fromkeys(models)}
    over = pd.Series(False, index=inputs.index, dtype="boolean")
    for result in counts.values():
        over |= (result.counts > limit).fillna(False)
    over[inputs.isna()] = pd.NA
    return InputLimitCheck(
        over, {m: r.counts for m, r in counts.items()}, {m: r.method for m, r in counts.items()}
    )


def truncation_flags(finish_reasons: pd.Series) -> pd.Series:
    """True where the provider stopped at the token limit; NA where no finish reason was recorded."""
    reasons = finish_reasons.astype("string").str.lower()
    return reasons.isin(TRUNCATED_REASONS).astype("boolean").mask(reasons.isna())


def error_flags(errors: pd.Series, texts: pd.Series) -> pd.Series:
    """True for a provider error; False for an answer; NA where the side has no output row at all."""
    flags = errors.notna().astype("boolean")
    return flags.mask(errors.isna() & texts.isna())
