"""Polite fetching: at most so many requests a second to one host, fewer when it pushes
back (429 or 503: the rate halves, and a Retry-After pauses the host), restored slowly
while it answers well."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio

__all__ = ["HostPacer"]

_SLOWEST = 1 / 60  # never slower than a request a minute per host
_RECOVERY = 1.1  # each good answer raises a reduced rate by 10 %


@dataclass(slots=True)
class _Host:
    rate: float  # requests a second allowed now
    next_at: float = 0.0  # when the next request may start


class HostPacer:
    """Spaces requests to each host by its current rate (``per_second``; 0: no limit)."""

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._hosts: dict[str, _Host] = {}

    def rate(self, host: str) -> float:
        """Return the requests a second allowed to ``host`` now."""
        state = self._hosts.get(host)
        return self.per_second if state is None else state.rate

    def _state(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            if len(self._hosts) > 10_000:  # forget hosts at full rate, keep the limited ones
                full = [h for h, s in self._hosts.items() if s.rate >= self.per_second]
                for name in full:
                    del self._hosts[name]
            state = self._hosts[host] = _Host(self.per_second)
        return state

    def reserve(self, host: str) -> float:
        """Take the next turn for ``host``; return how many seconds to wait for it."""
        if self.per_second <= 0:
            return 0.0
        state = self._state(host)
        now = self._clock()
        start = max(now, state.next_at)
        state.next_at = start + 1 / state.rate
        return start - now

    async def turn(self, host: str) -> None:
        """Wait until a request to ``host`` may start."""
        wait = self.reserve(host)
        if wait > 0:
            await anyio.sleep(wait)

    def pushed_back(self, host: str, retry_after: float | None) -> None:
        """The host answered 429 or 503: halve its rate; honour its Retry-After."""
        if self.per_second <= 0 and retry_after is None:
            return
        state = self._state(host)
        if self.per_second > 0:
            state.rate = max(_SLOWEST, state.rate / 2)
        if retry_after is not None:
            state.next_at = max(state.next_at, self._clock() + retry_after)

    def answered(self, host: str) -> None:
        """The host answered well: raise a reduced rate a little, up to the limit."""
        state = self._hosts.get(host)
        if state is not None and state.rate < self.per_second:
            state.rate = min(self.per_second, state.rate * _RECOVERY)
