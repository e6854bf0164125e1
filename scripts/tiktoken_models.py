"""Regenerate lib/review/checks/tiktoken_models.json: the tiktoken encoding litellm's token_counter uses for
each model of its bundled price map whose tokenizer is tiktoken's (and its `openai/` spelling for OpenAI ones).

With it, a load counts tokens of those models without importing litellm (~2.3 s of CPU). The table names the
litellm version it was made from; another installed version makes lib/review/checks/lengths.py ignore it. Each
entry was checked here against litellm.token_counter on a few texts.

    .venv/bin/python scripts/tiktoken_models.py
"""
from __future__ import annotations

import json
import os
from importlib.metadata import version
from pathlib import Path

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

PROBES = ("Hello <|endoftext|> world", "注文番号 1234 の配送状況", "plain words " * 40,
          "def f(x):\n    return {'a': [1, 2.5e3]}\n", "Ünïcödé — “quotes” 😀")
OUT = Path(__file__).resolve().parent.parent / "lib" / "review" / "checks" / "tiktoken_models.json"


def encoding_of(litellm, model: str) -> str | None:  # type: ignore[no-untyped-def]
    """The encoding litellm counts `model` with, when it is tiktoken's and agrees on every probe."""
    from litellm.litellm_core_utils.token_counter import openai_tokenizer_encoding

    try:
        if litellm.utils.huggingface_tokenizer_kind(model) is not None:
            return None
        encoding = openai_tokenizer_encoding(model)
        encode = encoding.encode_ordinary
        if all(len(encode(t)) == litellm.token_counter(model=model, text=t) for t in PROBES):
            return str(encoding.name)
    except Exception:  # noqa: BLE001 - any model litellm cannot answer for stays out of the table
        return None
    return None


def main() -> None:
    import litellm

    names = set(litellm.model_cost)
    names |= {f"openai/{n}" for n, info in litellm.model_cost.items()
              if isinstance(info, dict) and info.get("litellm_provider") == "openai" and "/" not in n}
    names.discard("sample_spec")
    table = {name: enc for name in sorted(names) if (enc := encoding_of(litellm, name)) is not None}
    OUT.write_text(json.dumps({"litellm": version("litellm"), "models": table}, indent=0, sort_keys=True) + "\n")
    print(f"{len(table)} of {len(names)} models -> {OUT}")


if __name__ == "__main__":
    main()
