"""The Imgcompress facade is all the adapters use, and it offers what they need."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import anyio
import pytest
from PIL import Image

from imgcompress_core import (
    Imgcompress,
    MemoryStorage,
    RequestNotFound,
    Settings,
    StorageUnavailable,
)
from imgcompress_core.testing import RecordingNotifier, StaticFetcher

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "src" / "imgcompress_web"
# What Imgcompress wires together; the adapters go through its methods instead.
INTERNALS = {"storage", "service", "worker"}
URL = "https://shop.example/a.jpg"
CSV = f"S. No.,Product Name,Input Image Urls\n1,A,{URL}\n".encode()


def _internal_uses(source: str, name: str) -> list[str]:
    return [
        f"{name}:{node.lineno} .{node.attr}"
        for node in ast.walk(ast.parse(source, filename=name))
        if isinstance(node, ast.Attribute) and node.attr in INTERNALS
    ]


def test_web_adapter_uses_only_the_facade() -> None:
    """No module of imgcompress_web reads .storage, .service or .worker of anything."""
    modules = sorted(WEB.rglob("*.py"))
    assert len(modules) >= 5
    found = [
        use
        for module in modules
        for use in _internal_uses(module.read_text(encoding="utf-8"), module.name)
    ]
    assert found == []


def test_the_check_sees_an_internal_use() -> None:
    """The check above is not vacuous (and prose that says "the service." is no use)."""
    source = '"""Talk to the service."""\nasync def f(ic):\n    return await ic.storage.ping()\n'
    assert _internal_uses(source, "adapter.py") == ["adapter.py:3 .storage"]


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((64, 48), 60).convert("RGB").save(out, "JPEG", quality=95)
    return out.getvalue()


def _imgcompress(storage: MemoryStorage | None = None, *, run_worker: bool = True) -> Imgcompress:
    return Imgcompress(
        Settings(poll_interval=0.02, public_url="https://configured.example"),
        storage=storage or MemoryStorage(),
        fetcher=StaticFetcher({URL: _jpeg()}),
        notifier=RecordingNotifier(),
        run_worker=run_worker,
    )


async def test_output_csv_links_and_owner() -> None:
    """Links use the base URL the request was uploaded under, not the caller's; an
    image_url function replaces them; another owner's request is not found."""
    async with _imgcompress() as ic:
        request_id = await ic.submit(CSV, base_url="https://stored.example", owner="alice")
        await ic.wait(request_id, timeout=30)
        [image] = (await ic.status(request_id)).images
        text = await ic.output_csv(request_id, owner="alice", base_url="https://caller.example")
        assert image.output_id is not None  # links name the output (stable across feeds)
        assert f"https://stored.example/api/images/{image.output_id}" in text
        assert "caller.example" not in text
        local = await ic.output_csv(request_id, image_url=lambda image_id: f"images/{image_id}")
        assert f"images/{image.output_id}" in local and "https://" not in local.split(URL)[1]
        with pytest.raises(RequestNotFound):
            await ic.output_csv(request_id, owner="bob")
        default = await ic.submit(CSV)
        await ic.wait(default, timeout=30)
        assert "https://configured.example/api/images/" in await ic.output_csv(default)


async def test_queue_depth_counts_waiting_images() -> None:
    """queue_depth() is the number of images no worker has claimed yet."""
    async with _imgcompress(run_worker=False) as ic:
        assert await ic.queue_depth() == 0
        await ic.submit(CSV)
        assert await ic.queue_depth() == 1


class _DeadStore(MemoryStorage):
    """A store whose ping fails the way a driver's might."""

    async def ping(self) -> None:
        """Fail."""
        raise ConnectionError("connection refused")


async def test_ready_says_what_is_wrong() -> None:
    """ready() passes with a live store and worker; otherwise StorageUnavailable says why."""
    async with _imgcompress() as ic:
        assert ic.worker is not None
        with anyio.fail_after(10):
            while not ic.worker.alive:  # its task starts just after the block is entered
                await anyio.sleep(0.01)
        await ic.ready()
        ic.worker.alive = False  # as after the worker's task ended
        with pytest.raises(StorageUnavailable) as stopped:
            await ic.ready()
        assert stopped.value.code == "worker_down"
    async with _imgcompress(_DeadStore(), run_worker=False) as ic:
        with pytest.raises(StorageUnavailable) as down:
            await ic.ready()
        assert down.value.code == "storage_unavailable"
        assert "connection refused" in down.value.message


class _Counter:
    """A Metrics sink that counts stored images."""

    def __init__(self) -> None:
        self.done = 0

    def image_done(self, input_bytes: int, output_bytes: int) -> None:
        """Count."""
        self.done += 1

    def image_failed(self, code: str) -> None:
        """Ignore."""

    def fetch_seconds(self, seconds: float) -> None:
        """Ignore."""

    def compress_seconds(self, seconds: float) -> None:
        """Ignore."""

    def request_finished(self, status: str) -> None:
        """Ignore."""


async def test_added_metrics_join_the_given_ones() -> None:
    """Metrics added before entering get every observation, as the given ones do; the
    same sink added twice counts once; adding while running is refused."""
    given, added = _Counter(), _Counter()
    ic = Imgcompress(
        Settings(poll_interval=0.02),
        storage=MemoryStorage(),
        fetcher=StaticFetcher({URL: _jpeg()}),
        notifier=RecordingNotifier(),
        metrics=given,
    )
    ic.add_metrics(added)
    ic.add_metrics(added)
    async with ic:
        await ic.wait(await ic.submit(CSV), timeout=30)
        with pytest.raises(RuntimeError):
            ic.add_metrics(_Counter())
    assert (given.done, added.done) == (1, 1)
