"""How glibc's allocator is tuned in the processes the ``imgcompress`` command runs.

Two kinds of process, two opposite needs (measured in ``benchmarks/RESULTS.md``):

- A **compression worker process** allocates tens of MB per image and frees them again.
  Left alone, glibc serves those with fresh ``mmap``s, so the kernel faults in and zeroes
  every image's memory anew (a fifth of a JPEG's CPU time); :func:`keep_image_memory`
  keeps freed image memory for the next image instead, up to a ceiling, above which the
  heap is given back so an idle worker does not hold its largest image for ever; after a
  large image the worker also calls :func:`release_image_memory` (``malloc_trim``), since
  the ceiling alone shrinks the heap only from its top.
- The **service process** (``serve``, ``worker``) runs many threads that each allocate
  download buffers, pickled images and status documents of a few MB. Left alone, glibc
  gives each thread its own arena (up to 8 per CPU) and raises its mmap threshold after
  every large free, so those buffers end up spread over arenas that rarely shrink.
  :func:`lean_service_heap` keeps two arenas and fixed thresholds: buffers up to 512 KiB
  (a download's 256 KiB reads and the HTTP parser's copies of them, all short-lived) are
  reused from the heap, whose top is given back beyond 1 MiB free; larger ones (the
  bodies, held while they wait for compression) are mapped on their own and go back to
  the kernel when freed. (Mapping every buffer from 256 KiB up on its own, as before,
  cost each 700 KB download about 2 ms of page faults.)

Both change process-wide settings: the library never calls them on its own behalf in a
host application's process (only in the worker processes it starts and in the command).
They do nothing, and return False, where libc has no ``mallopt`` (not glibc).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

__all__ = [
    "LARGE_IMAGE_BYTES",
    "keep_image_memory",
    "lean_service_heap",
    "mallopt",
    "release_image_memory",
]

MIB = 1 << 20

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# Compression workers: blocks up to 64 MiB come from the heap, not fresh mmaps (Pillow
# keeps a decoded image in blocks of 16 MiB, libjpeg's coefficient buffers are one block
# per colour component); once more than 64 MiB at the top of the heap is free, it shrinks to
# 32 MiB of free room: enough for the images most catalogues hold (about 4 megapixels
# or less) to reuse, while a worker that just compressed a 12-megapixel photo does not
# keep its 80 MB.
WORKER_MMAP_THRESHOLD = 64 * MIB
WORKER_TRIM_THRESHOLD = 64 * MIB
WORKER_TOP_PAD = 32 * MIB

# An image whose pixels take this much (4 bytes a pixel) is large: after it, a worker gives
# its freed memory back explicitly. The trim threshold alone shrinks the heap only from
# its top, which one small block left above the image's blocks prevents.
LARGE_IMAGE_BYTES = 32 * MIB

# The service: two arenas; buffers up to 512 KiB (a download's reads and the parser's
# copies of them) come from the heap and are reused; larger ones (bodies, pickled images)
# are mapped on their own; once more than 1 MiB at the top of a heap is free, it is given
# back.
SERVICE_ARENAS = 2
SERVICE_MMAP_THRESHOLD = 512 * 1024
SERVICE_TRIM_THRESHOLD = 1 * MIB


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    try:
        function = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return None
    function.argtypes, function.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return function


def mallopt(*settings: tuple[int, int]) -> bool:
    """Apply glibc ``mallopt`` (parameter, value) pairs; True if libc took them all."""
    function = _mallopt()
    if function is None:
        return False
    return all([bool(function(param, value)) for param, value in settings])


def keep_image_memory() -> bool:
    """In a compression worker process: reuse freed image memory, within a ceiling."""
    return mallopt(
        (M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD),
        (M_TOP_PAD, WORKER_TOP_PAD),
    )


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
    return function


def release_image_memory() -> bool:
    """In a compression worker, after a large image: return the heap's free memory to the
    kernel, keeping ``WORKER_TOP_PAD`` at its top; True if libc could."""
    function = _malloc_trim()
    if function is None:
        return False
    function(WORKER_TOP_PAD)
    return True


def lean_service_heap() -> bool:
    """In the service process, before it starts threads: few arenas, large buffers mapped
    on their own (returned to the kernel when freed)."""
    return mallopt(
        (M_ARENA_MAX, SERVICE_ARENAS),
        (M_MMAP_THRESHOLD, SERVICE_MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, SERVICE_TRIM_THRESHOLD),
    )
