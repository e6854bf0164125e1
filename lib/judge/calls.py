"""Judge calls: bounded concurrency, a deadline per attempt, retries with backoff and Retry-After,
then a bounded number of correction turns when the reply is not valid judgement JSON.

The transport part mirrors lib/runner.py's `_Executor` (private there): if the runner exposes a
public `call_with_retries`, this module should use it instead.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

from lib import llm
from lib.judge.parsing import Parsed, parse_reply

MAX_RETRY_AFTER_S = 300.0
CORRECTION = ("Your reply was not a valid JSON object of the requested form ({error}). "
              "Reply again with only the JSON object, nothing else.")


@dataclass
class CallOptions:
    concurrency: int = 4
    timeout: float = 60.0  # seconds per attempt
    max_retries: int = 4  # transport retries (429, 5xx, timeouts, malformed responses)
    parse_retries: int = 2  # correction turns after a reply that is not valid judgement JSON
    backoff_base: float = 0.5
    backoff_cap: float = 30.0


@dataclass
class Reply:
    """The outcome of one judgement request after every retry."""

    parsed: Parsed | None  # None when the call itself failed
    completion: llm.Completion | None  # the last successful response
    error: llm.CallError | None
    attempts: int  # HTTP requests made
    malformed: int  # replies that failed validation
    latency_s: float  # time in HTTP attempts (not waiting for a slot or backing off)


class JudgeCaller:
    def __init__(self, options: CallOptions) -> None:
        self.options = options
        self.litellm = llm.litellm_module()
        self.semaphore = asyncio.Semaphore(options.concurrency)
        self.random = random.Random()

    async def _attempt(self, kwargs: dict[str, Any]) -> tuple[llm.Completion | None, llm.CallError | None, float]:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.options.timeout):
                response = await self.litellm.acompletion(**kwargs)
            return llm.parse_completion(response), None, time.monotonic() - started
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  - every provider failure becomes a classified error
            return None, llm.classify_error(exc), time.monotonic() - started

    def _delay(self, error: llm.CallError, attempt: int) -> float:
        if error.retry_after is not None:
            return min(error.retry_after, MAX_RETRY_AFTER_S) * self.random.uniform(1.0, 1.1)
        backoff = min(self.options.backoff_cap, self.options.backoff_base * 2 ** (attempt - 1))
        return backoff * self.random.uniform(0.5, 1.0)

    async def complete(self, kwargs: dict[str, Any]) -> tuple[llm.Completion | None, llm.CallError | None, int, float]:
        """One completion with transport retries: (completion, error, attempts, seconds in attempts)."""
        attempt, busy = 0, 0.0
        while True:
            attempt += 1
            async with self.semaphore:  # released while backing off
                completion, error, seconds = await self._attempt(kwargs)
            busy += seconds
            if completion is not None:
                return completion, None, attempt, busy
            if not error.retryable or attempt > self.options.max_retries:
                return None, error, attempt, busy
            await asyncio.sleep(self._delay(error, attempt))

    async def judge(self, kwargs: dict[str, Any], schema: dict[str, Any]) -> Reply:
        """Ask, validate, and on an invalid reply ask again with a correction turn (bounded)."""
        messages = list(kwargs["messages"])
        attempts = malformed = 0
        busy = 0.0
        completion: llm.Completion | None = None
        parsed: Parsed | None = None
        for _turn in range(self.options.parse_retries + 1):
            completion, error, n, seconds = await self.complete({**kwargs, "messages": messages})
            attempts, busy = attempts + n, busy + seconds
            if error is not None:
                return Reply(None, None, error, attempts, malformed, busy)
            parsed = parse_reply(completion.text, schema)
            if parsed.ok:
                break
            malformed += 1
            messages = [*messages, {"role": "assistant", "content": completion.text},
                        {"role": "user", "content": CORRECTION.format(error=parsed.error)}]
        return Reply(parsed, completion, None, attempts, malformed, busy)
