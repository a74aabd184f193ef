"""The compression pool's admission by decoded size (``cpu._MemoryBudget``), driven
directly: which images may be in progress at once, and in what order they start."""

from __future__ import annotations

import anyio
import pytest

from imgcompress_core.cpu import _MemoryBudget

pytestmark = pytest.mark.anyio

MIB = 1 << 20


class Run:
    """Images that hold the budget until told to finish, recording what ran at once."""

    def __init__(self, budget: _MemoryBudget, limit: int) -> None:
        self.budget, self.limit = budget, limit
        self.started: list[str] = []
        self.running: dict[str, int] = {}
        self.most_bytes = 0
        self.most_images = 0
        self.finish: dict[str, anyio.Event] = {}

    async def image(self, name: str, size: int) -> None:
        self.finish[name] = anyio.Event()
        async with self.budget.hold(size, self.limit):
            self.started.append(name)
            self.running[name] = size
            self.most_bytes = max(self.most_bytes, sum(self.running.values()))
            self.most_images = max(self.most_images, len(self.running))
            await self.finish[name].wait()
            del self.running[name]

    async def settle(self) -> None:
        for _ in range(10):
            await anyio.sleep(0)


async def test_two_images_over_the_budget_together_never_run_at_once() -> None:
    run = Run(_MemoryBudget(slots=2), limit=64 * MIB)
    async with anyio.create_task_group() as group:
        group.start_soon(run.image, "a", 40 * MIB)
        await run.settle()
        group.start_soon(run.image, "b", 30 * MIB)
        await run.settle()
        assert run.started == ["a"]  # a worker is free, the memory is not
        run.finish["a"].set()
        await run.settle()
        assert run.started == ["a", "b"]
        run.finish["b"].set()
    assert run.most_images == 1 and run.most_bytes == 40 * MIB
    assert run.budget.in_use == 0 and run.budget.peak == 40 * MIB


async def test_an_image_larger_than_the_budget_runs_alone() -> None:
    """Always admitted when nothing else runs (the per-image cap is checked earlier),
    and nothing starts beside it."""
    run = Run(_MemoryBudget(slots=2), limit=64 * MIB)
    async with anyio.create_task_group() as group:
        group.start_soon(run.image, "huge", 200 * MIB)
        await run.settle()
        group.start_soon(run.image, "small", 1 * MIB)
        await run.settle()
        assert run.started == ["huge"]
        run.finish["huge"].set()
        await run.settle()
        run.finish["small"].set()
    assert run.started == ["huge", "small"] and run.most_images == 1


async def test_images_that_fit_together_run_together_up_to_the_workers() -> None:
    run = Run(_MemoryBudget(slots=2), limit=64 * MIB)
    async with anyio.create_task_group() as group:
        for name in "abc":
            group.start_soon(run.image, name, 10 * MIB)
        await run.settle()
        assert sorted(run.running) == ["a", "b"]  # the third waits for a worker, not memory
        for name in "abc":
            run.finish[name].set()
            await run.settle()
    assert run.most_images == 2 and run.most_bytes == 20 * MIB


async def test_a_small_image_goes_ahead_of_a_waiting_large_one_without_delaying_it() -> None:
    """A 40 MiB image runs; a second 40 MiB waits for memory; a 10 MiB one behind it
    starts on the free worker (it leaves room for the waiting one), and the waiting one
    starts as soon as the first is done, beside the small one."""
    run = Run(_MemoryBudget(slots=2), limit=64 * MIB)
    async with anyio.create_task_group() as group:
        group.start_soon(run.image, "big1", 40 * MIB)
        await run.settle()
        group.start_soon(run.image, "big2", 40 * MIB)
        await run.settle()
        group.start_soon(run.image, "small", 10 * MIB)
        await run.settle()
        assert run.started == ["big1", "small"]
        run.finish["big1"].set()
        await run.settle()
        assert run.started == ["big1", "small", "big2"]
        assert sorted(run.running) == ["big2", "small"]
        run.finish["big2"].set()
        run.finish["small"].set()
    assert run.most_bytes == 50 * MIB <= 64 * MIB


async def test_images_going_ahead_never_leave_the_waiting_one_without_room() -> None:
    """Behind a waiting 40 MiB image, a 30 MiB one may not go ahead (30 + 40 > 64),
    even though it would fit beside the running 20 MiB image now: otherwise the waiting
    image could wait for ever behind a stream of images that fit."""
    run = Run(_MemoryBudget(slots=3), limit=64 * MIB)
    async with anyio.create_task_group() as group:
        group.start_soon(run.image, "first", 30 * MIB)
        await run.settle()
        group.start_soon(run.image, "waiting", 40 * MIB)
        await run.settle()
        group.start_soon(run.image, "medium", 30 * MIB)
        group.start_soon(run.image, "small", 20 * MIB)
        await run.settle()
        assert run.started == ["first", "small"]  # 20 + 40 fits the budget, 30 + 40 not
        run.finish["first"].set()
        await run.settle()
        assert run.started == ["first", "small", "waiting"]
        run.finish["waiting"].set()
        run.finish["small"].set()
        await run.settle()
        run.finish["medium"].set()
    assert run.started[-1] == "medium" and run.most_bytes <= 64 * MIB


async def test_a_cancelled_waiting_image_lets_the_next_one_in() -> None:
    run = Run(_MemoryBudget(slots=2), limit=64 * MIB)
    async with anyio.create_task_group() as group:
        group.start_soon(run.image, "a", 40 * MIB)
        await run.settle()
        with anyio.move_on_after(0.05):
            await run.image("gives-up", 40 * MIB)
        group.start_soon(run.image, "c", 20 * MIB)
        await run.settle()
        assert run.started == ["a", "c"]
        run.finish["a"].set()
        run.finish["c"].set()
    assert run.budget.in_use == 0
