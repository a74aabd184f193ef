"""The compression pool: real worker processes (and threads) behind one interface."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import anyio
import pytest

from imgcompress_core import CompressionError, CompressOptions, ImageFailure
from imgcompress_core.compress import CompressedImage, compress_image, timed_compress
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
    return CompressedImage(**{**_fields(image), "note": str(os.getpid())}), 0.0


def _fields(image: CompressedImage) -> dict[str, object]:
    return {name: getattr(image, name) for name in CompressedImage.__slots__}


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


async def test_the_pool_is_recycled_without_losing_an_image() -> None:
    """After tasks_per_child images per worker a fresh pool takes over; images in flight
    in the old one finish, and every image comes back right (no hang, no broken pool:
    Python 3.11's own max_tasks_per_child can do both)."""
    [photo] = corpus_images(1)
    expected = compress_image(photo, OPTIONS).data
    compressor = Compressor("processes", workers=2, tasks_per_child=2, function=worker_pid)
    results: list[CompressedImage] = []

    async def one() -> None:
        image, _ = await compressor.compress(photo, OPTIONS)
        results.append(image)

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for _ in range(16):
                    group.start_soon(one)
    finally:
        compressor.close()
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
