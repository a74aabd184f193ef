"""What runs inside a compression worker process (kept small: no anyio, no httpx).

The forkserver preloads this module, so every child starts with Pillow and
``imgcompress_core.compress`` imported and nothing else from the service.
"""

from __future__ import annotations

import ctypes
import os
import resource
import select
import threading
import time
from collections.abc import Callable

from .compress import CompressedImage, CompressOptions

__all__ = ["address_space_in_use", "start_child", "within_limits"]

CompressFunction = Callable[[bytes, CompressOptions], tuple[CompressedImage, float]]


def within_limits(
    function: CompressFunction,
    cpu_seconds: int,
    address_space: int | None,
    data: bytes,
    options: CompressOptions,
) -> tuple[CompressedImage, float]:
    """Run ``function`` allowing this process ``cpu_seconds`` more CPU time and, while it
    runs, ``address_space`` more bytes of address space (None: no such limit).

    Past the address-space limit allocations fail: Pillow and its codecs raise
    MemoryError (the image fails as ``image_too_large``) instead of the kernel's OOM
    killer choosing a victim. The limit is lifted again afterwards, so returning the
    result never fails for want of memory.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _set_soft_limit(resource.RLIMIT_CPU, used + cpu_seconds)
    in_use = address_space_in_use() if address_space is not None else None
    if address_space is None or in_use is None:
        return function(data, options)
    previous = resource.getrlimit(resource.RLIMIT_AS)
    _set_soft_limit(resource.RLIMIT_AS, in_use + address_space)
    try:
        return function(data, options)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)


def _set_soft_limit(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def address_space_in_use() -> int | None:
    """Return this process's address-space size in bytes (Linux), or None if unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * resource.getpagesize()


# glibc's mallopt parameters, and the sizes that keep an image's buffers in the heap.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_MAPPED = 64 << 20  # allocate blocks up to 64 MiB from the heap, not fresh mmaps
_KEEP_FREE = 128 << 20  # give free heap memory back to the kernel only above 128 MiB


def start_child(owner: int) -> None:
    """Set up a new worker process: no core dumps, keep freed image memory, exit with
    the owner."""
    # A child killed for its CPU time (SIGXCPU) or a decoder crash would otherwise dump
    # its whole heap wherever the host's core_pattern says.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    keep_image_memory()
    exit_with_owner(owner)


def keep_image_memory() -> bool:
    """Make glibc reuse freed image buffers instead of returning them to the kernel.

    By default glibc serves allocations above a threshold (at most 32 MiB) with fresh
    mmaps and unmaps them when freed, so every image's decode and encode buffers are
    page-faulted in and zeroed again by the kernel: about a fifth of a JPEG's CPU time
    on a fresh worker process (see benchmarks/RESULTS.md). A worker's peak memory is set
    by its largest image either way; between images it now holds that much instead of
    dropping back. Returns False (and changes nothing) where libc has no mallopt.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = mallopt(_M_MMAP_THRESHOLD, _KEEP_MAPPED)
    trimmed = mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE)
    return bool(mapped and trimmed)


def exit_with_owner(owner: int) -> None:
    """Exit this process as soon as ``owner`` (the process that made the pool) is gone.

    A pool worker otherwise outlives an owner killed with SIGKILL: it waits forever on a
    queue it holds both ends of, and keeps the forkserver alive with it. The watch is a
    pidfd where the kernel has them (no polling, immune to pid reuse), else a 1 s poll.
    """
    try:
        pidfd: int | None = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):
        pidfd = None

    def watch() -> None:
        if pidfd is not None:
            select.select([pidfd], [], [])
        else:
            while _alive(owner):
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="imgcompress-owner-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    return True
