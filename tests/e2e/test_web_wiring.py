"""How the web app is wired: the worker's metrics reach /metrics whether the app built its
Imgcompress or was given one."""

from __future__ import annotations

import re

import anyio
import pytest
from litestar.testing import AsyncTestClient

from imgcompress_core import Imgcompress, Settings
from imgcompress_web import create_app
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio

HEADER = "S. No.,Product Name,Input Image Urls\n"


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
