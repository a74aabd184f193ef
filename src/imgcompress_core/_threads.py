"""Blocking calls run off the event loop, cheaply.

The store and the compressor hand several blocking calls per image to threads. anyio's
``to_thread.run_sync`` costs the event loop about 0.27 ms a call when 16 tasks share a
one-thread limiter (each waiter gets its own event and cancel scope), asyncio's
``run_in_executor`` about 0.11 ms (``benchmarks/RESULTS.md``, section 4c). A
:class:`ThreadLane` uses the second on asyncio and anyio's threads on any other backend
(trio). Either way a cancelled caller waits for its call to finish before the
cancellation reaches it, as with anyio's default: a store transaction that ran is never
reported as not run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["ThreadLane"]

_T = TypeVar("_T")


class ThreadLane:
    """Runs blocking calls in threads of its own, at most ``threads`` at a time."""

    def __init__(self, threads: int, name: str) -> None:
        self.threads = threads
        self.name = name
        self._limiter = anyio.CapacityLimiter(threads)
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, call: Callable[[], _T]) -> _T:
        """Run ``call`` in one of the lane's threads and return what it returns."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on asyncio (trio)
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self.name)
        future = loop.run_in_executor(self._pool, call)
        with anyio.CancelScope(shield=True):
            result = await future
        return result
