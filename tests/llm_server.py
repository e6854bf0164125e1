"""A local OpenAI-compatible test server with switchable, deterministic faults.

`LLMServer` runs an aiohttp app on 127.0.0.1 (free port) in its own event-loop thread and is steered
from the test through plain methods: latency, scripted replies (text or tool calls), fingerprints,
faults (429 with Retry-After, 500, 401 echoing the key, 404, slow past the client timeout, invalid JSON,
JSON without `choices`, 400), per-model quotas (`set_quota`: requests and tokens per minute, answered like a
provider: 429 with Retry-After / retry-after-ms when exceeded, x-ratelimit-* headers on every response) and a
request log (with each request's JSON body). Replies are deterministic per (model, messages) and differ
between model names.

`serve_subprocess()` runs the same server in a child process (`python -m tests.llm_server`) so a
benchmark's client does not share the GIL with it; that mode is configured by command-line flags.

Use in tests: the `llm_server` fixture (tests/conftest.py) yields a started server.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

FAULT_KINDS = ("429", "500", "400", "401", "404", "slow", "bad_json", "no_choices")
EMBEDDING_DIM = 16


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode()).digest()


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _content_text(content: object) -> str:
    """Message content as text: strings as is, OpenAI content parts joined."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def last_user_prompt(messages: list[dict]) -> str:
    """The prompt a request is logged under: its last user message."""
    for msg in reversed(messages):
        if msg.get("role") == "user":
            return _content_text(msg.get("content"))
    return ""


def default_reply(model: str, prompt: str) -> str:
    """Deterministic reply derived from the prompt; different model names give different text."""
    return f"{prompt} [{model} {_digest(model, prompt).hex()[:6]}]"


@dataclass
class Fault:
    """A fault on matching requests (optionally one model, or prompts containing `contains`): on
    every attempt, on the first `first` attempts of each request, and/or on a deterministic
    `fraction` of requests (selected by a hash of the request content)."""

    kind: str
    first: int | None = None
    fraction: float | None = None
    model: str | None = None
    contains: str | None = None
    retry_after: float | None = None  # 429: the Retry-After header value (seconds)
    delay: float = 30.0  # slow: seconds before answering

    def applies(self, model: str, prompt: str, key: str, attempt: int) -> bool:
        if self.model is not None and self.model != model:
            return False
        if self.contains is not None and self.contains not in prompt:
            return False
        if self.fraction is not None:
            bucket = int.from_bytes(_digest("fraction", key)[:4], "big") / 2**32
            if bucket >= self.fraction:
                return False
        return self.first is None or attempt <= self.first


@dataclass
class LoggedRequest:
    model: str
    prompt: str
    messages: list[dict]
    attempt: int  # 1-based attempt number of this request content
    fault: str | None  # the fault served, if any
    at: float  # time.monotonic() when it arrived
    body: dict = field(default_factory=dict)  # the request's JSON body (tools, tool_choice, parameters)
    auth: str = ""  # the Authorization header (which key the caller sent)


@dataclass
class _Bucket:
    """A provider-style token bucket: refills at `per_minute / 60` per second up to `capacity`."""

    per_minute: float
    capacity: float
    level: float
    at: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.per_minute / 60.0)
        self.at = now

    def wait_for(self, cost: float) -> float:
        """Seconds until `cost` fits (a cost above capacity fits a full bucket)."""
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) * 60.0 / self.per_minute

    def reset_s(self) -> float:
        """Seconds until the bucket is full again (what x-ratelimit-reset-* report)."""
        return (self.capacity - self.level) * 60.0 / self.per_minute


@dataclass
class Quota:
    """A model's requests and tokens per minute. `burst_s`: how many seconds of quota may be spent at
    once (real providers allow about a minute; tests scale it down to see pacing within seconds)."""

    rpm: float | None = None
    tpm: float | None = None
    burst_s: float = 1.0
    headers: bool = True  # send x-ratelimit-* headers (off: a provider that only answers 429)
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def start(self, now: float) -> None:
        for kind, per_minute in (("requests", self.rpm), ("tokens", self.tpm)):
            if per_minute:
                cap = max(1.0, per_minute * self.burst_s / 60.0)
                self.buckets[kind] = _Bucket(per_minute, cap, cap, now)

    def admit(self, tokens: int, now: float) -> float:
        """0 and the request's cost taken when it fits; else the seconds to wait (nothing taken)."""
        costs = {"requests": 1.0, "tokens": float(tokens)}
        for bucket in self.buckets.values():
            bucket.refill(now)
        wait = max((b.wait_for(costs[k]) for k, b in self.buckets.items()), default=0.0)
        if wait > 0:
            return wait
        for kind, bucket in self.buckets.items():
            bucket.level -= costs[kind]
        return 0.0

    def header_values(self) -> dict[str, str]:
        out = {}
        for kind, bucket in self.buckets.items():
            out[f"x-ratelimit-limit-{kind}"] = f"{bucket.per_minute:g}"
            out[f"x-ratelimit-remaining-{kind}"] = str(max(0, math.floor(bucket.level)))
            out[f"x-ratelimit-reset-{kind}"] = f"{bucket.reset_s():.3f}s"
        return out if self.headers else {}


@dataclass(frozen=True)
class ToolCallsReply:
    """A scripted reply made of tool calls: (name, arguments) pairs; a str argument is sent verbatim."""

    calls: tuple[tuple[str, dict | str], ...]


class LLMServer:
    """OpenAI-compatible chat completions + embeddings with a control API for tests."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.faults: list[Fault] = []
        self.scripts: list[tuple[str | None, str, str | ToolCallsReply]] = []
        self.fingerprints: dict[str, str] = {}
        self.served_models: dict[str, str] = {}
        self.listed_models: list[str] = ["local-small", "local-large"]  # what GET /models lists
        self.log: list[LoggedRequest] = []
        self.quotas: dict[str, Quota] = {}
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- control API -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The `api_base` to give clients."""
        return f"http://127.0.0.1:{self.port}/v1"

    def add_fault(self, kind: str, *, first: int | None = None, fraction: float | None = None,
                  model: str | None = None, contains: str | None = None, retry_after: float | None = None,
                  delay: float = 30.0) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULT_KINDS}")
        fault = Fault(kind, first, fraction, model, contains, retry_after, delay)
        self.faults.append(fault)
        return fault

    def set_quota(self, model: str, *, rpm: float | None = None, tpm: float | None = None, burst_s: float = 1.0,
                  headers: bool = True) -> Quota:
        """Limit `model` to `rpm` requests and `tpm` tokens (prompt words + max_tokens) per minute, as a
        provider does: over it, 429 with Retry-After (whole seconds) and retry-after-ms; with `headers`,
        x-ratelimit-limit/remaining/reset-requests (and -tokens) on every response of that model."""
        quota = Quota(rpm, tpm, burst_s, headers)
        quota.start(time.monotonic())
        with self._lock:
            self.quotas[model] = quota
        return quota

    def clear_faults(self) -> None:
        self.faults.clear()

    def script(self, reply: str, *, contains: str = "", model: str | None = None) -> None:
        """Answer `reply` to requests whose prompt contains `contains` (for `model`, or any)."""
        self.scripts.insert(0, (model, contains, reply))  # latest registration wins

    def script_tool_calls(self, calls: list[tuple[str, dict | str]], *, contains: str = "",
                          model: str | None = None) -> None:
        """Answer with these tool calls (no text, finish_reason "tool_calls"), matched like `script`.
        Call ids differ per model and prompt, as real ones differ per response."""
        self.scripts.insert(0, (model, contains, ToolCallsReply(tuple(calls))))

    def set_fingerprint(self, model: str, fingerprint: str) -> None:
        self.fingerprints[model] = fingerprint

    def set_served_model(self, model: str, served: str) -> None:
        """Report `served` as the response's `model` for requests naming `model`."""
        self.served_models[model] = served

    def calls(self, prompt: str | None = None, model: str | None = None) -> int:
        """How many requests arrived (for an exact prompt and/or model)."""
        with self._lock:
            return sum(1 for r in self.log if (prompt is None or r.prompt == prompt)
                       and (model is None or r.model == model))

    def prompt_counts(self, model: str | None = None) -> Counter[str]:
        """Requests per prompt (optionally for one model)."""
        with self._lock:
            return Counter(r.prompt for r in self.log if model is None or r.model == model)

    def reset(self) -> None:
        """Forget faults, scripts, fingerprints, served models, the log and attempt counts."""
        with self._lock:
            self.faults.clear()
            self.scripts.clear()
            self.fingerprints.clear()
            self.served_models.clear()
            self.quotas.clear()
            self.log.clear()
            self._attempts.clear()

    # ---- request handling --------------------------------------------------------------------
    def _register(self, model: str, messages: list[dict],
                  body: dict | None = None) -> tuple[LoggedRequest, Fault | None]:
        key = json.dumps([model, messages], sort_keys=True)
        prompt = last_user_prompt(messages)
        now = time.monotonic()
        with self._lock:
            self._attempts[key] += 1
            attempt = self._attempts[key]
            fault = self._quota_fault(model, messages, body or {}, now)
            if fault is None:
                fault = next((f for f in self.faults if f.applies(model, prompt, key, attempt)), None)
            entry = LoggedRequest(model, prompt, messages, attempt, fault.kind if fault else None, now, body or {})
            self.log.append(entry)
        return entry, fault

    def _quota_fault(self, model: str, messages: list[dict], body: dict, now: float) -> Fault | None:
        """A 429 when the model's quota is spent (caller holds the lock)."""
        quota = self.quotas.get(model)
        if quota is None:
            return None
        tokens = sum(_words(_content_text(m.get("content"))) for m in messages) + int(body.get("max_tokens") or 16)
        wait = quota.admit(tokens, now)
        return None if wait <= 0 else Fault("429", retry_after=wait)

    def _quota_headers(self, model: str) -> dict[str, str]:
        quota = self.quotas.get(model)
        if quota is None:
            return {}
        with self._lock:
            return quota.header_values()

    def _reply_text(self, model: str, prompt: str) -> str | ToolCallsReply:
        for s_model, contains, reply in self.scripts:
            if (s_model is None or s_model == model) and contains in prompt:
                return reply
        return default_reply(model, prompt)

    def _tool_calls_message(self, model: str, prompt: str, reply: ToolCallsReply) -> tuple[dict, str]:
        """The assistant message of a tool-call reply, and the text its tokens are counted on."""
        calls = [{"id": "call_" + _digest(model, prompt, str(i)).hex()[:12], "type": "function",
                  "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                 for i, (name, args) in enumerate(reply.calls)]
        counted = " ".join(c["function"]["name"] + " " + c["function"]["arguments"] for c in calls)
        return {"role": "assistant", "content": None, "tool_calls": calls}, counted

    def _completion(self, model: str, messages: list[dict], prompt: str) -> dict:
        reply = self._reply_text(model, prompt)
        if isinstance(reply, ToolCallsReply):
            message, text = self._tool_calls_message(model, prompt, reply)
            finish_reason = "tool_calls"
        else:
            message, text, finish_reason = {"role": "assistant", "content": reply}, reply, "stop"
        n_prompt = sum(_words(_content_text(m.get("content"))) for m in messages)
        n_completion = _words(text)
        return {
            "id": "chatcmpl-" + _digest(model, prompt).hex()[:12],
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": self.served_models.get(model, model),
            "system_fingerprint": self.fingerprints.get(model, "fp_" + _digest(model).hex()[:8]),
            "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                      "total_tokens": n_prompt + n_completion},
        }

    async def _fault_response(self, fault: Fault, model: str) -> web.Response | None:
        """The response a fault produces, or None when it only delays (slow)."""
        if fault.kind == "429":
            headers = self._quota_headers(model)
            if fault.retry_after is not None and model in self.quotas:  # a quota: seconds and milliseconds
                headers.update({"Retry-After": str(math.ceil(fault.retry_after)),
                                "retry-after-ms": f"{fault.retry_after * 1000:.0f}"})
            elif fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            return web.json_response({"error": {"message": "Rate limit reached", "type": "rate_limit"}},
                                     status=429, headers=headers)
        if fault.kind == "500":
            return web.json_response({"error": {"message": "internal error", "type": "server"}}, status=500)
        if fault.kind == "400":
            return web.json_response({"error": {"message": "bad request: invalid parameter",
                                                 "type": "invalid_request_error"}}, status=400)
        if fault.kind == "404":
            return web.json_response({"error": {"message": f"The model `{model}` does not exist or you do not "
                                                           "have access to it.", "code": "model_not_found"}},
                                     status=404)
        if fault.kind == "bad_json":
            return web.Response(text='{"id": "x", "choices": [', content_type="application/json")
        if fault.kind == "no_choices":
            return web.json_response({"id": "x", "object": "chat.completion", "model": model})
        await asyncio.sleep(fault.delay)  # slow
        return None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        model, messages = str(body.get("model", "")), list(body.get("messages") or [])
        entry, fault = self._register(model, messages, body)
        entry.auth = request.headers.get("Authorization", "")
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault is not None and fault.kind == "401":  # like OpenAI: the refused key is echoed back
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            return web.json_response({"error": {"message": f"Incorrect API key provided: {key}.",
                                                 "type": "invalid_request_error", "code": "invalid_api_key"}},
                                     status=401)
        if fault is not None:
            response = await self._fault_response(fault, model)
            if response is not None:
                return response
        return web.json_response(self._completion(model, messages, entry.prompt), headers=self._quota_headers(model))

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model", "owned_by": "test"}
                                                              for m in self.listed_models]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        model, inputs = str(body.get("model", "")), body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        if self.latency:
            await asyncio.sleep(self.latency)
        data = [{"object": "embedding", "index": i, "embedding": embedding_vector(model, str(t))}
                for i, t in enumerate(inputs)]
        tokens = sum(_words(str(t)) for t in inputs)
        return web.json_response({"object": "list", "model": model, "data": data,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/embeddings", self._embeddings)
        return app

    # ---- lifecycle ---------------------------------------------------------------------------
    async def _start_site(self, port: int) -> int:
        # backlog: a benchmark opens 32+ connections at once.
        # handler_cancellation: a slow handler stops when its client gives up (timeout tests), and
        # a short shutdown_timeout keeps teardown from waiting for abandoned slow requests.
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False,
                                     handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self, port: int = 0) -> LLMServer:
        """Serve in a daemon thread with its own event loop; returns once the port is bound."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-server", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start_site(port), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)  # type: ignore[union-attr]
        self._loop.close()
        self._loop = None

    def __enter__(self) -> LLMServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def embedding_vector(model: str, text: str) -> list[float]:
    """A deterministic unit vector per (model, text)."""
    raw = [b - 127.5 for b in _digest("embed", model, text)[:EMBEDDING_DIM]]
    norm = sum(v * v for v in raw) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in raw]


@contextmanager
def serve_subprocess(latency: float = 0.0) -> Iterator[str]:
    """Run the server in a child process (no GIL sharing with the client); yields its api_base."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.llm_server", "--latency", str(latency)],
                            cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line.strip().isdigit():
            raise RuntimeError(f"test server did not start (got {line!r})")
        yield f"http://127.0.0.1:{int(line)}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def _main() -> None:
    parser = argparse.ArgumentParser(description="Serve the test LLM server in the foreground.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    server = LLMServer(latency=args.latency)

    async def serve() -> None:
        print(await server._start_site(args.port), flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop  # faster loop when available; the server is then cheaper than the client

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


if __name__ == "__main__":
    _main()
