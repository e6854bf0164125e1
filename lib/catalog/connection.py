"""Check before spending: one tiny request to a model, and what came back in plain words.

A result carries the latency, the model id the provider says answered and its fingerprint, or the
failure as a person would say it (key missing or invalid, key cannot use this model, quota, timeout,
unreachable). It never raises for a provider failure: a failed check is a result.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

CHECK_MESSAGES = [{"role": "user", "content": "Reply with: ok"}]
CHECK_MAX_TOKENS = 5
CHECK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ConnectionResult:
    model: str
    api_base: str | None
    ok: bool
    latency_s: float
    served_model: str | None = None
    fingerprint: str | None = None
    status: int | None = None  # the HTTP status of a failure, when the provider sent one
    problem: str | None = None  # key | access | quota | timeout | unreachable | server | response | other
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# status -> (problem, plain words)
_BY_STATUS = {401: ("key", "the API key is missing or invalid (HTTP 401)"),
              403: ("access", "this key is not allowed to use this model (HTTP 403)"),
              404: ("access", "this key cannot use this model, or no such model here (HTTP 404)"),
              429: ("quota", "quota or rate limit reached (HTTP 429): check the plan and billing")}


def explain(exc: BaseException, timeout: float) -> tuple[int | None, str, str]:
    """(HTTP status, problem, plain words) for a failed check."""
    from lib.run.llm import classify_error, litellm_module

    litellm = litellm_module()
    if _unreachable(exc):  # litellm reports a refused connection as a 500: look underneath
        return None, "unreachable", "cannot reach the provider or api_base (connection refused or no network)"
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    if isinstance(exc, litellm.AuthenticationError):
        status = status or 401
    if status in _BY_STATUS:
        problem, words = _BY_STATUS[status]
        return status, problem, words
    kind = classify_error(exc).kind
    if kind == "timeout":
        return status, "timeout", f"no answer within {timeout:g} s (timeout)"
    if kind == "malformed":
        return status, "response", "the reply is not an OpenAI-style completion"
    if kind == "server":
        return status, "server", f"the provider failed (HTTP {status}): try again later"
    return status, "other", _short(exc)


def _unreachable(exc: BaseException) -> bool:
    import httpx

    from lib.run.llm import _chain

    return any(isinstance(e, (httpx.ConnectError, ConnectionError)) or "Connection error" in str(e)
               for e in _chain(exc))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


async def _one_call(model: str, api_base: str | None, timeout: float) -> Any:
    from lib.run.llm import call_kwargs, litellm_module

    kwargs = call_kwargs(model, api_base, {"messages": CHECK_MESSAGES, "max_tokens": CHECK_MAX_TOKENS}, timeout)
    async with asyncio.timeout(timeout):
        return await litellm_module().acompletion(**kwargs)


def test_connection(model: str, api_base: str | None = None, timeout: float = CHECK_TIMEOUT_S) -> ConnectionResult:
    """Send one tiny request (a few tokens) and report what happened."""
    from lib.catalog.keys import key_status
    from lib.run.llm import litellm_module, parse_completion

    model, api_base = model.strip(), (api_base or "").strip() or None
    keys = key_status(model, api_base)
    if keys.needed and not keys.present:  # no request can succeed: say so without sending one
        return ConnectionResult(model, api_base, False, 0.0, status=None, problem="key",
                                message=f"the API key is missing: set {' or '.join(keys.needed)} (environment or app "
                                        "secrets); no request was sent")
    litellm_module()  # imported before the clock starts: the latency is the request's
    started = time.monotonic()
    try:
        completion = parse_completion(asyncio.run(_one_call(model, api_base, timeout)))
    except Exception as exc:  # noqa: BLE001  - every failure becomes a result in plain words
        status, problem, words = explain(exc, timeout)
        return ConnectionResult(model, api_base, False, time.monotonic() - started, status=status,
                                problem=problem, message=words)
    latency = time.monotonic() - started
    served = completion.served_model or "not reported"
    return ConnectionResult(model, api_base, True, latency, completion.served_model, completion.system_fingerprint,
                            message=f"answered in {latency:.2f} s by {served}")


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name
