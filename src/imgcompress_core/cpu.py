"""Where images are compressed: a pool of threads or of worker processes.

The event loop never compresses: ``Compressor.compress`` hands the bytes to the pool and
waits without blocking, at most ``workers`` images at a time (so no more decoded images
are in memory than there are CPUs to work on them).

Processes are faster for JPEG (Pillow holds the GIL for part of an encode; see
``benchmarks/RESULTS.md``) and isolate the service from a decoder that crashes: a child
that dies fails that one attempt with ``compression_crashed`` (retried within the
attempt budget) and the pool is rebuilt. The children are forked from a ``forkserver``
that preloads ``imgcompress_core.compress`` (Pillow, nothing else: the core's package
imports lazily). Like every ``spawn``/``forkserver`` child, each one re-imports the
parent's main module, so a script that embeds imgcompress with processes needs an
``if __name__ == "__main__":`` guard (``cpu_pool="auto"`` uses threads when embedded
for that reason; the ``imgcompress`` console script is a two-line module). Each child
is replaced after ``tasks_per_child`` images, which returns memory that fragmentation
would otherwise keep.

In processes, each image also has a CPU-time limit (``cpu_seconds``, the setting
``max_compress_seconds``): before an image the child sets its ``RLIMIT_CPU`` soft limit
to the CPU time it has used plus ``cpu_seconds``, so the kernel stops a child that
spends longer on one image (a pathological file within every other cap) with SIGXCPU,
and that image fails as ``compression_crashed``. A thread cannot be stopped, so with
threads there is no such limit. When a child dies, the other image in flight in the
same pool fails that attempt too (the pool is broken for every task it holds); it is
retried like any transient failure.
"""

from __future__ import annotations

import functools
import multiprocessing
import resource
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Literal

import anyio
import anyio.to_thread

from .compress import CompressedImage, CompressOptions, timed_compress
from .errors import ImageFailure

__all__ = ["CompressFunction", "Compressor", "CpuPool"]

CpuPool = Literal["threads", "processes"]
CompressFunction = Callable[[bytes, CompressOptions], tuple[CompressedImage, float]]


class Compressor:
    """Runs ``compress_image`` in a thread or process pool, ``workers`` images at a time."""

    def __init__(
        self,
        pool: CpuPool = "threads",
        workers: int = 2,
        tasks_per_child: int = 200,
        function: CompressFunction = timed_compress,  # module-level, so processes can pickle it
        *,
        cpu_seconds: int = 60,
    ) -> None:
        self.pool = pool
        self.function = function
        self.cpu_seconds = cpu_seconds
        self.workers = workers
        self.tasks_per_child = tasks_per_child
        self._limiter = anyio.CapacityLimiter(workers)
        self._processes: ProcessPoolExecutor | None = None

    async def compress(
        self, data: bytes, options: CompressOptions
    ) -> tuple[CompressedImage, float]:
        """Compress off the event loop; return the result and the seconds it took there.

        Raises CompressionError for bad images and ImageFailure(``compression_crashed``)
        when a worker process died on this image.
        """
        async with self._limiter:
            if self.pool == "threads":
                return await anyio.to_thread.run_sync(self.function, data, options)
            executor = self._executor()
            try:
                limited = functools.partial(_within_cpu_limit, self.function, self.cpu_seconds)
                future: Future[tuple[CompressedImage, float]] = executor.submit(
                    limited, data, options
                )
                return await anyio.to_thread.run_sync(future.result)
            except BrokenProcessPool as exc:
                self._discard(executor)
                raise ImageFailure(
                    "the compression process stopped while working on this image: it "
                    "crashed, ran out of memory or used more than its "
                    f"{self.cpu_seconds} s of CPU time (max_compress_seconds)",
                    code="compression_crashed",
                    retryable=True,
                ) from exc

    def close(self) -> None:
        """Stop the worker processes (images in progress are abandoned)."""
        if self._processes is not None:
            self._discard(self._processes)

    def _executor(self) -> ProcessPoolExecutor:
        if self._processes is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["imgcompress_core.compress"])
            self._processes = ProcessPoolExecutor(
                self.workers, mp_context=context, max_tasks_per_child=self.tasks_per_child
            )
        return self._processes

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        if self._processes is executor:
            self._processes = None
        executor.shutdown(wait=False, cancel_futures=True)


def _within_cpu_limit(
    function: CompressFunction, cpu_seconds: int, data: bytes, options: CompressOptions
) -> tuple[CompressedImage, float]:
    """In a worker process: allow ``cpu_seconds`` more CPU time, then run ``function``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + cpu_seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    return function(data, options)
