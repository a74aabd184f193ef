"""The recurring-feed endpoints over HTTP: the history, retry, and the zip."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator

import anyio
import pytest
from litestar.testing import AsyncTestClient

from imgcompress_core import Settings
from imgcompress_web import create_app
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(test_settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """A test client over the real app with an in-process worker."""
    async with AsyncTestClient(app=create_app(test_settings)) as client:
        yield client


async def upload(client: AsyncTestClient, rows: list[str]) -> str:  # type: ignore[type-arg]
    """Upload a CSV and return its request id."""
    text = "S. No.,Product Name,Input Image Urls\n" + "\n".join(rows) + "\n"
    answer = await client.post("/api/upload", files={"file": ("p.csv", text.encode(), "text/csv")})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["requestId"])


async def final(client: AsyncTestClient, request_id: str) -> dict:  # type: ignore[type-arg]
    """Poll until the request is final."""
    with anyio.fail_after(30):
        while True:
            body = (await client.get(f"/api/status/{request_id}")).json()
            if body["status"] != "Pending":
                return body  # type: ignore[no-any-return]
            await anyio.sleep(0.05)


async def test_history_retry_and_zip(client: AsyncTestClient, image_server: LocalServer) -> None:  # type: ignore[type-arg]
    """List newest first with counts and a cursor; retry answers 409 while Pending and 202
    with the count after; the zip holds the outputs under their row names."""
    good = image_server.add("/g.jpg", photo(seed=1))
    first = await upload(client, [f"1,Chair,{good}"])
    await final(client, first)
    second = await upload(client, [f'2,Lamp,"{good},{image_server.url("/late.jpg")}"'])
    assert (await client.post(f"/api/requests/{second}/retry")).status_code in (409, 200)
    body = await final(client, second)
    assert body["progress"]["failed"] == 1

    listed = (await client.get("/api/requests?limit=1")).json()
    assert [r["requestId"] for r in listed["requests"]] == [second]
    assert listed["requests"][0]["progress"] == {"total": 2, "done": 1, "failed": 1, "finished": 2}
    older = (await client.get(f"/api/requests?limit=1&cursor={listed['nextCursor']}")).json()
    assert [r["requestId"] for r in older["requests"]] == [first]
    assert "nextCursor" not in older
    assert (await client.get("/api/requests?cursor=nonsense")).status_code == 400

    image_server.add("/late.jpg", photo(seed=2))
    retried = await client.post(f"/api/requests/{second}/retry")
    assert retried.status_code == 202 and retried.json()["queued"] == 1
    assert (await final(client, second))["progress"]["failed"] == 0
    again = await client.post(f"/api/requests/{second}/retry")
    assert again.status_code == 200 and again.json()["queued"] == 0

    archive = await client.get(f"/api/requests/{second}/images.zip")
    assert archive.status_code == 200
    assert archive.headers["content-type"].startswith("application/zip")
    names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
    assert names == ["2-Lamp-1.jpg", "2-Lamp-2.jpg"]
    assert (await client.get("/api/requests/nope/images.zip")).status_code == 404
    assert (await client.post("/api/requests/nope/retry")).status_code == 404
