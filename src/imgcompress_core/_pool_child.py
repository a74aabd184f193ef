"""What runs inside a compression worker process (kept small: no anyio, no httpx).

The forkserver preloads this module, so every child starts with Pillow and
``imgcompress_core.compress`` imported and nothing else from the service.
"""

from __future__ import annotations

import os
import resource
import select
import threading
import time
from collections.abc import Callable

from .compress import CompressedImage, CompressOptions
from .heap import LARGE_IMAGE_BYTES, keep_image_memory, release_image_memory

__all__ = ["address_space_in_use", "keep_image_memory", "start_child", "within_limits"]

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
        return _released_after(function(data, options))
    previous = resource.getrlimit(resource.RLIMIT_AS)
    _set_soft_limit(resource.RLIMIT_AS, in_use + address_space)
    try:
        return _released_after(function(data, options))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)


def _released_after(result: tuple[CompressedImage, float]) -> tuple[CompressedImage, float]:
    """Give a large image's freed memory back to the kernel before the next image."""
    image = result[0]
    if image.width * image.height * 4 >= LARGE_IMAGE_BYTES:
        release_image_memory()
    return result


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


def start_child(owner: int) -> None:
    """Set up a new worker process: no core dumps, keep freed image memory (within a
    ceiling, see :mod:`.heap`), exit with the owner."""
    # A child killed for its CPU time (SIGXCPU) or a decoder crash would otherwise dump
    # its whole heap wherever the host's core_pattern says.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    keep_image_memory()
    exit_with_owner(owner)


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
