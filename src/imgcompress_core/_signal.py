"""A wake-up flag a loop waits on with a timeout (the worker's and the webhook sender's)."""

from __future__ import annotations

import anyio

__all__ = ["Signal"]


class Signal:
    """A wake-up flag to wait on with a timeout; waiting re-arms it."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        """Wake the waiter."""
        self._event.set()

    async def wait(self, seconds: float) -> None:
        """Return when set, or after ``seconds``."""
        with anyio.move_on_after(seconds):
            await self._event.wait()
        if self._event.is_set():
            self._event = anyio.Event()
