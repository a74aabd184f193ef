"""When to try again: one policy for images and for webhook deliveries.

A failed attempt is tried again when its error is ``retryable`` and attempts remain. The
delay is exponential backoff with full jitter, a uniform draw from 0 up to
``base_delay * 2 ** (attempt - 1)`` capped at ``max_delay``, and never shorter than the
error's ``retry_after`` (what the server asked for, itself capped at ``max_delay``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ImgCompressError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts to make and how long to wait between them (seconds)."""

    max_attempts: int
    base_delay: float
    max_delay: float

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must not be negative")

    def decide(
        self,
        attempt: int,
        error: ImgCompressError,
        *,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> float | None:
        """Return the delay before the next attempt, or None to give up.

        ``attempt`` is the 1-based number of the attempt that just failed with ``error``;
        ``rng(low, high)`` draws the jitter (tests pass a deterministic one).
        """
        if not error.retryable or attempt >= self.max_attempts:
            return None
        # The exponent is bounded so a huge attempt number cannot overflow 2.0 ** n; the
        # product may still reach inf, which max_delay then caps.
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(attempt - 1, 1000))
        delay = rng(0.0, ceiling)
        if error.retry_after is not None:
            delay = max(delay, min(error.retry_after, self.max_delay))
        return delay
