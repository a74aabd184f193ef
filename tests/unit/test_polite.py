"""Polite fetching per host, on a fake clock: a rate limit, halved on 429/503 and restored
slowly, Retry-After honoured; and the User-Agent that identifies us."""

from __future__ import annotations

import pytest

from imgcompress_core._polite import HostPacer
from imgcompress_core.fetch import USER_AGENT, user_agent
from imgcompress_core.testing import FakeClock


def test_requests_to_one_host_are_spaced_by_the_rate() -> None:
    """At 4 a second, four back-to-back requests start 0, 0.25, 0.5, 0.75 s apart; another
    host is not held up."""
    clock = FakeClock(now=100.0)
    pacer = HostPacer(4.0, clock=clock)
    waits = [pacer.reserve("shop.example") for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert pacer.reserve("cdn.example") == 0.0


def test_pushback_halves_the_rate_and_good_answers_restore_it_slowly() -> None:
    """A 429 halves the rate; each good answer gives back 10 %, never above the limit."""
    pacer = HostPacer(8.0, clock=FakeClock())
    pacer.pushed_back("shop.example", None)
    pacer.pushed_back("shop.example", None)
    assert pacer.rate("shop.example") == 2.0
    pacer.answered("shop.example")
    assert pacer.rate("shop.example") == pytest.approx(2.2)
    for _ in range(100):
        pacer.answered("shop.example")
    assert pacer.rate("shop.example") == 8.0


def test_retry_after_pauses_the_host() -> None:
    """After a Retry-After of 30 s, the next request to that host waits 30 s."""
    clock = FakeClock(now=0.0)
    pacer = HostPacer(10.0, clock=clock)
    pacer.reserve("shop.example")
    pacer.pushed_back("shop.example", 30.0)
    assert pacer.reserve("shop.example") == pytest.approx(30.0)


def test_no_limit_means_no_waiting_but_retry_after_still_counts() -> None:
    """With a rate of 0 nothing is spaced."""
    pacer = HostPacer(0.0, clock=FakeClock())
    assert [pacer.reserve("a") for _ in range(5)] == [0.0] * 5


def test_user_agent_names_the_version_and_a_contact() -> None:
    """imgcompress/<version>, plus the configured contact URL."""
    from imgcompress_core import __version__

    assert f"imgcompress/{__version__}" == USER_AGENT
    assert (
        user_agent("mailto:ops@shop.example")
        == f"imgcompress/{__version__} (+mailto:ops@shop.example)"
    )
    assert user_agent(None) == USER_AGENT
