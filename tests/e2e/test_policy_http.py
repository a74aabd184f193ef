"""Output options as form fields of POST /api/upload: the stored images are fetched over
HTTP and decoded; bad options answer 400 naming the field. The store is SQLite."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from litestar.testing import AsyncTestClient
from PIL import ExifTags, Image

from imgcompress_core import Settings, _score
from imgcompress_web import create_app
from policy_kit import cutout, needs_corpus, photo, save, tagged_jpeg
from servers import LocalServer

pytestmark = [pytest.mark.anyio, needs_corpus]

HEADER = "S. No.,Product Name,Input Image Urls\n"
Client = AsyncTestClient  # type: ignore[type-arg]


@pytest.fixture
async def client(test_settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(test_settings)) as client:
        yield client


async def upload(client: Client, urls: list[str], **options: str) -> Any:
    cells = "\n".join(f'{i},SKU{i},"{url}"' for i, url in enumerate(urls, 1))
    files = {"file": ("products.csv", (HEADER + cells + "\n").encode(), "text/csv")}
    return await client.post("/api/upload", files=files, data=options or None)


async def finished(client: Client, urls: list[str], **options: str) -> dict[str, Any]:
    response = await upload(client, urls, **options)
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    with anyio.fail_after(60):
        while True:
            body: dict[str, Any] = (await client.get(f"/api/status/{request_id}")).json()
            if body["status"] != "Pending":
                return body
            await anyio.sleep(0.05)


def images(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [image for product in status["products"] for image in product["images"]]


async def fetched(client: Client, image: dict[str, Any]) -> tuple[Image.Image, int]:
    path = image["outputUrl"].split("://", 1)[1].split("/", 1)[1]
    response = await client.get(f"/{path}")
    assert response.status_code == 200
    decoded = Image.open(io.BytesIO(response.content))
    decoded.load()
    return decoded, len(response.content)


async def test_format_size_and_quality_from_the_form(
    client: Client, image_server: LocalServer
) -> None:
    url = image_server.add("/p.jpg", save(photo((1200, 900)), "JPEG", quality=95))
    status = await finished(client, [url], format="webp", max_width="600", quality="70")
    [image] = images(status)
    assert image["state"] == "done", image
    assert (image["format"], image["contentType"]) == ("webp", "image/webp")
    assert (image["width"], image["height"], image["quality"]) == (600, 450, 70)
    assert image["warnings"] == [] and image["score"] is None
    decoded, size = await fetched(client, image)
    assert (decoded.format, decoded.size, size) == ("WEBP", (600, 450), image["outputBytes"])


async def test_max_bytes_from_the_form(client: Client, image_server: LocalServer) -> None:
    url = image_server.add("/big.jpg", save(photo((1600, 1200)), "JPEG", quality=98))
    [image] = images(await finished(client, [url], max_bytes="60000"))
    decoded, size = await fetched(client, image)
    assert size <= 60_000
    assert decoded.size == (1600, 1200)
    noise = Image.effect_noise((1200, 1200), 100).convert("RGB")
    hard = image_server.add("/noise.png", save(noise, "PNG"))
    [failed] = images(await finished(client, [hard], max_bytes="2048"))
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "max_bytes_unreachable"
    assert "2048" in failed["error"]["message"]


async def test_background_and_metadata_from_the_form(
    client: Client, image_server: LocalServer
) -> None:
    transparent = image_server.add("/cut.png", save(cutout(), "PNG"))
    tagged = image_server.add("/tagged.jpg", tagged_jpeg())
    status = await finished(
        client, [transparent, tagged], background="#0000ff", metadata="copyright"
    )
    flat, kept = images(status)
    decoded, _ = await fetched(client, flat)
    assert decoded.format == "JPEG"
    r, g, b = decoded.convert("RGB").getpixel((2, 2))
    assert b > 240 and r < 20 and g < 20
    decoded, _ = await fetched(client, kept)
    exif = decoded.getexif()
    assert exif[ExifTags.Base.Copyright] == "(c) 2026 Example Shop"
    assert ExifTags.IFD.GPSInfo not in exif


@pytest.mark.usefixtures("scorer")
async def test_target_quality_from_the_form(client: Client, image_server: LocalServer) -> None:
    url = image_server.add("/t.png", save(photo((900, 700)), "PNG"))
    [image] = images(await finished(client, [url], target_quality="72"))
    assert image["score"] >= 72
    decoded, _ = await fetched(client, image)
    assert _score.score(photo((900, 700)), decoded.convert("RGB")) >= 70


async def test_a_preset_warns_per_image_and_adds_a_warnings_column(
    client: Client, image_server: LocalServer
) -> None:
    small = image_server.add("/small.png", save(Image.new("RGB", (500, 400), "grey"), "PNG"))
    white = Image.new("RGB", (1200, 1000), "white")
    white.paste(photo((400, 300)), (400, 350))
    good = image_server.add("/good.png", save(white, "PNG"))
    status = await finished(client, [small, good], preset="amazon-main")
    bad, fine = images(status)
    assert len(bad["warnings"]) == 2 and fine["warnings"] == []
    assert bad["format"] == "jpeg"
    out = await client.get(f"/api/requests/{status['requestId']}/output.csv")
    rows = list(csv.reader(io.StringIO(out.text)))
    assert rows[0][-1] == "Warnings"
    assert "1000 px" in rows[1][-1] and "not pure white" in rows[1][-1]
    assert rows[2][-1] == ""
    plain = await finished(client, [good])
    out = await client.get(f"/api/requests/{plain['requestId']}/output.csv")
    assert "Warnings" not in out.text.splitlines()[0]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"format": "gif"}, "format"),
        ({"quality": "high"}, "quality"),
        ({"quality": "120"}, "quality"),
        ({"quality": "50", "target_quality": "70"}, "target_quality"),
        ({"preset": "google-merchant", "format": "avif"}, "format"),
        ({"format": "jpeg", "background": "keep"}, "background"),
        ({"max_width": "0"}, "max_width"),
        ({"metadata": "everything"}, "metadata"),
    ],
)
async def test_bad_options_answer_400_naming_the_field(
    client: Client, options: dict[str, str], field: str
) -> None:
    response = await upload(client, ["http://127.0.0.1:9/a.jpg"], **options)
    assert response.status_code == 400
    problem = response.json()
    assert problem["code"] == "invalid_policy"
    assert problem["field"] == field
    assert problem["detail"].startswith(f"{field}: ")
