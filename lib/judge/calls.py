"""Judge calls: bounded concurrency, a deadline per attempt, retries with backoff and Retry-After,
then a bounded number of correction turns when the reply is not valid judgement JSON.

The transport part (retries, Retry-After, concurrency, pacing to the judge model's quota) is
`lib.run.llm.RetryingCaller` with a `lib.run.quota.Pacer`, as in the runner.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lib.judge.parsing import Parsed, parse_reply
from lib.run import llm
from lib.run.quota import Pacer, Quota

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
    quota: Quota = field(default_factory=Quota)  # the judge model's rpm/tpm (undeclared: found from 429s)


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
        policy = llm.RetryPolicy(options.timeout, options.max_retries, options.backoff_base, options.backoff_cap)
        self.caller = llm.RetryingCaller(policy, options.concurrency)
        self.pacer = Pacer(options.quota, options.concurrency)

    async def judge(self, kwargs: dict[str, Any], schema: dict[str, Any]) -> Reply:
        """Ask, validate, and on an invalid reply ask again with a correction turn (bounded)."""
        messages = list(kwargs["messages"])
        attempts = malformed = 0
        busy = 0.0
        completion: llm.Completion | None = None
        parsed: Parsed | None = None
        for _turn in range(self.options.parse_retries + 1):
            out = await self.caller.complete({**kwargs, "messages": messages}, self.pacer)
            attempts, busy = attempts + out.attempts, busy + out.busy_s
            if out.error is not None:
                return Reply(None, None, out.error, attempts, malformed, busy)
            completion = out.completion
            parsed = parse_reply(completion.text, schema)
            if parsed.ok:
                break
            malformed += 1
            messages = [*messages, {"role": "assistant", "content": completion.text},
                        {"role": "user", "content": CORRECTION.format(error=parsed.error)}]
        return Reply(parsed, completion, None, attempts, malformed, busy)
