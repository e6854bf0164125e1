"""Many calls on one event loop, stoppable from a progress callback (Ctrl-C, Streamlit stopping the script).

A KeyboardInterrupt raised inside a task escapes the event loop mid-step: asyncio.run's clean-up then
re-enters the loop with tasks half-cancelled and one exception never retrieved. Instead the callback's
exception is wrapped (`report`), every other call is cancelled and awaited, writes already started finish
(`gather_stoppable`), and the exception is raised again outside the loop (`run`).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

E = TypeVar("E")


class Stopped(Exception):
    """The progress callback raised: stop every call and hand its exception back."""

    def __init__(self, reason: BaseException):
        super().__init__(repr(reason))
        self.reason = reason


def report(callback: Callable[[E], None] | None, event: E) -> None:
    """Call the progress callback; whatever it raises stops the run (as Stopped)."""
    if callback is None:
        return
    try:
        callback(event)
    except BaseException as exc:  # noqa: BLE001 - handed back to the caller by run()
        raise Stopped(exc) from None


async def gather_stoppable(calls: Iterable[Awaitable[Any]]) -> BaseException | None:
    """Await every call; on Stopped, cancel the rest, wait for them, and return the callback's exception."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        await asyncio.gather(*tasks)
        return None
    except Stopped as stopped:
        return stopped.reason
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run(main: Coroutine[Any, Any, BaseException | None]) -> None:
    """asyncio.run, then raise what stopped the run (outside the loop)."""
    stopped = asyncio.run(main)
    if stopped is not None:
        raise stopped
