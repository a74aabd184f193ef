"""The compression pool: real worker processes (and threads) behind one interface."""

from __future__ import annotations

import dataclasses
import io
import itertools
import mmap
import os
import platform
import subprocess
import sys
import threading
import time

import anyio
import pytest
from PIL import Image

from imgcompress_core import CompressionError, CompressOptions, ImageFailure
from imgcompress_core.compress import (
    CompressedImage,
    compress_image,
    decoded_size,
    timed_compress,
)
from imgcompress_core.cpu import Compressor
from servers import corpus_images

pytestmark = pytest.mark.anyio

OPTIONS = CompressOptions(quality=50)


def crash_on_marker(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Die like a decoder that segfaults when given b"crash"; compress anything else."""
    if data == b"crash":
        os._exit(70)
    return timed_compress(data, options)


def spin_on_marker(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Burn CPU forever when given b"spin" (a pathological image); compress anything else."""
    while data == b"spin":
        pass
    return timed_compress(data, options)


def worker_pid(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Report which process ran the function (in the note)."""
    image = compress_image(data, options)
    return dataclasses.replace(image, note=str(os.getpid())), 0.0


def preloaded(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Report whether libspng's binding was loaded before this child decoded anything."""
    loaded = "imagecodecs._spng" in sys.modules
    image = compress_image(data, options)
    return dataclasses.replace(image, note=str(loaded)), 0.0


@pytest.mark.parametrize("pool", ["processes", "threads"])
async def test_pool_gives_the_same_bytes_as_a_direct_call(pool: str) -> None:
    """Where it runs does not change the result: the bytes equal compress_image's."""
    [photo] = corpus_images(1)
    compressor = Compressor(pool, workers=2)  # type: ignore[arg-type]
    try:
        image, seconds = await compressor.compress(photo, OPTIONS)
    finally:
        compressor.close()
    assert image.data == compress_image(photo, OPTIONS).data
    assert image.content_type == "image/jpeg" and seconds > 0


async def test_processes_run_outside_this_process() -> None:
    """With processes, the work happens in another process, not on the event loop's."""
    [photo] = corpus_images(1)
    compressor = Compressor("processes", workers=1, function=worker_pid)
    try:
        image, _ = await compressor.compress(photo, OPTIONS)
    finally:
        compressor.close()
    assert image.note is not None and int(image.note) != os.getpid()


async def test_children_start_with_libspng_loaded_by_the_forkserver() -> None:
    """The children share the forkserver's libspng and numpy instead of each importing
    its own on its first PNG."""
    [photo] = corpus_images(1)
    compressor = Compressor("processes", workers=1, function=preloaded)
    try:
        image, _ = await compressor.compress(photo, OPTIONS)
    finally:
        compressor.close()
    assert image.note == "True"


async def test_start_runs_every_worker_process_before_any_image() -> None:
    """``start`` brings up all the children ahead of work (the service calls it when its
    worker starts); the images then run in those same processes."""
    [photo] = corpus_images(1)
    compressor = Compressor("processes", workers=2, function=worker_pid)
    try:
        await compressor.start()
        pool = compressor._current
        assert pool is not None and pool.tasks == 0  # the start is not counted as images
        started = {pid for pid, child in pool.children.items() if child.is_alive()}
        assert len(started) == 2 and os.getpid() not in started
        results = [await compressor.compress(photo, OPTIONS) for _ in range(4)]
        assert {int(image.note or 0) for image, _ in results} <= started
        assert compressor._current is pool
    finally:
        compressor.close()


async def test_start_does_nothing_for_threads() -> None:
    compressor = Compressor("threads", workers=2)
    await compressor.start()
    assert compressor._current is None
    compressor.close()


async def test_bad_image_error_keeps_its_code_across_processes() -> None:
    """A CompressionError raised in a child arrives as itself, with its stable code."""
    compressor = Compressor("processes", workers=1)
    try:
        with pytest.raises(CompressionError) as caught:
            await compressor.compress(b"<html>not an image</html>", OPTIONS)
    finally:
        compressor.close()
    assert caught.value.code == "not_an_image"


async def test_a_crashed_child_fails_that_image_and_the_pool_recovers() -> None:
    """A child that dies fails its image as compression_crashed (retryable); the next
    image gets a fresh pool."""
    [photo] = corpus_images(1)
    compressor = Compressor("processes", workers=1, function=crash_on_marker)
    try:
        with pytest.raises(ImageFailure) as caught:
            await compressor.compress(b"crash", OPTIONS)
        image, _ = await compressor.compress(photo, OPTIONS)
    finally:
        compressor.close()
    assert caught.value.code == "compression_crashed" and caught.value.retryable
    assert "exited with code 70" in caught.value.message  # how it died, for the operator
    assert image.data == compress_image(photo, OPTIONS).data


async def test_an_image_over_its_cpu_time_is_stopped() -> None:
    """A child that spends more than cpu_seconds of CPU on one image is stopped by the
    kernel (RLIMIT_CPU); the image fails as compression_crashed and the pool goes on."""
    [photo] = corpus_images(1)
    compressor = Compressor("processes", workers=1, function=spin_on_marker, cpu_seconds=1)
    try:
        with anyio.fail_after(30), pytest.raises(ImageFailure) as caught:
            await compressor.compress(b"spin", OPTIONS)
        image, _ = await compressor.compress(photo, OPTIONS)
    finally:
        compressor.close()
    assert caught.value.code == "compression_crashed"
    assert "max_compress_seconds" in caught.value.message
    assert "killed by SIGXCPU" in caught.value.message
    assert image.data == compress_image(photo, OPTIONS).data


def test_worker_processes_keep_image_memory_on_glibc() -> None:
    """The child set-up tunes glibc's allocator (where there is one) and reports it."""
    code = "from imgcompress_core._pool_child import keep_image_memory as k; print(k())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(platform.libc_ver()[0] == "glibc")


HEAP_PROBE = """
from PIL import Image
from imgcompress_core.heap import keep_image_memory, release_image_memory
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
keep_image_memory()
before = rss()
image = Image.new("RGB", (2000, 1500), (1, 2, 3))  # 12 MB, written
del image
small = rss()
image = Image.new("RGB", (6000, 4000), (1, 2, 3))  # 96 MB
large = rss()
del image
release_image_memory()  # what a worker does after a large image
print(before, small, large, rss())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_worker_process_keeps_a_small_image_memory_but_not_a_large_one() -> None:
    """Freed image memory stays for the next image (no page faults), but only up to a
    ceiling: after a 96 MB image the heap shrinks back (the worker does not hold it,
    whatever small blocks sit above the image's in the heap)."""
    result = subprocess.run([sys.executable, "-c", HEAP_PROBE], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    before, small, large, after = (int(mb) for mb in result.stdout.split())
    assert small >= before + 10  # kept for reuse
    assert large >= before + 90
    assert after <= before + 40, (before, small, large, after)  # at most 32 MiB kept


def test_the_service_heap_is_tuned_on_glibc() -> None:
    code = "from imgcompress_core.heap import lean_service_heap as h; print(h())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(platform.libc_ver()[0] == "glibc")


SERVICE_HEAP_PROBE = """
import resource
from imgcompress_core.heap import lean_service_heap
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
lean_service_heap()
chunk = b"x" * 262_200
del chunk
start = faults()
for i in range(200):  # a download's 256 KiB read, 200 times: the same memory each time
    chunk = b"x" * 262_200
    del chunk
reuse_faults = faults() - start
before = rss()
for i in range(2):  # a large buffer twice: mapped on its own both times, not kept
    large = b"x" * (20 << 20)
    del large
print(reuse_faults, before, rss())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_the_service_heap_reuses_download_buffers_and_returns_large_ones() -> None:
    """A download's 256 KiB chunk freed and allocated again reuses the heap's memory
    (mapping each on its own cost a 700 KB download about 2 ms of page faults); 20 MB
    buffers go back to the kernel when freed, even after one was (glibc would otherwise
    keep the second)."""
    result = subprocess.run(
        [sys.executable, "-c", SERVICE_HEAP_PROBE], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    reuse_faults, before, after = (int(n) for n in result.stdout.split())
    assert reuse_faults < 1_000, reuse_faults  # 200 fresh mappings would be about 13,000
    assert after <= before + 5, (before, after)


async def compress_together(
    compressor: Compressor, data: bytes, count: int
) -> list[CompressedImage]:
    """Compress ``count`` copies of ``data`` at once (60 s at most), then close the pool."""
    results: list[CompressedImage] = []

    async def one() -> None:
        image, _ = await compressor.compress(data, OPTIONS)
        results.append(image)

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for _ in range(count):
                    group.start_soon(one)
    finally:
        compressor.close()
    return results


def timed_span(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Take 0.3 s; report when it ran (in the note: start, end)."""
    started = time.time()
    time.sleep(0.3)
    image = compress_image(data, options)
    return dataclasses.replace(image, note=f"{started},{time.time()}"), 0.0


async def test_a_new_pool_starts_only_once_the_old_one_is_done() -> None:
    """Recycling never runs more images at once than there are workers: the next pool
    waits for the old one's images (else an old child would wait beside the new ones)."""
    compressor = Compressor("processes", workers=1, tasks_per_child=1, function=timed_span)
    results = await compress_together(compressor, png(64, 48), 4)
    spans = sorted(tuple(float(t) for t in (image.note or "").split(",")) for image in results)
    assert len(spans) == 4
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))


async def test_the_pool_is_recycled_without_losing_an_image() -> None:
    """After tasks_per_child images per worker a fresh pool takes over; images in flight
    in the old one finish, and every image comes back right (no hang, no broken pool:
    Python 3.11's own max_tasks_per_child can do both)."""
    [photo] = corpus_images(1)
    expected = compress_image(photo, OPTIONS).data
    compressor = Compressor("processes", workers=2, tasks_per_child=2, function=worker_pid)
    results = await compress_together(compressor, photo, 16)
    assert len(results) == 16 and all(image.data == expected for image in results)
    pids = {image.note for image in results}
    assert len(pids) >= 16 // (2 * 2)  # at least one pool of 2 workers per 4 images


async def test_two_crashes_in_one_pool_both_fail_cleanly() -> None:
    """Both images of a pool whose children die get compression_crashed, never a raw error
    from two threads shutting the same pool down (a race that once gave OSError)."""
    compressor = Compressor("processes", workers=2, function=crash_on_marker)
    outcomes: list[str] = []

    async def crash() -> None:
        try:
            await compressor.compress(b"crash", OPTIONS)
        except ImageFailure as exc:
            outcomes.append(exc.code)
        except Exception as exc:  # the bug this test is about
            outcomes.append(repr(exc))

    try:
        with anyio.fail_after(120):
            for _ in range(25):
                async with anyio.create_task_group() as group:
                    group.start_soon(crash)
                    group.start_soon(crash)
    finally:
        compressor.close()
    assert outcomes == ["compression_crashed"] * 50


# Decoding memory: images are admitted by decoded size within max_decode_bytes

MIB = 1 << 20


class Overlap:
    """Records how many images the hook below is working on at once (threads only)."""

    lock = threading.Lock()
    now = 0
    most = 0
    calls = 0
    barrier: threading.Barrier | None = None

    @classmethod
    def reset(cls, barrier: threading.Barrier | None = None) -> None:
        cls.now = cls.most = cls.calls = 0
        cls.barrier = barrier


def overlapping(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Compress, counting the images in progress; meet the others at the barrier if set."""
    with Overlap.lock:
        Overlap.now += 1
        Overlap.calls += 1
        Overlap.most = max(Overlap.most, Overlap.now)
    try:
        if Overlap.barrier is not None:
            Overlap.barrier.wait(timeout=10)
        else:
            time.sleep(0.2)  # room for a second image to start, if it were let in
        return timed_compress(data, options)
    finally:
        with Overlap.lock:
            Overlap.now -= 1


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


async def compress_all(
    compressor: Compressor, images: list[bytes], options: CompressOptions
) -> None:
    async with anyio.create_task_group() as group:
        for data in images:
            group.start_soon(compressor.compress, data, options)


async def test_images_over_the_budget_together_are_never_decoded_at_once() -> None:
    """Two images of 60 % of the budget each: with two workers free, the second still
    waits until the first is done (issue 12: decoding had no memory limit)."""
    image = png(1000, 1000)  # 4 MB decoded
    options = CompressOptions(max_decode_bytes=decoded_size(image) * 10 // 6)
    Overlap.reset()
    compressor = Compressor("threads", workers=2, function=overlapping)
    with anyio.fail_after(30):
        await compress_all(compressor, [image, image], options)
    assert Overlap.calls == 2
    assert Overlap.most == 1
    assert compressor.peak_decoding_bytes == decoded_size(image) <= options.max_decode_bytes
    assert compressor.decoding_bytes == 0


async def test_images_within_the_budget_together_are_decoded_at_once() -> None:
    """The counterpart: two images that fit together run together (they meet at a
    barrier, which only works if both are in progress at the same time)."""
    image = png(1000, 1000)
    options = CompressOptions(max_decode_bytes=decoded_size(image) * 2)
    Overlap.reset(threading.Barrier(2))
    compressor = Compressor("threads", workers=2, function=overlapping)
    with anyio.fail_after(30):
        await compress_all(compressor, [image, image], options)
    assert Overlap.most == 2
    assert compressor.peak_decoding_bytes == 2 * decoded_size(image)


def slow_compress(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Compress after half a second, so that others pile up meanwhile."""
    time.sleep(0.5)
    return timed_compress(data, options)


@pytest.mark.parametrize(("pool", "sent"), [("processes", 2), ("threads", 1)])
async def test_a_process_pool_is_sent_the_next_image_before_a_worker_is_free(
    pool: str, sent: int
) -> None:
    """With processes, one image more than the workers waits in the pool's own queue, so
    a worker that finishes starts on it at once; threads are given only what they run."""
    image = png(300, 200)
    compressor = Compressor(pool, workers=1, function=slow_compress)  # type: ignore[arg-type]
    try:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(compressor.compress, image, OPTIONS)
            await anyio.sleep(0.3)  # the first is still in progress
            assert compressor.decoding_bytes == sent * decoded_size(image)
    finally:
        compressor.close()


async def test_the_decode_budget_holds_below_max_decode_bytes() -> None:
    """``decode_budget`` (the setting decode_budget_bytes) bounds images in progress
    together; an image over it alone still runs (only max_decode_bytes refuses one)."""
    image = png(1000, 1000)  # 4 MB decoded
    Overlap.reset()
    compressor = Compressor(
        "threads", workers=2, function=overlapping, decode_budget=decoded_size(image) // 2
    )
    with anyio.fail_after(30):
        await compress_all(compressor, [image, image], OPTIONS)
    assert Overlap.calls == 2 and Overlap.most == 1
    assert compressor.peak_decoding_bytes == decoded_size(image)


async def test_an_image_over_the_budget_alone_fails_before_the_pool() -> None:
    options = CompressOptions(max_decode_bytes=MIB)
    Overlap.reset()
    compressor = Compressor("threads", workers=2, function=overlapping)
    with pytest.raises(CompressionError) as caught:
        await compressor.compress(png(1000, 1000), options)
    assert caught.value.code == "image_too_large"
    assert "max_decode_bytes" in caught.value.message
    assert Overlap.calls == 0


async def test_a_waiting_image_that_is_cancelled_gives_up_its_place() -> None:
    """An image cancelled while it waits for memory does not hold the queue: the images
    behind it are admitted as soon as they fit."""
    big, small = png(1000, 1000), png(200, 200)
    options = CompressOptions(max_decode_bytes=decoded_size(big) * 3 // 2)
    Overlap.reset()
    compressor = Compressor("threads", workers=2, function=overlapping)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            group.start_soon(compressor.compress, big, options)
            await anyio.sleep(0.05)
            with anyio.move_on_after(0.05):  # waits behind the first, then gives up
                await compressor.compress(big, options)
            await compressor.compress(small, options)  # fits beside the first
    assert Overlap.calls == 2 and Overlap.most == 2
    assert compressor.decoding_bytes == 0


def transparent_49_megapixels() -> bytes:
    """A 7000x7000 RGBA PNG, almost all transparent: about 200 KB, 196 MB decoded."""
    image = Image.new("RGBA", (7000, 7000), (0, 0, 0, 0))
    for step in range(20):
        at = step * 350
        image.paste((200, 30, 30, 255), (at, at, at + 300, at + 300))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=9)
    return out.getvalue()


def peak_memory(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Compress, and report (in the note) how much this process's peak RSS grew."""
    before = _status("VmHWM")
    image, seconds = timed_compress(data, options)
    grown = _status("VmHWM") - max(before, 0)
    return dataclasses.replace(image, note=str(grown)), seconds


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
async def test_a_49_megapixel_transparent_png_stays_within_the_budget() -> None:
    """Issue 12: such a 190 KB file took 1 GB in one child. With the default budget it
    is admitted alone (196 MB decoded of 512 MiB), compressed under the address-space
    backstop, and the child no longer keeps redundant full-size copies."""
    data = transparent_49_megapixels()
    assert len(data) < 400_000
    options = CompressOptions()
    assert decoded_size(data, options) == 7000 * 7000 * 4 <= options.max_decode_bytes
    compressor = Compressor("processes", workers=1, function=peak_memory)
    try:
        with anyio.fail_after(120):
            image, _ = await compressor.compress(data, options)
    finally:
        compressor.close()
    assert image.content_type == "image/webp" and (image.width, image.height) == (7000, 7000)
    assert compressor.peak_decoding_bytes == 7000 * 7000 * 4
    grown = int(image.note or 0)
    # libwebp needs about 3x the image to encode it; the decoded image once more.
    assert grown < 4.75 * 7000 * 7000 * 4, f"{grown / MIB:.0f} MiB"


def map_on_marker(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Map 4 GiB of address space when given b"hog" (a decoder that allocates far more
    than the header said); compress anything else."""
    if data == b"hog":
        with mmap.mmap(-1, 4 << 30):
            pass
    return timed_compress(data, options)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
async def test_a_child_cannot_grow_far_beyond_its_images_decoded_size() -> None:
    """The address-space backstop: a child that allocates gigabytes for a tiny input
    gets an allocation failure, not the memory; the next image is unaffected."""
    [photo] = corpus_images(1)
    compressor = Compressor("processes", workers=1, function=map_on_marker)
    try:
        with pytest.raises(OSError, match="allocate memory") as caught:  # ENOMEM, from the child
            await compressor.compress(b"hog", OPTIONS)
        image, _ = await compressor.compress(photo, OPTIONS)
    finally:
        compressor.close()
    assert caught.value.errno == 12
    assert image.data == compress_image(photo, OPTIONS).data
