"""Claiming remembers which requests have work (``Turns``): after the first claim a claim
costs one store call, a request whose hosts are full waits without asking the store, and
new work is seen at once when announced (``look_again``), when the remembered requests
run dry, or within a second when another process stored it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from imgcompress_core import MemoryStorage
from imgcompress_core.testing import FakeClock
from imgcompress_core.testing._contract_kit import LEASING, make_request
from imgcompress_core.workflow import HostShares, Workflow

pytestmark = pytest.mark.anyio


class CountingQueue:
    """The memory store's image queue, counting the claim calls it answers."""

    def __init__(self, store: MemoryStorage) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        if name in ("claimable_requests", "claim_images"):
            self.calls[name] += 1
        return getattr(self.store, name)


def flows(clock: FakeClock) -> tuple[Workflow, Workflow, CountingQueue]:
    """A worker's workflow counting its claim calls, and another process's workflow."""
    store = MemoryStorage()
    queue = CountingQueue(store)
    worker = Workflow(store, queue, store, store, store, clock=clock)  # type: ignore[arg-type]
    return worker, Workflow.over(store, clock=clock), queue


async def test_after_the_first_claim_a_claim_costs_one_store_call() -> None:
    worker, _, queue = flows(FakeClock())
    await worker.create(make_request((10,)))
    assert len(await worker.claim("w", 2, LEASING)) == 2
    assert queue.calls == {"claimable_requests": 1, "claim_images": 1}
    assert len(await worker.claim("w", 2, LEASING)) == 2
    assert queue.calls == {"claimable_requests": 1, "claim_images": 2}


async def test_a_request_whose_host_is_full_waits_without_a_store_call() -> None:
    worker, _, queue = flows(FakeClock())
    await worker.create(make_request((6,)))  # every image on img.example
    shares = HostShares(per_host=2)
    assert len(await worker.claim("w", 5, LEASING, shares)) == 2
    asked = queue.calls.copy()
    assert await worker.claim("w", 5, LEASING, shares) == []  # the host's share is full
    assert queue.calls == asked
    shares.give_back("img.example")
    [claim] = await worker.claim("w", 5, LEASING, shares)
    assert claim.url.startswith("https://img.example/")
    assert queue.calls - asked == {"claim_images": 1}  # one call for the freed place


async def test_a_request_stored_elsewhere_is_seen_when_announced_or_within_a_second() -> None:
    clock = FakeClock()
    worker, elsewhere, _ = flows(clock)
    first = make_request((10,))
    await worker.create(first)
    await worker.claim("w", 1, LEASING)
    second = make_request((1,))
    await elsewhere.create(second)  # another process: this worker's list does not know it
    [turn] = await worker.claim("w", 1, LEASING)
    assert turn.request_id == first.request_id
    clock.advance(1.0)
    [turn] = await worker.claim("w", 1, LEASING)
    assert turn.request_id == second.request_id  # the list is a second old: asked again
    third = make_request((1,))
    await elsewhere.create(third)
    [turn] = await worker.claim("w", 1, LEASING, look_again=True)
    assert turn.request_id == third.request_id  # never served yet: its turn, at once


async def test_when_the_remembered_requests_run_dry_the_store_is_asked_at_once() -> None:
    worker, elsewhere, _ = flows(FakeClock())
    only = make_request((1,))
    await worker.create(only)
    [claim] = await worker.claim("w", 4, LEASING)
    assert claim.request_id == only.request_id
    later = make_request((2,))
    await elsewhere.create(later)
    claims = await worker.claim("w", 4, LEASING)  # same instant: no max_age needed
    assert {c.request_id for c in claims} == {later.request_id}
    assert len(claims) == 2
