"""ThreadLane: blocking calls in threads of the lane's own, at most N at a time, and a
cancelled caller waits for its call to finish (a store transaction that ran is never
reported as not run)."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from imgcompress_core._threads import ThreadLane

pytestmark = pytest.mark.anyio


async def test_a_call_runs_in_a_thread_of_the_lane_and_returns_or_raises() -> None:
    lane = ThreadLane(1, "lane-test")
    name = await lane.run(lambda: threading.current_thread().name)
    assert name.startswith("lane-test")
    assert name != threading.current_thread().name

    def fails() -> None:
        raise KeyError("from the thread")

    with pytest.raises(KeyError, match="from the thread"):
        await lane.run(fails)


async def test_calls_run_at_most_threads_at_a_time() -> None:
    lane = ThreadLane(2, "lane-test")
    lock = threading.Lock()
    running, most = 0, 0

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async with anyio.create_task_group() as tasks:
        for _ in range(8):
            tasks.start_soon(lane.run, work)
    assert most == 2


async def test_a_cancelled_caller_waits_for_its_call_to_finish() -> None:
    lane = ThreadLane(1, "lane-test")
    started, finished = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        time.sleep(0.3)
        finished.set()
        return "done"

    seen: list[bool] = []
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tasks:

            async def call() -> None:
                try:
                    await lane.run(slow)
                finally:
                    seen.append(finished.is_set())  # cancelled only once the call is over

            tasks.start_soon(call)
            while not started.is_set():
                await anyio.sleep(0.01)
            scope.cancel()
    assert scope.cancelled_caught
    assert seen == [True]
