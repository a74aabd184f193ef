"""How the web app is wired: the API key is checked before the body is read, and the
worker's metrics reach /metrics whether the app built its Imgcompress or was given one."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest
from litestar.testing import AsyncTestClient

from imgcompress_core import Imgcompress, Settings
from imgcompress_web import create_app
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio

HEADER = "S. No.,Product Name,Input Image Urls\n"
KEY = {"Authorization": "Bearer alpha"}
MALFORMED = {
    "content": b"--xyz\r\nthis is not a multipart body",
    "headers": {"Content-Type": "multipart/form-data; boundary=xyz"},
}


def _keyed(test_settings: Settings) -> Settings:
    return test_settings.model_copy(update={"api_keys": "alpha", "run_worker": False})


async def test_upload_without_a_key_is_401_even_with_a_malformed_body(
    test_settings: Settings,
) -> None:
    """The key is checked first: a malformed multipart body without a key gets 401 (with
    a key, the same body gets the form's 400)."""
    async with AsyncTestClient(app=create_app(_keyed(test_settings))) as client:
        anonymous = await client.post("/api/upload", **MALFORMED)  # type: ignore[arg-type]
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == 'Bearer realm="imgcompress"'
        wrong = await client.post(
            "/api/upload",
            content=MALFORMED["content"],  # type: ignore[arg-type]
            headers={**MALFORMED["headers"], "Authorization": "Bearer nope"},  # type: ignore[dict-item]
        )
        assert wrong.status_code == 401
        keyed = await client.post(
            "/api/upload",
            content=MALFORMED["content"],  # type: ignore[arg-type]
            headers={**MALFORMED["headers"], **KEY},  # type: ignore[dict-item]
        )
        assert keyed.status_code == 400


async def test_upload_without_a_key_never_reads_the_body(test_settings: Settings) -> None:
    """Straight through ASGI: a 401 upload never asks the server for its body."""
    app = create_app(_keyed(test_settings))
    async with AsyncTestClient(app=app):  # runs the lifespan
        body_reads = 0
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal body_reads
            body_reads += 1
            return {"type": "http.request", "body": b"--xyz\r\n" * 1000, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/api/upload",
            "raw_path": b"/api/upload",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"multipart/form-data; boundary=xyz")],
            "client": ("127.0.0.1", 1234),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        with anyio.fail_after(10):
            await app(scope, receive, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == 401
        assert body_reads == 0


async def test_keys_guard_the_api_but_not_the_rest(test_settings: Settings) -> None:
    """Behind keys: every request endpoint; open: the page, health and metrics."""
    async with AsyncTestClient(app=create_app(_keyed(test_settings))) as client:
        for method, path in (
            ("GET", "/api/status/x"),
            ("GET", "/api/requests/x/output.csv"),
            ("DELETE", "/api/requests/x"),
        ):
            assert (await client.request(method, path)).status_code == 401, path
            assert (await client.request(method, path, headers=KEY)).status_code == 404, path
        for path in ("/", "/health", "/metrics", "/ready"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/api/images/x")).status_code == 404


def metric(text: str, name: str) -> float:
    """Return one sample's value from a Prometheus scrape (0 if absent)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_given_imgcompress_reports_to_metrics(
    test_settings: Settings, image_server: LocalServer
) -> None:
    """create_app(imgcompress=ic): the worker's counters and durations reach /metrics."""
    url = image_server.add("/m.jpg", photo(300, 200))
    ic = Imgcompress(test_settings)
    async with AsyncTestClient(app=create_app(test_settings, imgcompress=ic)) as client:
        response = await client.post(
            "/api/upload",
            files={"file": ("p.csv", f"{HEADER}1,A,{url}\n".encode(), "text/csv")},
        )
        assert response.status_code == 202
        request_id = response.json()["requestId"]
        with anyio.fail_after(30):  # polled through the app, whose event loop runs the worker
            while (await client.get(f"/api/status/{request_id}")).json()["status"] == "Pending":
                await anyio.sleep(0.05)
        text = (await client.get("/metrics")).text
        assert metric(text, 'imgcompress_requests_total{status="accepted"}') == 1
        assert metric(text, 'imgcompress_requests_total{status="Completed"}') == 1
        assert metric(text, 'imgcompress_images_total{reason="",result="done"}') == 1
        assert metric(text, "imgcompress_fetch_seconds_count") == 1
        assert metric(text, "imgcompress_compress_seconds_count") == 1
        assert metric(text, "imgcompress_bytes_out_total") > 0
