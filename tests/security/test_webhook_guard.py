"""Webhooks go through the same guard as downloads: vetted, pinned, no redirects, bounded."""

from __future__ import annotations

import json
import time

import pytest
from security_kit import (
    PUBLIC_V4,
    Canaries,
    Conn,
    FakeResolver,
    RawServer,
    RecordingBackend,
    Router,
    elapsed,
    response,
)

from imgcompress_core.errors import NotificationError
from imgcompress_core.notify import WebhookNotifier

pytestmark = pytest.mark.anyio

PAYLOAD = {"requestId": "r1", "status": "Completed"}
NAMES = {
    "hooks.example": [PUBLIC_V4],
    "inside.example": ["192.168.1.20"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": [PUBLIC_V4, "127.0.0.1"],
}


async def notify(url: str, **kwargs: object) -> NotificationError | None:
    notifier = WebhookNotifier(**kwargs)  # type: ignore[arg-type]
    try:
        await notifier.notify(url, PAYLOAD, delivery_id="d1")
    except NotificationError as exc:
        return exc
    finally:
        await notifier.aclose()
    return None


@pytest.mark.parametrize(
    ("template", "code"),
    [
        ("http://127.0.0.1:{port}/hook", "blocked_destination"),
        ("http://[::1]:{port}/hook", "blocked_destination"),
        ("http://[::ffff:127.0.0.1]:{port}/hook", "blocked_destination"),
        ("http://inside.example:{port}/hook", "blocked_destination"),
        ("http://metadata.example/latest/meta-data/", "blocked_destination"),
        ("http://mixed.example:{port}/hook", "blocked_destination"),
        ("http://169.254.169.254/", "blocked_destination"),
        ("http://2130706433:{port}/hook", "invalid_url"),
        ("http://user:pw@hooks.example/hook", "invalid_url"),
        ("file:///etc/passwd", "invalid_url"),
        ("gopher://127.0.0.1:{port}/", "invalid_url"),
    ],
)
async def test_a_blocked_webhook_opens_no_connection(
    template: str, code: str, canaries: Canaries
) -> None:
    backend = RecordingBackend()
    error = await notify(
        template.replace("{port}", str(canaries.port)),
        resolver=FakeResolver(dict(NAMES)),
        network_backend=backend,
    )
    assert error is not None and error.code == code, error
    assert not error.retryable
    assert backend.attempts == []
    assert canaries.connections == 0


async def test_a_webhook_is_posted_to_the_pinned_address_with_its_real_name() -> None:
    router = Router()
    router.add("/hook", b"ok", Content_Type="text/plain")
    bodies: list[bytes] = []

    def receive(conn: Conn) -> None:
        head = conn.read_head()
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < length:
            body += conn.sock.recv(65536)
        bodies.append(body)
        router.heads.append(head)
        conn.send(response(200, b"ok"))

    server = RawServer(receive, host="127.0.0.2")
    backend = RecordingBackend({PUBLIC_V4: "127.0.0.2"})
    try:
        error = await notify(
            f"http://hooks.example:{server.port}/hook",
            resolver=FakeResolver(dict(NAMES)),
            network_backend=backend,
        )
    finally:
        server.stop()
    assert error is None
    assert json.loads(bodies[0]) == PAYLOAD
    assert router.header(0, "Host") == f"hooks.example:{server.port}"
    assert router.header(0, "Content-Type") == "application/json"
    assert backend.attempts == [(PUBLIC_V4, server.port)]


async def test_webhook_rebinding_cannot_switch_the_address() -> None:
    vetted = RawServer(Router({"/hook": response(200, b"ok")}), host="127.0.0.2")
    rebound = RawServer(Router({"/hook": response(200, b"ok")}), host="127.0.0.3", port=vetted.port)
    resolver = FakeResolver({"hooks.example": [["127.0.0.2"], ["127.0.0.3"]]})
    try:
        error = await notify(
            f"http://hooks.example:{vetted.port}/hook",
            resolver=resolver,
            allow_private_networks=True,
        )
    finally:
        vetted.stop()
        rebound.stop()
    assert error is None
    assert (vetted.connections, rebound.connections) == (1, 0)


async def test_a_webhook_redirect_is_not_followed(canaries: Canaries) -> None:
    location = f"http://127.0.0.1:{canaries.port}/steal"
    receiver = RawServer(Router({"/hook": response(302, b"", {"Location": location})}))
    try:
        error = await notify(receiver.url("/hook"), allow_private_networks=True)
    finally:
        receiver.stop()
    assert error is not None and error.code == "webhook_http_302" and error.retryable
    assert canaries.connections == 0  # only the receiver was contacted


async def test_the_answer_body_is_never_read() -> None:
    def endless(conn: Conn) -> None:
        conn.read_head()
        conn.send(response(200, b"", length=10**12))
        while not conn.stop.is_set() and conn.send(b"x" * 65536):
            pass

    receiver = RawServer(endless)
    start = time.perf_counter()
    try:
        error = await notify(receiver.url("/hook"), allow_private_networks=True, timeout=5.0)
    finally:
        receiver.stop()
    assert error is None
    assert elapsed(start) < 2.0


async def test_a_silent_receiver_is_cut_off_by_the_timeout() -> None:
    def silent(conn: Conn) -> None:
        conn.read_head()
        conn.stop.wait(30)

    receiver = RawServer(silent)
    start = time.perf_counter()
    try:
        error = await notify(receiver.url("/hook"), allow_private_networks=True, timeout=0.5)
    finally:
        receiver.stop()
    assert error is not None and error.retryable and error.code == "webhook_failed"
    assert elapsed(start) < 2.0


async def test_gone_is_final() -> None:
    receiver = RawServer(Router({"/hook": response(410, b"")}))
    try:
        error = await notify(receiver.url("/hook"), allow_private_networks=True)
    finally:
        receiver.stop()
    assert error is not None and error.code == "webhook_http_410" and not error.retryable
