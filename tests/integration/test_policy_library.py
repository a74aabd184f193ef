"""The output policy through the library's facade: ``Imgcompress.submit(..., policy=)``, the
settings' defaults, the per-image results and the Warnings column (in-memory store)."""

from __future__ import annotations

import csv
import io

import pytest
from PIL import Image

from imgcompress_core import (
    Fetched,
    Imgcompress,
    InvalidPolicy,
    MemoryStorage,
    OutputPolicy,
    Settings,
    service,
)
from policy_kit import cutout, needs_corpus, photo, save

pytestmark = [pytest.mark.anyio, needs_corpus]


class Images:
    """A Fetcher over a dict of URL -> bytes."""

    def __init__(self, images: dict[str, bytes]) -> None:
        self.images = images

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        return Fetched(url=url, data=self.images[url], content_type=None)


IMAGES = {
    "https://shop.example/photo.jpg": save(photo((1600, 1200)), "JPEG", quality=95),
    "https://shop.example/cut.png": save(cutout(), "PNG"),
}
CSV = (
    b"S. No.,Product Name,Input Image Urls\n"
    b'1,Lamp,"https://shop.example/photo.jpg,https://shop.example/cut.png"\n'
)


async def outputs(settings: Settings, policy: OutputPolicy | None) -> list[Image.Image]:
    async with Imgcompress(settings, storage=MemoryStorage(), fetcher=Images(IMAGES)) as ic:
        request_id = await ic.submit(CSV, policy=policy)
        report = await ic.wait(request_id, timeout=60)
        found = []
        for record in report.images:
            stored = await ic.image(record.output_id or record.image_id)
            found.append(Image.open(io.BytesIO(stored.data)))
        return found


async def test_submit_with_a_policy() -> None:
    photo_out, cut_out = await outputs(Settings(), OutputPolicy(format="avif", max_height=300))
    assert (photo_out.format, photo_out.size) == ("AVIF", (400, 300))
    assert (cut_out.format, cut_out.size) == ("AVIF", (400, 300))
    assert cut_out.convert("RGBA").getpixel((1, 1))[3] == 0


async def test_settings_give_the_defaults_a_request_overrides() -> None:
    settings = Settings(output_format="webp", max_output_width=800)
    photo_out, _ = await outputs(settings, None)
    assert (photo_out.format, photo_out.width) == ("WEBP", 800)
    photo_out, _ = await outputs(settings, OutputPolicy(format="jpeg", background="#ffffff"))
    assert (photo_out.format, photo_out.width) == ("JPEG", 800)


async def test_results_and_the_warnings_column() -> None:
    async with Imgcompress(Settings(), storage=MemoryStorage(), fetcher=Images(IMAGES)) as ic:
        request_id = await ic.submit(CSV, policy=OutputPolicy(preset="amazon-main", quality=70))
        report = await ic.wait(request_id, timeout=60)
        photo_record, cut_record = report.images
        assert (photo_record.quality, photo_record.content_type) == (70, "image/jpeg")
        assert photo_record.warnings  # a photo edge to edge: its border is not white
        assert cut_record.content_type == "image/jpeg"  # flattened onto white
        assert any("1000 px" in w for w in cut_record.warnings)  # 400 x 300
        document = report.to_document(ic.urls)
        image = document["products"][0]["images"][0]
        assert (image["format"], image["quality"], image["warnings"]) == (
            "jpeg",
            70,
            list(photo_record.warnings),
        )
        rows = list(csv.reader(io.StringIO(await ic.output_csv(request_id))))
    assert rows[0][-1] == "Warnings"
    assert rows[1][-1].startswith("1: amazon-main:") and " | 2: amazon-main:" in rows[1][-1]


async def test_target_quality_without_the_scorer_is_refused_at_submit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "scorer_available", lambda: False)
    async with Imgcompress(Settings(), storage=MemoryStorage(), fetcher=Images(IMAGES)) as ic:
        with pytest.raises(InvalidPolicy) as caught:
            await ic.submit(CSV, policy=OutputPolicy(target_quality=80))
    assert caught.value.field == "target_quality"
    assert "imgcompress[target]" in caught.value.reason
