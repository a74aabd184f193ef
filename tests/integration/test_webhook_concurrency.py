"""Webhook deliveries run concurrently: receivers that never answer hold only their share,
and another request's webhook still arrives at once (issue: hardening, finding 3)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import anyio
import pytest

from imgcompress_core import Imgcompress, Settings
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio


@pytest.fixture
def hanging_receivers() -> Iterator[list[str]]:
    """Six webhook URLs on loopback ports that accept connections and never answer."""
    sockets = []
    for _ in range(6):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # the kernel accepts; nobody ever reads or answers
        sockets.append(listener)
    try:
        yield [f"http://127.0.0.1:{s.getsockname()[1]}/hook" for s in sockets]
    finally:
        for listener in sockets:
            listener.close()


def one_image_csv(url: str) -> bytes:
    """A CSV with one product and one image."""
    return f"S. No.,Product Name,Input Image Urls\n1,SKU1,{url}\n".encode()


async def test_hanging_receivers_do_not_delay_another_webhook(
    image_server: LocalServer,
    webhook_receiver: LocalServer,
    hanging_receivers: list[str],
    test_settings: Settings,
) -> None:
    """Six receivers that never answer are in flight; another request's webhook arrives
    within 2 s of that request finishing."""
    url = image_server.add("/a.jpg", photo(64, 48))
    settings = test_settings.model_copy(update={"webhook_timeout": 60.0})
    async with Imgcompress(settings) as ic:
        stuck = [await ic.submit(one_image_csv(url), hook) for hook in hanging_receivers]
        with anyio.fail_after(30):
            while True:  # every hanging delivery has been claimed and is being sent
                reports = [await ic.status(r) for r in stuck]
                if all(d.attempts for rep in reports for d in rep.deliveries) and all(
                    rep.deliveries for rep in reports
                ):
                    break
                await anyio.sleep(0.05)
        request_id = await ic.submit(one_image_csv(url), webhook_receiver.url("/hook"))
        with anyio.fail_after(30):
            while (await ic.status(request_id)).request.finished_at is None:
                await anyio.sleep(0.02)
            finished = time.monotonic()
            while not webhook_receiver.posts():
                await anyio.sleep(0.02)
        arrived = time.monotonic() - finished
    assert webhook_receiver.posts()[0].json()["requestId"] == request_id
    assert arrived < 2.0, f"the webhook arrived {arrived:.1f} s after the request finished"
