"""Models served at an OpenAI-compatible api_base: `GET {api_base}/models` (vLLM, llama.cpp, Ollama, LiteLLM proxy)."""
from __future__ import annotations

import os

import httpx

from lib.errors import ReviewInputError
from lib.run.llm import PLACEHOLDER_API_KEY

DISCOVERY_TIMEOUT_S = 10.0


class DiscoveryError(ReviewInputError):
    """The api_base did not list its models (unreachable, refused, or not an OpenAI-style list)."""


def discover_models(api_base: str, api_key: str | None = None, timeout: float = DISCOVERY_TIMEOUT_S) -> list[str]:
    """The model ids the server lists, sorted. Use them as `openai/ID` with this api_base."""
    url = api_base.rstrip("/") + "/models"
    if not url.startswith(("http://", "https://")):
        raise DiscoveryError(f"api_base must start with http:// or https:// (got '{api_base}')")
    key = api_key or os.environ.get("OPENAI_API_KEY") or PLACEHOLDER_API_KEY
    try:
        response = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)
    except httpx.TimeoutException as exc:
        raise DiscoveryError(f"{url}: no answer within {timeout:g} s") from exc
    except httpx.HTTPError as exc:
        raise DiscoveryError(f"{url}: cannot connect ({type(exc).__name__})") from exc
    if response.status_code != 200:
        raise DiscoveryError(f"{url}: HTTP {response.status_code} (the server does not list models here)")
    try:
        rows = response.json().get("data")
        ids = sorted({str(row["id"]) for row in rows})
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise DiscoveryError(f"{url}: not an OpenAI-style model list ({{\"data\": [{{\"id\": ...}}]}})") from exc
    return ids
