"""Pacing one model's calls to its provider quota (requests and tokens per minute).

A `Pacer` per side (a quota is per model, as providers count it) gates every attempt:
- a declared quota (`Quota.rpm`, `Quota.tpm`) is a token bucket per kind. A call's tokens are estimated
  before it is sent (prompt tokens + max_tokens) and corrected from the response's usage;
- providers' headers tighten the pace: `x-ratelimit-limit-*` caps the rate, `x-ratelimit-remaining-*` at 0
  holds new calls until `x-ratelimit-reset-*`, and a 429's `retry-after-ms` / `Retry-After` holds the side;
- without a declared quota the pace is found: the first 429 sets the request rate to the rate that was
  succeeding, later 429s cut it (multiplicative decrease), clean seconds raise it (additive increase);
  the in-flight limit does the same (halved on a 429, +1/limit per success), so a quota is found, not hammered.
  Only a 429 to a call sent after the last cut cuts again: those sent before it were answered by it.
Everything runs on one event loop (a side's worker or the in-process loop): no locks beyond asyncio's.
"""
from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lib.errors import ReviewInputError

BURST_S = 0.25  # a bucket holds this many seconds of quota: short idle spells are caught up, never a flood
FOUND_DECREASE = 0.85  # an undeclared quota: the rate after a further 429 ...
FOUND_STORM_DECREASE = 0.7  # ... or after one within STORM_S of the last cut (the rate is still far too high)
STORM_S = 1.0
FOUND_INCREASE_PER_S = 0.10  # ... and its growth per second without a 429 (fraction of the rate)
INFLIGHT_DECREASE = 0.5  # the in-flight limit after a 429
SUCCESS_WINDOW_S = 3.0  # the first 429 sets the rate to the successes per second over this window
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Quota:
    """A model's declared quota; None = not declared (then it is found from 429s and headers)."""

    rpm: float | None = None
    tpm: float | None = None

    def validate(self, label: str = "") -> None:
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ReviewInputError(f"{label}{name} must be a positive number, not {value}")


def quota_for(both: Quota, side: Quota) -> Quota:
    """A side's quota: its own flags, else the flags for both sides."""
    return Quota(side.rpm if side.rpm is not None else both.rpm, side.tpm if side.tpm is not None else both.tpm)


def max_rpm(in_flight: int, latency_s: float) -> float:
    """The most requests per minute `in_flight` calls of `latency_s` each can send."""
    return 60.0 * in_flight / max(latency_s, 1e-6)


def feasibility(quota: Quota, in_flight: int, latency_s: float | None) -> str | None:
    """A sentence when the concurrency cannot reach the declared rpm at this latency (None when it can)."""
    if quota.rpm is None:
        return None
    if latency_s is None:
        return (f"at {in_flight} in flight, {quota.rpm:g} rpm needs calls of at most "
                f"{60.0 * in_flight / quota.rpm:.2g} s (no latency known yet for this model)")
    ceiling = max_rpm(in_flight, latency_s)
    if ceiling >= quota.rpm:
        return None
    return (f"at {in_flight} in flight and ~{latency_s:.2g} s per call, at most {ceiling:.0f} rpm "
            f"(quota {quota.rpm:g}): raise --concurrency to reach it")


def parse_duration(value: str | None) -> float | None:
    """Seconds from a reset header: '1.5', '20ms', '6m0s', '1h2m3s'; None when unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    return sum(float(n) * _UNIT_S[u] for n, u in parts) if parts else None


class Bucket:
    """Refills at `per_minute / 60` per second up to BURST_S of quota (at least one call's worth).
    A call that costs more than the bucket holds goes when it is full and leaves it in debt."""

    def __init__(self, per_minute: float, now: float, full: bool = False) -> None:
        self.per_minute = per_minute
        self.level = self.capacity if full else min(1.0, self.capacity)
        self.at = now

    @property
    def capacity(self) -> float:
        return max(1.0, self.per_minute * BURST_S / 60.0)

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.per_minute / 60.0)
        self.at = now

    def wait(self, cost: float, now: float) -> float:
        self._refill(now)
        need = min(cost, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) * 60.0 / self.per_minute

    def take(self, cost: float) -> None:
        self.level -= cost

    def give_back(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


@dataclass
class PaceStats:
    """What a side achieved: attempts sent, successes, 429s, and the window they span."""

    sent: int = 0
    ok: int = 0
    rate_limited: int = 0
    first_at: float | None = None
    last_at: float | None = None

    def rpm(self) -> float | None:
        """Successful calls per minute between the first send and the last response."""
        if self.first_at is None or self.last_at is None or self.last_at <= self.first_at:
            return None
        return 60.0 * self.ok / (self.last_at - self.first_at)

    def as_dict(self) -> dict[str, Any]:
        rpm = self.rpm()
        return {"sent": self.sent, "ok": self.ok, "rate_limited": self.rate_limited,
                "rpm": None if rpm is None else round(rpm, 1)}


class Pacer:
    """Gates one side's attempts: `await acquire(tokens)` before sending, `release(...)` after."""

    def __init__(self, quota: Quota, concurrency: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.quota, self.clock = quota, clock
        now = clock()
        self.requests = Bucket(quota.rpm, now) if quota.rpm else None
        self.tokens = Bucket(quota.tpm, now, full=True) if quota.tpm else None
        self.rate_cap = quota.rpm or math.inf  # the declared rpm or a provider's stated limit
        self.max_in_flight = concurrency
        self.limit = float(concurrency)  # AIMD in-flight limit
        self.in_flight = 0
        self.hold_until = 0.0
        self.found_at = 0.0  # when the found rate last changed (additive increase runs from here)
        self.last_cut = self.last_found_cut = -math.inf
        self.successes: deque[float] = deque()
        self.stats = PaceStats()
        self._gate = asyncio.Lock()  # FIFO: waiting calls are paced in arrival order, one at a time
        self._room = asyncio.Event()

    @property
    def counts_tokens(self) -> bool:
        return self.tokens is not None

    def grow(self, slots: int) -> None:
        """A larger share of the run's concurrency (a finished side's)."""
        self.max_in_flight += slots
        self.limit = min(self.limit + slots, float(self.max_in_flight))
        self._room.set()

    # ---- sending ------------------------------------------------------------------------------------
    async def acquire(self, tokens: int = 0) -> float:
        """Wait for the side's pace and a free slot; returns the send time (give it back to `release`)."""
        async with self._gate:
            while True:
                now = self.clock()
                wait = self._wait(now, tokens)
                if wait > 0:
                    await asyncio.sleep(wait)
                elif self.in_flight >= max(1, math.floor(self.limit)):
                    self._room.clear()
                    await self._room.wait()
                else:
                    break
            self._take(now, tokens)
            return now

    def _wait(self, now: float, tokens: int) -> float:
        self._grow_found_rate(now)
        waits = [self.hold_until - now]
        if self.requests is not None:
            waits.append(self.requests.wait(1.0, now))
        if self.tokens is not None:
            waits.append(self.tokens.wait(tokens, now))
        return max(waits)

    def _take(self, now: float, tokens: int) -> None:
        if self.requests is not None:
            self.requests.take(1.0)
        if self.tokens is not None:
            self.tokens.take(tokens)
        self.in_flight += 1
        self.stats.sent += 1
        if self.stats.first_at is None:
            self.stats.first_at = now

    # ---- after the response -----------------------------------------------------------------------
    def release(self, *, ok: bool, rate_limited: bool, latency_s: float, estimated_tokens: int = 0,
                used_tokens: int | None = None, retry_after: float | None = None,
                headers: Mapping[str, str] | None = None, sent_at: float | None = None) -> None:
        now = self.clock()
        self.in_flight -= 1
        self.stats.last_at = now
        if self.tokens is not None and used_tokens is not None:
            self.tokens.give_back(estimated_tokens - used_tokens)  # negative when the estimate was low
        if headers:
            self._read_headers(headers, now)
        if rate_limited:
            self._on_rate_limit(now, retry_after, now if sent_at is None else sent_at)
        elif ok:
            self._on_success(now)
        self._room.set()

    def _on_success(self, now: float) -> None:
        self.stats.ok += 1
        self.successes.append(now)
        while self.successes and self.successes[0] < now - SUCCESS_WINDOW_S:
            self.successes.popleft()
        self.limit = min(float(self.max_in_flight), self.limit + 1.0 / max(self.limit, 1.0))

    def _on_rate_limit(self, now: float, retry_after: float | None, sent_at: float) -> None:
        self.stats.rate_limited += 1
        if retry_after is not None:
            self.hold_until = max(self.hold_until, now + retry_after)
        if sent_at <= self.last_cut:
            return  # sent before the last cut, at the old pace: that cut answered it already
        self.last_cut = now
        self.limit = max(1.0, self.limit * INFLIGHT_DECREASE)
        if self.quota.rpm is None:
            self._cut_found_rate(now)

    def _cut_found_rate(self, now: float) -> None:
        """Undeclared quota: start from the rate that was succeeding, then decrease multiplicatively."""
        if self.requests is None:
            if len(self.successes) < 2:
                return  # nothing to measure a rate on yet: the in-flight limit and the hold do the work
            span = min(SUCCESS_WINDOW_S, now - (self.stats.first_at or now)) or 1.0
            self.requests = Bucket(60.0 * len(self.successes) / span, now)
        else:
            storm = now - self.last_found_cut < STORM_S
            self.requests.per_minute = max(1.0, self.requests.per_minute * (FOUND_STORM_DECREASE if storm
                                                                             else FOUND_DECREASE))
        self.found_at = self.last_found_cut = now

    def _grow_found_rate(self, now: float) -> None:
        if self.quota.rpm is not None or self.requests is None or now - self.found_at < 1.0:
            return
        grown = self.requests.per_minute * (1.0 + FOUND_INCREASE_PER_S * (now - self.found_at))
        self.requests.per_minute = min(self.rate_cap, grown)
        self.found_at = now

    def _read_headers(self, headers: Mapping[str, str], now: float) -> None:
        for kind in ("requests", "tokens"):
            limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
            if limit:
                self._cap_rate(kind, limit, now)
            remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is not None and remaining < 1 and reset:
                # nothing left: wait for one call's worth (the bucket refills continuously), not the full reset
                per_call = 60.0 / limit if limit and kind == "requests" else reset
                self.hold_until = max(self.hold_until, now + min(reset, per_call))

    def _cap_rate(self, kind: str, limit: float, now: float) -> None:
        """The provider's stated limit per minute: never pace faster than it."""
        bucket = self.requests if kind == "requests" else self.tokens
        if kind == "requests":
            self.rate_cap = min(self.rate_cap, limit)
        if bucket is None:
            bucket = Bucket(limit, now, full=kind == "tokens")
            if kind == "requests":
                self.requests = bucket
            else:
                self.tokens = bucket
        elif bucket.per_minute > limit:
            bucket.per_minute = limit


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def recent_latency(engine: Any, model: str, last: int = 200) -> float | None:
    """The median latency of `model`'s last successful calls in the store (None when it has none)."""
    from sqlmodel import col, select

    from lib.store.entities import ModelConfig, Output, Run

    query = (select(col(Output.latency_s)).join(Run, col(Run.id) == col(Output.run_id))
             .join(ModelConfig, col(ModelConfig.id) == col(Run.config_id))
             .where(ModelConfig.model == model, col(Output.error).is_(None), col(Output.latency_s).is_not(None))
             .order_by(col(Output.id).desc()).limit(last))
    with engine.connect() as conn:
        values = sorted(v for (v,) in conn.execute(query))
    return values[len(values) // 2] if values else None
