"""The only module that imports litellm: lazily, configured for offline use and low per-call CPU.

Importing litellm costs ~2.5 s, so nothing imports it at module top level; `litellm_module()` does
on first use, after forcing the bundled price map (the remote fetch blocks 5 s offline) and
production mode (so litellm does not load a stray `./.env`). Keys come from the environment only.

Also here: prices (None = unknown, never 0 for unknown), a guarded token counter, the call
arguments for a model spec, and the classification of provider errors for the retry policy.
"""
from __future__ import annotations

import asyncio
import email.utils
import gc
import json
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from functools import cache, lru_cache
from types import ModuleType
from typing import Any

from lib.run.redact import scrub

PLACEHOLDER_API_KEY = "sk-no-key-required"  # local OpenAI-compatible servers want any non-empty key
ERROR_KINDS = ("rate_limit", "server", "timeout", "malformed", "bad_request", "other")
RETRYABLE_KINDS = frozenset({"rate_limit", "server", "timeout", "malformed"})

_lock = threading.Lock()
_litellm: ModuleType | None = None


def litellm_module() -> ModuleType:
    """litellm, imported and configured once (thread-safe)."""
    global _litellm
    if _litellm is None:
        with _lock:
            if _litellm is None:
                os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
                os.environ.setdefault("LITELLM_MODE", "PRODUCTION")
                # The import allocates ~200 MB of long-lived objects: collecting while it grows costs
                # ~25% of its CPU (2.3 s -> 1.7 s here), and none of it is garbage until it ends.
                enabled = gc.isenabled()
                gc.disable()
                try:
                    import litellm
                finally:
                    if enabled:
                        gc.enable()
                _configure(litellm)
                # Without freezing them, every full collection rescans those objects (a ~0.3 s stall
                # of a run's event loop, measured here). No collection first: it found nothing to free
                # after the import and cost ~0.3 s, on the way to a run's first call.
                gc.freeze()
                _litellm = litellm
    return _litellm


_WARM_UP_BODY = json.dumps({
    "id": "warm-up", "object": "chat.completion", "created": 0, "model": "warm-up",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()


async def _answer_once(reader: Any, writer: Any) -> None:
    await reader.readuntil(b"\r\n\r\n")  # the request's headers; its small body is ignored
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(_WARM_UP_BODY), _WARM_UP_BODY))
    await writer.drain()
    writer.close()


async def _one_local_call() -> None:
    server = await asyncio.start_server(_answer_once, "127.0.0.1", 0)
    async with server:
        api_base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        kwargs = call_kwargs("openai/warm-up", api_base, {"messages": [{"role": "user", "content": "hi"}]}, 10)
        parse_completion(await litellm_module().acompletion(**kwargs))
    # litellm leaves logging tasks that queue a callback on its global logging worker: let them run
    # and drain it, or the first loop of every forked process inherits (and warns about) that task.
    from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

    helpers = asyncio.all_tasks() - {asyncio.current_task()}
    if helpers:
        await asyncio.wait(helpers, timeout=5)
    await GLOBAL_LOGGING_WORKER.flush()


def warm_up_calls() -> None:
    """Make one call to a throwaway local server, so that what litellm sets up lazily on its first call
    (pydantic schemas, provider modules: ~0.2 s CPU) is done in a process that forks call workers.
    Its clients are dropped afterwards: they belong to this event loop. Never raises."""
    try:
        asyncio.run(_one_local_call())
    except Exception:  # noqa: BLE001  - an optimisation only: the first real call sets up what is missing
        pass
    litellm_module().in_memory_llm_clients_cache.flush_cache()


def _configure(litellm: ModuleType) -> None:
    litellm.suppress_debug_info = True  # no "Give Feedback" banners on every exception
    litellm.disable_hf_tokenizer_download = True  # token counting must never reach the HF hub
    _skip_per_call_bookkeeping_without_callbacks(litellm)


def _has_callbacks(litellm: ModuleType) -> bool:
    return any(getattr(litellm, name, None) for name in (
        "callbacks", "success_callback", "_async_success_callback", "input_callback", "service_callback"))


def _skip_per_call_bookkeeping_without_callbacks(litellm: ModuleType) -> None:
    """Skip litellm's own per-response pricing and success-log payload unless a callback wants them.

    Profiled against the local test server, they took ~1.3 ms of ~4 ms client CPU per call (the
    pricing of an unmapped model walks every generalization of its name). We price responses
    ourselves (`response_cost`), so they only matter to litellm callbacks, which still get them.
    """
    from litellm.litellm_core_utils.litellm_logging import Logging

    hooks = ("response_cost_calculator", "async_success_handler")
    if getattr(Logging, "_review_patched", False) or not all(hasattr(Logging, h) for h in hooks):
        return  # already done, or another litellm layout: stay correct, just slower
    price_response = Logging.response_cost_calculator
    log_success = Logging.async_success_handler

    def response_cost_calculator(self: Any, *args: Any, **kwargs: Any) -> float | None:
        return price_response(self, *args, **kwargs) if _has_callbacks(litellm) else None

    async def async_success_handler(self: Any, *args: Any, **kwargs: Any) -> None:
        if _has_callbacks(litellm):
            await log_success(self, *args, **kwargs)

    Logging.response_cost_calculator = response_cost_calculator
    Logging.async_success_handler = async_success_handler
    Logging._review_patched = True


# ---- prices ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Price:
    input_per_token: float
    output_per_token: float
    provider: str | None


@lru_cache(maxsize=512)
def model_price(model: str) -> Price | None:
    """USD per token from litellm's bundled map (`lib.catalog`, read without importing litellm; the override
    file is not applied here), or None when the price is unknown.

    Custom `openai/...` names are not in the map, and some entries carry 0.0 placeholders for paid models
    (`claude-sonnet-4-20250514`): both mean unknown here, never free.
    """
    from lib.catalog.catalogue import bundled_catalogue

    info = bundled_catalogue().lookup(model)
    if info is None or (info.input_cost_per_token is None and info.output_cost_per_token is None):
        return None  # one direction missing is free in that direction (an image model's output), as litellm says
    return Price(float(info.input_cost_per_token or 0.0), float(info.output_cost_per_token or 0.0), info.provider)


def cost_usd(price: Price | None, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    """The USD cost of one call at `price`, or None when the price or the token counts are unknown."""
    if price is None or prompt_tokens is None or completion_tokens is None:
        return None
    return prompt_tokens * price.input_per_token + completion_tokens * price.output_per_token


def response_cost(model: str, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    """The USD cost of one call, or None when the price or the token counts are unknown."""
    return cost_usd(model_price(model), prompt_tokens, completion_tokens)


# ---- token counting -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenCount:
    tokens: int
    exact: bool  # False: counted with tiktoken cl100k_base as an approximation
    note: str | None = None


APPROX_ENCODING = "cl100k_base"
TOKENS_PER_MESSAGE = 3  # <|start|>{role}\n{content}<|end|>\n, as OpenAI (and litellm's token_counter) count
TOKENS_PER_NAME = 1
REPLY_PRIMER_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>
IMAGE_TOKENS = 85  # an image part, at the low-detail price (its size is not fetched: no network)


def count_tokens(model: str, messages: list[dict[str, Any]]) -> TokenCount:
    """Prompt tokens of `messages` for `model`, with tiktoken directly (no litellm import, no download).

    OpenAI models (priced as such in the bundled map) are counted with their own encoding, as litellm's
    `token_counter` counts them; every other model is approximated with cl100k_base (litellm would fetch
    a Hugging Face tokenizer for some families and retry the hub for ~23 s offline).
    tests/test_runner.py checks the counts against `litellm.token_counter`.
    """
    price = model_price(model)
    if price is not None and price.provider == "openai":
        name = openai_encoding_name(model)
        if name is not None:
            return TokenCount(_count_messages(bundled_encoding(name), messages), exact=True)
    return TokenCount(_count_messages(bundled_encoding(APPROX_ENCODING), messages), exact=False,
                      note=f"approximate: {model} counted with tiktoken {APPROX_ENCODING}")


def openai_encoding_name(model: str) -> str | None:
    """The tiktoken encoding of an OpenAI model (o200k_base for those newer than tiktoken's table, as
    litellm assumes), or None when the encoding's file is not shipped with litellm (never downloaded)."""
    import tiktoken

    base = model.rsplit("/", 1)[-1]
    base = base.split(":")[1] if base.startswith("ft:") else base  # ft:gpt-4.1-...:org::id counts as gpt-4.1-...
    try:
        name = "o200k_base" if "gpt-4o" in base else tiktoken.encoding_name_for_model(base)
    except KeyError:
        name = "o200k_base"
    return name if _bundled_encoding_file(name) is not None else None


def _count_messages(encoding: Any, messages: list[dict[str, Any]]) -> int:
    """OpenAI's chat accounting: per message its overhead and every string field, then the reply primer."""
    tokens = REPLY_PRIMER_TOKENS if messages else 0
    for message in messages:
        tokens += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if isinstance(value, str):
                tokens += len(encoding.encode_ordinary(value)) + (TOKENS_PER_NAME if key == "name" else 0)
            elif key == "content" and isinstance(value, list):
                tokens += sum(_part_tokens(encoding, part) for part in value)
    return tokens


def _part_tokens(encoding: Any, part: Any) -> int:
    if isinstance(part, dict) and part.get("type") == "text":
        return len(encoding.encode_ordinary(str(part.get("text") or "")))
    if isinstance(part, dict) and part.get("type") == "image_url":
        return IMAGE_TOKENS
    return 0


_TIKTOKEN_FILES = {"cl100k_base": "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",  # sha1 of the encoding's URL:
                   "o200k_base": "fb374d419588a4632f3f557e76b4b70aebbca790",  # tiktoken's cache file name
                   "p50k_base": "ec7223a39ce59f226a68acc30dc1af2788490e15"}


@cache
def _tokenizer_dir() -> str | None:
    """Where litellm ships tiktoken's encoding files (found without importing litellm), unless the user
    points litellm elsewhere (CUSTOM_TIKTOKEN_CACHE_DIR, as litellm honours it)."""
    import importlib.util

    custom = os.environ.get("CUSTOM_TIKTOKEN_CACHE_DIR")
    if custom:
        os.makedirs(custom, exist_ok=True)
        return custom
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), "litellm_core_utils", "tokenizers")


def _bundled_encoding_file(name: str) -> str | None:
    folder, file = _tokenizer_dir(), _TIKTOKEN_FILES.get(name)
    path = os.path.join(folder, file) if folder and file else None
    return path if path and (os.environ.get("CUSTOM_TIKTOKEN_CACHE_DIR") or os.path.isfile(path)) else None


def bundled_encoding(name: str) -> Any:
    """tiktoken's encoding from litellm's bundled files: TIKTOKEN_CACHE_DIR set as litellm's import sets it
    (so both share tiktoken's one copy per process, and nothing is downloaded)."""
    import tiktoken

    folder = _tokenizer_dir()
    if folder:
        os.environ["TIKTOKEN_CACHE_DIR"] = folder
    return tiktoken.get_encoding(name)


# ---- calls ----------------------------------------------------------------------------------------
def call_kwargs(model: str, api_base: str | None, params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Arguments for `litellm.acompletion`: only set parameters, no litellm or SDK retries."""
    kwargs: dict[str, Any] = {"model": model, "timeout": timeout, "num_retries": 0, "max_retries": 0,
                              **{k: v for k, v in params.items() if v is not None}}
    if api_base:
        kwargs["api_base"] = api_base
        if model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
            kwargs["api_key"] = PLACEHOLDER_API_KEY
    return kwargs


@dataclass
class Completion:
    """The fields the store keeps from one successful response."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    system_fingerprint: str | None
    served_model: str | None
    raw_json: str


class MalformedResponse(Exception):
    """A response without a usable first choice."""


def _tool_call(call: Any) -> dict[str, Any]:
    """One tool call as compared: its name and its arguments (parsed JSON; the model's text when invalid)."""
    function = getattr(call, "function", None)
    arguments = getattr(function, "arguments", None)
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # invalid arguments stay the string the model wrote: a finding, not a crash
    return {"name": getattr(function, "name", None), "arguments": arguments}


def output_text(message: Any) -> str:
    """What a reply is compared by: its text, or, when it calls tools, stable JSON of the calls.

    `{"tool_calls": [{"name", "arguments"}]}` in the model's order, plus `"content"` when the model also
    wrote text. Call ids are left out (random per response: they would make every pair differ), and
    arguments are parsed so the review's JSON checks compare values, not spacing. raw_json keeps all.
    """
    text = message.content
    calls = getattr(message, "tool_calls", None)
    if not calls:
        return text or ""
    payload: dict[str, Any] = {"tool_calls": [_tool_call(c) for c in calls]}
    if isinstance(text, str) and text.strip():
        payload["content"] = text
    return json.dumps(payload, sort_keys=True, ensure_ascii=False)


def parse_completion(response: Any) -> Completion:
    """Text (or the tool calls as JSON, see `output_text`), usage and provenance of a response."""
    choices = getattr(response, "choices", None) or []
    if not choices or getattr(choices[0], "message", None) is None:
        raise MalformedResponse("response has no choices")
    usage = getattr(response, "usage", None)
    return Completion(
        text=output_text(choices[0].message),
        finish_reason=choices[0].finish_reason,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        system_fingerprint=getattr(response, "system_fingerprint", None),
        served_model=getattr(response, "model", None),
        raw_json=scrub(response.model_dump_json()),  # a provider may echo a key or a signed URL
    )


# ---- errors ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallError:
    kind: str  # one of ERROR_KINDS
    message: str
    retry_after: float | None = None  # seconds the provider asked us to wait

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


_NO_CHOICES = re.compile(r"no .?choices", re.IGNORECASE)


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def _malformed(exc: BaseException) -> bool:
    """litellm reports an unparsable body or a body without `choices` as a 500: look underneath."""
    chain = _chain(exc)
    if any(isinstance(e, (json.JSONDecodeError, MalformedResponse)) for e in chain):
        return True
    litellm = litellm_module()
    return isinstance(exc, litellm.APIResponseValidationError) or bool(_NO_CHOICES.search(str(exc)))


def error_headers(exc: BaseException) -> Any:
    """The response headers of a failed call (a case-insensitive mapping), or None."""
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    return headers


def response_headers(response: Any) -> dict[str, str] | None:
    """The provider's headers of a successful litellm response (lower-case names), or None."""
    headers = getattr(response, "_response_headers", None)
    if not headers:
        hidden = getattr(response, "_hidden_params", None) or {}
        headers = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    return {str(k).lower(): str(v) for k, v in headers.items()} if headers else None


def retry_after_seconds(exc: BaseException) -> float | None:
    """How long an error response asks us to wait: `retry-after-ms`, else `Retry-After` (seconds or an
    HTTP date), if any."""
    headers = error_headers(exc)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def classify_error(exc: BaseException) -> CallError:
    """Map a failed call to an error kind; only rate limits, 5xx, timeouts, connection failures and
    malformed responses are worth retrying."""
    litellm = litellm_module()
    message = scrub(f"{type(exc).__name__}: {exc}")[:2000]  # "Incorrect API key provided: sk-..." is stored
    if isinstance(exc, (litellm.Timeout, TimeoutError)):
        return CallError("timeout", message)
    if _malformed(exc):
        return CallError("malformed", message)
    status = getattr(exc, "status_code", None)
    if status == 429 or isinstance(exc, litellm.RateLimitError):
        return CallError("rate_limit", message, retry_after_seconds(exc))
    if isinstance(status, int) and status >= 500:
        return CallError("server", message, retry_after_seconds(exc))
    if isinstance(status, int) and 400 <= status < 500:
        return CallError("bad_request", message)
    if isinstance(exc, litellm.APIConnectionError):
        return CallError("server", message)  # unreachable or reset: transient until retries run out
    return CallError("other", message)


# ---- calling with retries ---------------------------------------------------------------------------
MAX_RETRY_AFTER_S = 300.0  # honour Retry-After up to this; a longer ask would stall the run


@dataclass(frozen=True)
class RetryPolicy:
    timeout: float  # one deadline per attempt, whatever the HTTP client's own timeouts do
    max_retries: int
    backoff_base: float = 0.5
    backoff_cap: float = 30.0


@dataclass
class CallOutcome:
    """One request after every retry: a completion or the last error."""

    completion: Completion | None
    error: CallError | None
    attempts: int
    latency_s: float  # the last attempt's
    busy_s: float  # every attempt's (not waiting for a slot or backing off)


@dataclass
class _Attempt:
    completion: Completion | None
    error: CallError | None
    latency: float
    headers: Any = None  # the provider's response headers, for the pacer


class RetryingCaller:
    """`litellm.acompletion` under a concurrency limit, retried on transient errors with exponential
    backoff and jitter, honouring Retry-After. Shared by the runner and the judge. With a
    `lib.run.quota.Pacer`, every attempt is also paced to that model's quota."""

    def __init__(self, policy: RetryPolicy, concurrency: int) -> None:
        self.policy = policy
        self.litellm = litellm_module()
        self.semaphore = asyncio.Semaphore(concurrency)
        self.random = random.Random()

    def grow(self, slots: int) -> None:
        """More requests in flight from now on."""
        for _ in range(slots):
            self.semaphore.release()

    async def _attempt(self, kwargs: dict[str, Any]) -> _Attempt:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.policy.timeout):
                response = await self.litellm.acompletion(**kwargs)
            return _Attempt(parse_completion(response), None, time.monotonic() - started, response_headers(response))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  - every provider failure becomes a classified error
            return _Attempt(None, classify_error(exc), time.monotonic() - started, error_headers(exc))

    def delay(self, error: CallError, attempt: int) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, MAX_RETRY_AFTER_S) * self.random.uniform(1.0, 1.1)
        backoff = min(self.policy.backoff_cap, self.policy.backoff_base * 2 ** (attempt - 1))
        return backoff * self.random.uniform(0.5, 1.0)

    async def _paced_attempt(self, kwargs: dict[str, Any], pacer: Any, tokens: int) -> _Attempt:
        """One attempt inside the side's pace and the shared concurrency limit."""
        if pacer is None:
            async with self.semaphore:
                return await self._attempt(kwargs)
        sent_at = await pacer.acquire(tokens)
        out = None
        try:
            async with self.semaphore:  # released while backing off: others keep the slots busy
                out = await self._attempt(kwargs)
            return out
        finally:
            _release(pacer, out, tokens, sent_at)

    async def complete(self, kwargs: dict[str, Any], pacer: Any = None) -> CallOutcome:
        """One request after every retry. `pacer`: a `lib.run.quota.Pacer` for this model's quota."""
        tokens = estimate_call_tokens(kwargs) if pacer is not None and pacer.counts_tokens else 0
        attempt, busy = 0, 0.0
        while True:
            attempt += 1
            out = await self._paced_attempt(kwargs, pacer, tokens)
            busy += out.latency
            if out.completion is not None:
                return CallOutcome(out.completion, None, attempt, out.latency, busy)
            if not out.error.retryable or attempt > self.policy.max_retries:
                return CallOutcome(None, out.error, attempt, out.latency, busy)
            await asyncio.sleep(self.delay(out.error, attempt))


CHARS_PER_TOKEN = 4  # fallback estimate when the tokenizer fails
PACING_COMPLETION_TOKENS = 256  # assumed completion tokens of a call without max_tokens, for pacing


def estimate_call_tokens(kwargs: dict[str, Any]) -> int:
    """A call's tokens before it is sent, for a tokens-per-minute quota: prompt tokens (`count_tokens`,
    else characters / 4) plus max_tokens (else PACING_COMPLETION_TOKENS)."""
    messages = kwargs.get("messages") or []
    try:
        prompt = count_tokens(str(kwargs.get("model", "")), messages).tokens
    except Exception:  # noqa: BLE001  - an estimate: a failing tokenizer must not fail the call
        prompt = sum(len(str(m.get("content") or "")) for m in messages) // CHARS_PER_TOKEN + 1
    return prompt + int(kwargs.get("max_tokens") or PACING_COMPLETION_TOKENS)


def _release(pacer: Any, out: _Attempt | None, tokens: int, sent_at: float) -> None:
    """Tell the pacer how an attempt went (a cancelled attempt counts as neither success nor 429)."""
    if out is None:
        pacer.release(ok=False, rate_limited=False, latency_s=0.0, estimated_tokens=tokens, used_tokens=tokens)
        return
    c, error = out.completion, out.error
    used = None if c is None or c.prompt_tokens is None else c.prompt_tokens + (c.completion_tokens or 0)
    if error is not None and error.kind in ("rate_limit", "bad_request"):
        used = 0  # refused before the model ran: those tokens were not spent
    pacer.release(ok=c is not None, rate_limited=error is not None and error.kind == "rate_limit",
                  latency_s=out.latency, estimated_tokens=tokens, used_tokens=used,
                  retry_after=error.retry_after if error is not None else None, headers=out.headers,
                  sent_at=sent_at)
