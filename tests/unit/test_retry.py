"""RetryPolicy: when to give up and how long to wait, with a deterministic jitter."""

from __future__ import annotations

import random

import pytest

from imgcompress_core.errors import (
    CompressionError,
    FetchError,
    ImgCompressError,
    NotificationError,
    StorageUnavailable,
)
from imgcompress_core.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=5, base_delay=2.0, max_delay=30.0)


def highest(low: float, high: float) -> float:
    """Jitter that always draws the top of the range."""
    return high


def lowest(low: float, high: float) -> float:
    """Jitter that always draws the bottom of the range."""
    return low


def transient(retry_after: float | None = None) -> FetchError:
    """A download failure worth trying again."""
    return FetchError("slow", code="download_timeout", retryable=True, retry_after=retry_after)


def test_a_non_retryable_error_gives_up_at_once() -> None:
    """A permanent failure is not tried again, whatever the attempt."""
    permanent = CompressionError("not an image", code="not_an_image")
    assert POLICY.decide(1, permanent, rng=highest) is None
    gone = NotificationError("410", code="webhook_http_410", retryable=False, retry_after=5)
    assert POLICY.decide(1, gone, rng=highest) is None


def test_gives_up_once_the_attempts_are_used() -> None:
    """The attempt numbered max_attempts is the last one."""
    assert POLICY.decide(4, transient(), rng=highest) is not None
    assert POLICY.decide(5, transient(), rng=highest) is None
    assert POLICY.decide(6, transient(), rng=highest) is None
    assert RetryPolicy(1, 2.0, 30.0).decide(1, transient(), rng=highest) is None


def test_the_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    """With the top of the jitter range: 2, 4, 8, 16, then 30 (the cap) and no more."""
    policy = RetryPolicy(max_attempts=100, base_delay=2.0, max_delay=30.0)
    delays = [policy.decide(attempt, transient(), rng=highest) for attempt in range(1, 8)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert policy.decide(99, transient(), rng=highest) == 30.0


def test_jitter_is_drawn_from_zero_to_the_ceiling() -> None:
    """Full jitter: rng gets (0, ceiling), and whatever it draws is the delay."""
    asked: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        asked.append((low, high))
        return 1.25

    assert POLICY.decide(3, transient(), rng=record) == 1.25
    assert asked == [(0.0, 8.0)]
    assert POLICY.decide(2, transient(), rng=lowest) == 0.0


def test_random_delays_stay_within_the_bounds() -> None:
    """The default rng (seeded here) never goes below 0 or above the attempt's ceiling."""
    seeded = random.Random(7)
    for attempt in range(1, 5):
        ceiling = min(30.0, 2.0 * 2 ** (attempt - 1))
        for _ in range(200):
            delay = POLICY.decide(attempt, transient(), rng=seeded.uniform)
            assert delay is not None and 0.0 <= delay <= ceiling


def test_retry_after_is_the_shortest_wait() -> None:
    """A server's Retry-After wins over a shorter jittered delay, not over a longer one."""
    assert POLICY.decide(1, transient(retry_after=10.0), rng=lowest) == 10.0
    assert POLICY.decide(1, transient(retry_after=10.0), rng=highest) == 10.0
    assert POLICY.decide(4, transient(retry_after=10.0), rng=highest) == 16.0
    assert POLICY.decide(1, transient(retry_after=0.0), rng=highest) == 2.0


def test_retry_after_is_capped_at_the_longest_delay() -> None:
    """A server asking for an hour waits max_delay, no longer."""
    assert POLICY.decide(1, transient(retry_after=3600.0), rng=lowest) == 30.0


def test_retry_after_counts_for_any_core_error() -> None:
    """retry_after lives on the base class, so webhooks and storage errors honour it too."""
    webhook = NotificationError("busy", code="webhook_http_503", retry_after=12.0)
    assert POLICY.decide(1, webhook, rng=lowest) == 12.0
    assert POLICY.decide(1, StorageUnavailable("down", retry_after=7.0), rng=lowest) == 7.0
    assert POLICY.decide(1, StorageUnavailable("down"), rng=lowest) == 0.0


def test_a_huge_attempt_number_does_not_overflow() -> None:
    """Attempt counts far past any real setting still give the cap."""
    policy = RetryPolicy(max_attempts=10**9, base_delay=1e6, max_delay=60.0)
    assert policy.decide(10**8, transient(), rng=highest) == 60.0


@pytest.mark.parametrize(
    ("max_attempts", "base_delay", "max_delay"),
    [(0, 1.0, 1.0), (3, -1.0, 1.0), (3, 1.0, -1.0)],
)
def test_nonsense_settings_are_refused(
    max_attempts: int, base_delay: float, max_delay: float
) -> None:
    """The same bounds the settings enforce: at least one attempt, no negative delay."""
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(max_attempts, base_delay, max_delay)


def test_the_policy_is_a_frozen_value() -> None:
    """Policies compare by value and cannot be changed after creation."""
    assert RetryPolicy(5, 2.0, 30.0) == POLICY
    with pytest.raises(AttributeError):
        POLICY.max_attempts = 9  # type: ignore[misc]


def test_a_plain_core_error_is_not_retried_by_default() -> None:
    """retryable defaults to False on the base class."""
    assert POLICY.decide(1, ImgCompressError("boom"), rng=highest) is None
