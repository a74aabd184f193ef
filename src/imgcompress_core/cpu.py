"""Where images are compressed: a pool of threads or of worker processes.

The event loop never compresses: ``Compressor.compress`` hands the bytes to the pool and
waits without blocking, at most ``workers`` images at a time (so no more decoded images
are in memory than there are CPUs to work on them).

Processes are faster for JPEG (Pillow holds the GIL for part of an encode; see
``benchmarks/RESULTS.md``) and isolate the service from a decoder that crashes: a child
that dies fails that one attempt with ``compression_crashed`` (retried within the
attempt budget) and the pool is rebuilt. The children are forked from a ``forkserver``
that preloads ``imgcompress_core._pool_child`` (Pillow and ``compress``, nothing else:
the core's package imports lazily) and the ``imagecodecs`` codecs when installed (they
and numpy are then shared by the children instead of imported by each). A child exits
as soon as the process that owns the pool is gone, even when that one was killed with
SIGKILL and could not say goodbye.
Like every ``spawn``/``forkserver`` child, each one re-imports the parent's main
module, so a script that embeds imgcompress with processes needs an ``if __name__ ==
"__main__":`` guard (``cpu_pool="auto"`` uses threads when embedded for that reason; the
``imgcompress`` console script is a two-line module). The pool is replaced after
``tasks_per_child`` images per worker (the old one finishes its images in flight, then
its children exit), which returns memory that fragmentation would otherwise keep.

In processes, each image also has a CPU-time limit (``cpu_seconds``, the setting
``max_compress_seconds``): before an image the child sets its ``RLIMIT_CPU`` soft limit
to the CPU time it has used plus ``cpu_seconds``, so the kernel stops a child that
spends longer on one image (a pathological file within every other cap) with SIGXCPU,
and that image fails as ``compression_crashed``. A thread cannot be stopped, so with
threads there is no such limit. When a child dies, the other image in flight in the
same pool fails that attempt too (the pool is broken for every task it holds); it is
retried like any transient failure.

Memory is bounded the same way in both pools. Each image's decoded size is read from
its header before any decoder runs (``compress.decoded_size``: width x height x bytes
per pixel), and images are admitted first come, first served, only while a worker is
free and the decoded sizes of the images in progress add up to at most the budget:
``decode_budget`` (the setting ``decode_budget_bytes``, 64 MiB) or
``CompressOptions.max_decode_bytes``, whichever is smaller. Large images wait for each
other instead of decoding together; a smaller image may go ahead of a waiting large one
if it leaves room for it (so the large one never waits longer than for the images in
progress when it arrived). An image larger than the budget runs alone; one larger than
``max_decode_bytes`` fails at once with ``image_too_large``. Compressing takes more
than the decoded image -- measured peaks: about 2x for JPEG, 4.5x for a transparent
image encoded to WebP, 8x for WebP input (libwebp's decoder keeps two canvases) -- so
the memory the pool uses at its peak is a small multiple of the budget, never a sum over
the images in flight. In processes, a
backstop: while a child compresses an image, its address space (``RLIMIT_AS``) may
grow by at most ``10 x`` that image's decoded size plus four times its file size plus
256 MiB, so an image whose decoding takes far more than its header said fails with
``image_too_large`` (allocations fail and Pillow raises MemoryError) instead of
growing until the kernel's OOM killer picks a process.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Literal, TypeVar

import anyio
import anyio.to_thread

from . import _fast
from ._pool_child import CompressFunction, start_child, within_limits
from ._threads import ThreadLane
from .compress import CompressedImage, CompressOptions, decoded_size, timed_compress
from .errors import ImageFailure

__all__ = ["CompressFunction", "Compressor", "CpuPool"]

log = logging.getLogger("imgcompress.cpu")

CpuPool = Literal["threads", "processes"]

# The address space a child may add while compressing one image (the RLIMIT_AS
# backstop): this many times the image's decoded size, ...
_SPACE_PER_DECODED_BYTE = 10
_SPACE_PER_FILE_BYTE = 4  # ... this many times its file size (copies of the bytes) ...
_SPACE_BASE = 256 << 20  # ... and this much for everything else.


@dataclass(eq=False)
class _Ticket:
    size: int
    budget: int
    granted: anyio.Event = field(default_factory=anyio.Event)
    passed: _Ticket | None = None  # the waiting image this one was let in ahead of


class _MemoryBudget:
    """Admits images to ``slots`` workers by decoded size, while they fit in the budget.

    First come, first served, with one exception that keeps both workers busy: while
    the first waiting image does not fit beside those in progress, a later one may go
    ahead of it if it fits now *and* the images that went ahead, it included, leave
    room for the waiting one. So the waiting image runs as soon as the images that were
    in progress when it started waiting are done, never later.
    """

    def __init__(self, slots: int | None = None) -> None:
        self.slots = slots
        self.in_use = 0
        self.peak = 0
        self._running: list[_Ticket] = []
        self._queue: deque[_Ticket] = deque()

    @asynccontextmanager
    async def hold(self, size: int, budget: int) -> AsyncIterator[None]:
        """Wait until ``size`` more bytes fit in ``budget`` (and a worker is free), hold
        them for the block, then give them back."""
        ticket = _Ticket(size, budget)
        self._queue.append(ticket)
        self._admit()
        if not ticket.granted.is_set():
            try:
                await ticket.granted.wait()
            except BaseException:  # cancelled while waiting (or just as it was admitted)
                if ticket.granted.is_set():
                    self._release(ticket)
                else:
                    self._queue.remove(ticket)
                    self._admit()
                raise
        try:
            yield
        finally:
            self._release(ticket)

    def _fits(self, ticket: _Ticket) -> bool:
        if self.slots is not None and len(self._running) >= self.slots:
            return False
        # Alone, an image always fits (one over max_decode_bytes was refused before).
        return self.in_use == 0 or self.in_use + ticket.size <= ticket.budget

    def _take(self, ticket: _Ticket) -> None:
        self._running.append(ticket)
        self.in_use += ticket.size
        self.peak = max(self.peak, self.in_use)
        ticket.granted.set()

    def _release(self, ticket: _Ticket) -> None:
        self._running.remove(ticket)
        self.in_use -= ticket.size
        self._admit()

    def _admit(self) -> None:
        while self._queue and self._fits(self._queue[0]):
            self._take(self._queue.popleft())
        if not self._queue:
            return
        head = self._queue[0]
        ahead = sum(t.size for t in self._running if t.passed is head)
        for ticket in list(self._queue)[1:]:
            if ahead + ticket.size + head.size <= head.budget and self._fits(ticket):
                self._queue.remove(ticket)
                ticket.passed = head
                ahead += ticket.size
                self._take(ticket)


class _Pool:
    """One process pool, and what we need to end it once and say how its children died."""

    def __init__(self, executor: ProcessPoolExecutor) -> None:
        self.executor = executor
        # The pool's own pid -> process map (private: best effort). shutdown() rebinds the
        # attribute, not the dict, so this keeps the processes for _death_of.
        children = getattr(executor, "_processes", None)  # empty until the first submit
        self.children: dict[int, BaseProcess] = {} if children is None else children
        self.tasks = 0  # images given to this pool
        self.futures: set[Future[tuple[CompressedImage, float]]] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def submit(
        self, fn: functools.partial[tuple[CompressedImage, float]], *args: object
    ) -> Future[tuple[CompressedImage, float]]:
        """Submit a task and track its future until it is done."""
        future = self.executor.submit(fn, *args)
        self.futures.add(future)
        future.add_done_callback(self.futures.discard)
        return future

    def stop(self, *, wait: bool = True, cancel: bool = True) -> None:
        """Shut the pool down exactly once (two concurrent shutdowns of one pool close
        its pipes twice on Python 3.11); later callers wait for the first to finish.

        ``cancel``: drop images not yet started (they are resubmitted elsewhere), and
        afterwards cancel any future still pending: one a broken pool lost never ends.
        Without it (retiring a healthy pool) everything given to the pool finishes.
        """
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self.executor.shutdown(wait=wait, cancel_futures=cancel)
        if wait and cancel:
            for future in list(self.futures):
                future.cancel()


_R = TypeVar("_R")


class _NeverStarted(Exception):
    """The pool was stopped before the image started (its future was cancelled)."""


def _result(future: Future[_R]) -> _R:
    """Wait for a pool future; a cancelled one raises _NeverStarted, not CancelledError
    (which asyncio would take for the waiting task's own cancellation)."""
    try:
        return future.result()
    except CancelledError as exc:
        raise _NeverStarted from exc


class Compressor:
    """Runs ``compress_image`` in a thread or process pool, ``workers`` images at a time,
    within the memory budget: ``decode_budget`` (if given) or ``options.max_decode_bytes``,
    whichever is smaller."""

    def __init__(
        self,
        pool: CpuPool = "threads",
        workers: int = 2,
        tasks_per_child: int = 200,
        function: CompressFunction = timed_compress,  # module-level, so processes can pickle it
        *,
        cpu_seconds: int = 60,
        decode_budget: int | None = None,
    ) -> None:
        self.pool = pool
        self.function = function
        self.cpu_seconds = cpu_seconds
        self.workers = workers
        self.tasks_per_child = tasks_per_child
        self.decode_budget = decode_budget
        # With processes, one image more than there are workers is handed to the pool: it
        # waits in the pool's queue, already sent, and a worker that finishes an image
        # starts on it at once instead of idling while its result travels back to the
        # event loop and the next image is sent (about a sixth of the workers' time on
        # the corpus's JPEGs, benchmarks/RESULTS.md, section 9). It is not decoded before
        # a worker takes it, and the budget counts it all the same. Threads start what
        # they are given, so there the slots are the workers.
        slots = workers + 1 if pool == "processes" else workers
        # Threads that wait for a worker process, and that read images' headers.
        self._waiters = ThreadLane(slots, "imgcompress-wait")
        self._headers = ThreadLane(workers, "imgcompress-header")
        self._budget = _MemoryBudget(slots)
        self._current: _Pool | None = None
        self._closed = False

    @property
    def decoding_bytes(self) -> int:
        """The decoded bytes of the images admitted now (being compressed, or sent to the
        pool's queue to wait for the next free worker process)."""
        return self._budget.in_use

    @property
    def peak_decoding_bytes(self) -> int:
        """The most decoded bytes admitted at once so far."""
        return self._budget.peak

    async def compress(
        self, data: bytes, options: CompressOptions
    ) -> tuple[CompressedImage, float]:
        """Compress off the event loop; return the result and the seconds it took there.

        Raises CompressionError for bad images (``image_too_large`` at once for one
        whose decoded size alone is over ``options.max_decode_bytes``) and
        ImageFailure(``compression_crashed``) when a worker process died on this image.
        """
        size = await self._headers.run(functools.partial(decoded_size, data, options))
        budget = options.max_decode_bytes
        if self.decode_budget is not None:
            budget = min(budget, self.decode_budget)
        async with self._budget.hold(size, budget):
            if self.pool == "threads":
                return await anyio.to_thread.run_sync(self.function, data, options)
            space = _SPACE_PER_DECODED_BYTE * size + _SPACE_PER_FILE_BYTE * len(data) + _SPACE_BASE
            limited = functools.partial(within_limits, self.function, self.cpu_seconds, space)
            for _ in range(3):
                pool = await self._pool()
                try:
                    future = pool.submit(limited, data, options)
                except BrokenProcessPool:  # it broke before this image got in: not its fault
                    await self._stop(pool)
                    continue
                try:
                    return await self._waiters.run(functools.partial(_result, future))
                except _NeverStarted:
                    continue  # its pool broke or closed before it started: try a fresh one
                except BrokenProcessPool as exc:
                    await self._stop(pool)
                    death = _death_of(list(pool.children.values()))
                    log.warning("compression pool broken (%s); starting a new one", death)
                    raise ImageFailure(
                        f"the compression process stopped while working on this image "
                        f"({death}): the image crashed its decoder, took too much memory or "
                        f"more than {self.cpu_seconds} s of CPU time (max_compress_seconds), "
                        "or another image in the same pool did",
                        code="compression_crashed",
                        retryable=True,
                    ) from exc
            raise ImageFailure(
                "the compression pool kept stopping before this image could start",
                code="compression_crashed",
                retryable=True,
            )

    async def start(self) -> None:
        """Start the worker processes now, before any image (processes only): the first
        image would otherwise wait about 0.3 s for the forkserver to import the codecs,
        with the event loop blocked in the pool's submit for that time. A pool that fails
        to start is logged and left to the first image, which starts a fresh one."""
        if self.pool != "processes" or self._closed or self._current is not None:
            return
        self._current = pool = self._new_pool()
        try:
            await anyio.to_thread.run_sync(_started, pool, self.workers)
        except Exception as exc:  # the first image will say what is wrong, if anything
            log.warning("the compression processes did not start ahead of work: %r", exc)
            await self._stop(pool)

    def close(self) -> None:
        """Stop taking images and stop the worker processes (without waiting for images
        in progress, which finish on their own)."""
        self._closed = True
        if self._current is not None:
            self._current.stop(wait=False)
            self._current = None

    async def _stop(self, pool: _Pool) -> None:
        """Retire a broken pool: the next image gets a fresh one. Waits (in a thread) for
        the pool to reap its children, so their exit codes are the real ones."""
        if self._current is pool:
            self._current = None
        await anyio.to_thread.run_sync(pool.stop)

    async def _pool(self) -> _Pool:
        """The pool for the next image: a fresh one after ``tasks_per_child`` images per
        worker, once the old one has finished what it holds and its children have exited
        (else an old child that is done waits, with its memory, for its sibling to finish
        beside the new pool's two: four children at once; the wait costs at most part of
        one image's time on one worker, once per ``tasks_per_child`` images).

        Recycling is ours, not ``max_tasks_per_child``'s: on Python 3.11 that option can
        hang the pool or break it when a worker retires (CPython gh-115634, gh-119592).
        """
        if self._closed:
            raise ImageFailure(
                "the compressor is closed (the worker is stopping)",
                code="compression_crashed",
                retryable=True,
            )
        current = self._current
        if current is not None and current.tasks >= self.tasks_per_child * self.workers:
            await anyio.to_thread.run_sync(wait, current.futures.copy())
            if self._current is current:  # the first image to get here retires it
                self._current = None
                await anyio.to_thread.run_sync(functools.partial(current.stop, cancel=False))
            return await self._pool()
        if current is None:
            self._current = current = self._new_pool()
        current.tasks += 1
        return current

    def _new_pool(self) -> _Pool:
        """A process pool whose children come from a forkserver that preloaded the codecs
        (no process starts until the first submit)."""
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["imgcompress_core._pool_child", *_fast.PRELOAD])
        executor = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=start_child, initargs=(os.getpid(),)
        )
        return _Pool(executor)


def _started(pool: _Pool, workers: int) -> None:
    """Start ``workers`` processes in ``pool`` and wait until they have answered: tasks
    submitted together each start a process, unless one is done (its process idle) before
    the next is submitted; then the round is repeated, a few times at most."""
    for _ in range(3):
        for future in [pool.executor.submit(os.getpid) for _ in range(workers)]:
            future.result()
        if len(pool.children) >= workers:
            return


def _death_of(children: list[BaseProcess]) -> str:
    """Say how a broken pool's child ended (its signal or exit code), for logs and reasons.

    ``children`` is the pool's processes (a private attribute: best effort only), read
    after the pool has shut down. The SIGTERM the pool sends the survivors is left out.
    """
    endings = []
    for process in children:
        code = process.exitcode
        if code is None or code == 0 or code == -signal.SIGTERM:
            continue
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            endings.append(f"killed by {name}")
        else:
            endings.append(f"exited with code {code}")
    return ", ".join(endings) or "a worker process ended unexpectedly"
