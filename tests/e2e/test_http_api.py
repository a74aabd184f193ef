"""The HTTP API through Litestar's test client (the app's real lifespan, worker included)."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from litestar.testing import AsyncTestClient
from PIL import Image

from imgcompress_core import Imgcompress, Settings, SqliteStorage
from imgcompress_web import create_app
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio

HEADER = "S. No.,Product Name,Input Image Urls\n"


@pytest.fixture
async def client(test_settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """A test client over the real app with an in-process worker."""
    async with AsyncTestClient(app=create_app(test_settings)) as client:
        yield client


async def upload(client: AsyncTestClient, csv_text: str, webhook: str | None = None):  # type: ignore[no-untyped-def,type-arg]
    """POST a CSV as multipart."""
    data = {"webhook_url": webhook} if webhook else None
    return await client.post(
        "/api/upload", files={"file": ("products.csv", csv_text.encode(), "text/csv")}, data=data
    )


async def wait_final(client: AsyncTestClient, request_id: str) -> dict:  # type: ignore[type-arg]
    """Poll the status endpoint until the request is final."""
    with anyio.fail_after(30):
        while True:
            response = await client.get(f"/api/status/{request_id}")
            assert response.status_code == 200
            body = response.json()
            if body["status"] != "Pending":
                return body  # type: ignore[no-any-return]
            await anyio.sleep(0.05)


async def test_upload_status_output_and_image(
    client: AsyncTestClient,
    image_server: LocalServer,  # type: ignore[type-arg]
) -> None:
    """The seed's contract end to end: 202 requestId, status (and its summary without
    products), output CSV, image with caching."""
    original = photo(400, 300)
    url = image_server.add("/shoe.jpg", original)
    response = await upload(client, f'{HEADER}1,Shoe,"{url}"\n')
    assert response.status_code == 202
    request_id = response.json()["requestId"]
    assert len(request_id) >= 22

    status = await wait_final(client, request_id)
    assert status["requestId"] == request_id
    assert status["status"] == "Completed"
    assert status["progress"]["done"] == 1 and status["progress"]["percent"] == 100.0
    [product] = status["products"]
    assert (product["row"], product["serial"], product["name"]) == (2, "1", "Shoe")
    [image] = product["images"]
    assert image["state"] == "done" and image["error"] is None
    assert image["inputBytes"] == len(original)

    summary = (await client.get(f"/api/status/{request_id}?products=false")).json()
    assert "products" not in summary
    assert {k: v for k, v in status.items() if k != "products"} == summary

    out = await client.get(f"/api/requests/{request_id}/output.csv")
    assert out.status_code == 200
    assert out.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(out.text)))
    assert rows[1][3] == image["outputUrl"]

    served = await client.get(f"/api/images/{image['imageId']}")
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/jpeg"
    assert "immutable" in served.headers["cache-control"]
    with Image.open(io.BytesIO(served.content)) as decoded:
        assert decoded.size == (400, 300)
    assert len(served.content) < len(original)
    again = await client.get(
        f"/api/images/{image['imageId']}", headers={"If-None-Match": served.headers["etag"]}
    )
    assert again.status_code == 304


async def test_bad_csv_gets_every_problem_as_problem_details(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    """400 application/problem+json listing each problem with row and column."""
    text = f"{HEADER}1,,https://a.example/x.jpg\n1,B,notaurl\n"
    response = await upload(client, text)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 400 and body["code"] == "invalid_csv"
    located = {(p["row"], p["column"]) for p in body["problems"]}
    assert {(2, "Product Name"), (3, "S. No."), (3, "Input Image Urls")} <= located


async def test_unknown_ids_are_404_problems(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    """Unknown request and image ids answer 404 problem details."""
    for path in ("/api/status/nope", "/api/requests/nope/output.csv", "/api/images/nope"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] in {"request_not_found", "image_not_found"}


async def test_too_large_upload_is_413(test_settings: Settings) -> None:
    """A body over the cap answers 413 problem details, not 500."""
    settings = test_settings.model_copy(update={"max_upload_bytes": 1000})
    async with AsyncTestClient(app=create_app(settings)) as client:
        big = HEADER + "".join(f"{i},P,https://a.example/{i}.jpg\n" for i in range(3000))
        response = await upload(client, big)
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/problem+json"
        small_but_over = HEADER + "".join(f"{i},P,https://a.example/{i}.jpg\n" for i in range(40))
        response = await upload(client, small_but_over)
        assert response.status_code == 413
        assert response.json()["code"] == "upload_too_large"


async def test_missing_file_field_is_400(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    """A form without the file is a client error with problem details."""
    response = await client.post("/api/upload", data={"webhook_url": "https://x.example/h"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


async def test_private_webhook_is_refused_when_private_networks_are_off(
    test_settings: Settings,
) -> None:
    """A loopback webhook URL is refused at upload with a reason, by default."""
    settings = test_settings.model_copy(update={"allow_private_networks": False})
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await upload(
            client, f"{HEADER}1,A,https://a.example/x.jpg\n", "http://127.0.0.1:9/h"
        )
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_webhook_url"
        assert "non-public" in response.json()["detail"]


async def test_page_health_ready_and_schema(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    """The upload page, health checks and the OpenAPI document are served."""
    page = await client.get("/")
    assert page.status_code == 200 and "<form" in page.text
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).json() == {"status": "ready"}
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/api/upload" in schema["paths"]
    assert "/api/status/{request_id}" in schema["paths"]


async def test_delete_cancels_then_removes(test_settings: Settings) -> None:
    """DELETE on a Pending request cancels its images; a second DELETE removes it (204)."""
    settings = test_settings.model_copy(update={"run_worker": False})
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await upload(client, f"{HEADER}1,A,https://a.example/x.jpg\n")
        request_id = response.json()["requestId"]
        cancelled = await client.delete(f"/api/requests/{request_id}")
        assert cancelled.status_code == 200
        body = cancelled.json()
        assert body["status"] == "Failed"
        [image] = body["products"][0]["images"]
        assert image["state"] == "failed"
        assert image["error"]["code"] == "cancelled"
        removed = await client.delete(f"/api/requests/{request_id}")
        assert removed.status_code == 204
        assert (await client.get(f"/api/status/{request_id}")).status_code == 404
        assert (await client.delete(f"/api/requests/{request_id}")).status_code == 404


async def test_output_csv_is_409_while_pending(test_settings: Settings) -> None:
    """The output CSV is not served half-done: 409 with Retry-After until final."""
    settings = test_settings.model_copy(update={"run_worker": False})
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await upload(client, f"{HEADER}1,A,https://a.example/x.jpg\n")
        request_id = response.json()["requestId"]
        out = await client.get(f"/api/requests/{request_id}/output.csv")
        assert out.status_code == 409
        assert out.headers["retry-after"]
        assert out.json()["code"] == "request_pending"


def metric(text: str, name: str) -> float:
    """Return one sample's value from Prometheus text (0 if absent)."""
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == name:
            return float(value)
    return 0.0


async def test_metrics_move_during_a_run(
    client: AsyncTestClient,  # type: ignore[type-arg]
    image_server: LocalServer,
) -> None:
    """/metrics counts accepted and finished requests, images by result, bytes, durations."""
    before = (await client.get("/metrics")).text
    assert metric(before, 'imgcompress_requests_total{status="accepted"}') == 0
    good = image_server.add("/m.jpg", photo(300, 200))
    missing = image_server.url("/gone.jpg")
    response = await upload(client, f'{HEADER}1,A,"{good},{missing}"\n')
    await wait_final(client, response.json()["requestId"])
    scrape = await client.get("/metrics")
    assert scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    assert metric(text, 'imgcompress_requests_total{status="accepted"}') == 1
    assert metric(text, 'imgcompress_requests_total{status="Completed"}') == 1
    assert metric(text, 'imgcompress_images_total{reason="",result="done"}') == 1
    assert metric(text, 'imgcompress_images_total{reason="upstream_http_404",result="failed"}') == 1
    assert (
        metric(text, "imgcompress_bytes_in_total") > metric(text, "imgcompress_bytes_out_total") > 0
    )
    assert metric(text, "imgcompress_fetch_seconds_count") == 2
    assert metric(text, "imgcompress_compress_seconds_count") == 1
    assert metric(text, "imgcompress_queue_depth") == 0


async def test_idempotency_key(test_settings: Settings) -> None:
    """A retried upload with the same Idempotency-Key creates nothing new; another body is 422."""
    settings = test_settings.model_copy(update={"run_worker": False})
    async with AsyncTestClient(app=create_app(settings)) as client:
        text = f"{HEADER}1,A,https://a.example/x.jpg\n"
        files = {"file": ("p.csv", text.encode(), "text/csv")}
        first = await client.post("/api/upload", files=files, headers={"Idempotency-Key": "abc"})
        again = await client.post("/api/upload", files=files, headers={"Idempotency-Key": "abc"})
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json()
        other = {"file": ("p.csv", (text + "2,B,https://a.example/y.jpg\n").encode(), "text/csv")}
        conflict = await client.post("/api/upload", files=other, headers={"Idempotency-Key": "abc"})
        assert conflict.status_code == 422
        assert conflict.json()["code"] == "idempotency_key_reused"
        fresh = await client.post("/api/upload", files=files)
        assert fresh.json()["requestId"] != first.json()["requestId"]


async def test_api_keys(test_settings: Settings) -> None:
    """With API keys set: 401 without a valid key; a key sees only its own requests."""
    settings = test_settings.model_copy(update={"api_keys": "alpha, beta", "run_worker": False})
    alpha = {"Authorization": "Bearer alpha"}
    beta = {"Authorization": "Bearer beta"}
    async with AsyncTestClient(app=create_app(settings)) as client:
        files = {"file": ("p.csv", f"{HEADER}1,A,https://a.example/x.jpg\n".encode(), "text/csv")}
        anonymous = await client.post("/api/upload", files=files)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.headers["content-type"] == "application/problem+json"
        wrong = await client.post("/api/upload", files=files, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        created = await client.post("/api/upload", files=files, headers=alpha)
        assert created.status_code == 202
        request_id = created.json()["requestId"]
        assert (await client.get(f"/api/status/{request_id}", headers=alpha)).status_code == 200
        assert (await client.get(f"/api/status/{request_id}", headers=beta)).status_code == 404
        assert (await client.get(f"/api/status/{request_id}")).status_code == 401
        for method, path in (
            ("GET", f"/api/requests/{request_id}/output.csv"),
            ("DELETE", f"/api/requests/{request_id}"),
        ):
            response = await client.request(method, path, headers=beta)
            assert response.status_code == 404, path
        assert (await client.get(f"/api/status/{request_id}", headers=alpha)).status_code == 200
        assert (await client.get("/health")).status_code == 200


async def test_upload_is_503_not_202_when_the_store_is_locked(
    test_settings: Settings, tmp_path: Path
) -> None:
    """If the store cannot take the request, the client hears 503 with Retry-After."""
    path = tmp_path / "locked.sqlite3"
    store = SqliteStorage(path, busy_timeout=0.2)
    ic = Imgcompress(test_settings, storage=store, run_worker=False)
    async with AsyncTestClient(app=create_app(test_settings, imgcompress=ic)) as client:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            response = await upload(client, f"{HEADER}1,A,https://a.example/x.jpg\n")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["code"] == "storage_unavailable"
        accepted = await upload(client, f"{HEADER}1,A,https://a.example/x.jpg\n")
        assert accepted.status_code == 202
