"""The upload page's Options section in Debian's Chromium: options reach the service, the
request page shows each image's format, quality and warnings, and a bad option is pointed
at."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, expect
from test_page import browser, page, start_service

from policy_kit import photo, save
from procs import ServiceProcess
from servers import LocalServer

__all__ = ["browser", "page"]  # the fixtures, shared with test_page


@pytest.mark.slow
def test_options_reach_the_service_and_warnings_show(
    page: Page, tmp_path: Path, services: list[ServiceProcess], image_server: LocalServer
) -> None:
    base = start_service(tmp_path, services, allow_private=True)
    small = image_server.add("/small.png", save(Image.new("RGB", (500, 400), "grey"), "PNG"))
    big = image_server.add("/big.jpg", save(photo((1600, 1200)), "JPEG", quality=95))
    source = tmp_path / "products.csv"
    source.write_text(f'S. No.,Product Name,Input Image Urls\n1,Lamp,"{small},{big}"\n')
    page.goto(base + "/")
    page.set_input_files("#file", str(source))
    page.locator("#options summary").click()
    page.select_option("#opt-preset", "amazon-main")
    page.fill("#opt-max_width", "1200")
    page.fill("#opt-quality", "80")
    page.get_by_role("button", name="Upload and compress").click()
    page.wait_for_url(f"{base}/requests/*")
    expect(page.locator("#status")).to_have_text("Completed", timeout=60_000)
    expect(page.locator(".made")).to_have_count(2)
    expect(page.locator(".made").first).to_contain_text("JPEG · quality 80")
    warnings = page.locator(".warnings li")
    expect(warnings).to_have_count(
        3
    )  # the small grey image: too small, not white; the photo: not white
    expect(warnings.first).to_contain_text("1000 px")
    page.screenshot(path=str(tmp_path / "options.png"), full_page=True)

    request_id = page.url.rsplit("/", 1)[1]
    status = httpx.get(f"{base}/api/status/{request_id}").json()
    images = status["products"][0]["images"]
    assert [(i["format"], i["quality"]) for i in images] == [("jpeg", 80), ("jpeg", 80)]
    served = httpx.get(images[1]["outputUrl"])
    with Image.open(io.BytesIO(served.content)) as decoded:
        assert (decoded.format, decoded.size) == ("JPEG", (1200, 900))


@pytest.mark.slow
def test_a_bad_option_is_pointed_at(
    page: Page, tmp_path: Path, services: list[ServiceProcess]
) -> None:
    base = start_service(tmp_path, services, allow_private=True)
    source = tmp_path / "products.csv"
    source.write_text("S. No.,Product Name,Input Image Urls\n1,Lamp,http://127.0.0.1:9/a.jpg\n")
    page.goto(base + "/")
    page.set_input_files("#file", str(source))
    page.locator("#options summary").click()
    page.select_option("#opt-preset", "google-merchant")
    page.select_option("#opt-format", "avif")
    page.get_by_role("button", name="Upload and compress").click()
    message = page.locator("#message")
    expect(message).to_be_visible()
    expect(message).to_contain_text("format: the google-merchant preset does not accept avif")
    expect(page.locator("#opt-format")).to_have_class("invalid")
    assert page.url == base + "/"
