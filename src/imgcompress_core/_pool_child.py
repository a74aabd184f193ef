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

__all__ = ["exit_with_owner", "within_cpu_limit"]

CompressFunction = Callable[[bytes, CompressOptions], tuple[CompressedImage, float]]


def within_cpu_limit(
    function: CompressFunction, cpu_seconds: int, data: bytes, options: CompressOptions
) -> tuple[CompressedImage, float]:
    """Allow this process ``cpu_seconds`` more CPU time, then run ``function``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + cpu_seconds
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    return function(data, options)


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
        return True
    return True
