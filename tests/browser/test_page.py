"""The web page in a real browser: Debian's Chromium driven by Playwright, against a real serve.

Chromium comes from Debian (`apt-get install chromium`; .ci/run installs it when it is
missing); Playwright never downloads a browser of its own.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from procs import ServiceProcess, env_for, free_port
from servers import LocalServer, corpus_images

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Launch Debian's Chromium; fail loudly when it is not installed."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install chromium (.ci/run does this)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser page."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def start_service(tmp_path: Path, services: list[ServiceProcess], *, allow_private: bool) -> str:
    """Start `imgcompress serve` on a free port; return its base URL."""
    env = env_for(tmp_path)
    if not allow_private:
        env.pop("IMGCOMPRESS_ALLOW_PRIVATE_NETWORKS")
    port = free_port()
    service = ServiceProcess(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    services.append(service)
    base = f"http://127.0.0.1:{port}"
    service.wait_http(base)
    return base


def finish_and_check(page: Page, tmp_path: Path, done: int, failed: int) -> list[list[str]]:
    """Wait for 100 %, check thumbnails, download the output CSV, save a screenshot."""
    bar = page.locator("#bar")
    expect(bar).to_have_attribute("data-percent", "100", timeout=60_000)
    expect(page.locator("#status")).to_have_text("Completed")
    expect(page.locator("#counts")).to_contain_text(f"{done} done · {failed} failed")
    thumbnails = page.locator("img.after")
    expect(thumbnails).to_have_count(done)
    for index in range(done):
        thumbnail = thumbnails.nth(index)
        thumbnail.scroll_into_view_if_needed()
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle()
        )
    expect(page.locator(".saving").first).to_contain_text("% smaller")
    with page.expect_download() as download_info:
        page.locator("#csv-link").click()
    target = tmp_path / "output.csv"
    download_info.value.save_as(target)
    page.screenshot(path=str(tmp_path / "request-page.png"), full_page=True)
    assert (tmp_path / "request-page.png").stat().st_size > 10_000
    return list(csv.reader(io.StringIO(target.read_text())))


@pytest.mark.slow
def test_try_it_sample_runs_with_the_guard_on(
    page: Page, tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """A newcomer on a default `serve` clicks "Try it" and watches the sample finish."""
    base = start_service(tmp_path, services, allow_private=False)
    page.goto(base + "/")
    page.get_by_text("Try it with sample images").click()
    page.wait_for_url(f"{base}/requests/*")
    rows = finish_and_check(page, tmp_path, done=4, failed=1)
    assert rows[0][-1] == "Output Image Urls"
    assert page.locator(".failed").first.inner_text() == "The image was not found (HTTP 404)."


@pytest.mark.slow
def test_upload_through_the_page(
    page: Page, tmp_path: Path, services: list[ServiceProcess], image_server: LocalServer
) -> None:
    """Choose a CSV in the form, upload, watch progress, download the output CSV."""
    base = start_service(tmp_path, services, allow_private=True)
    urls = [image_server.add(f"/{i}.jpg", data) for i, data in enumerate(corpus_images(3))]
    source = tmp_path / "products.csv"
    source.write_text(
        f'S. No.,Product Name,Input Image Urls\n1,Shoe,"{urls[0]},{urls[1]}"\n2,Bag,{urls[2]}\n'
    )
    page.goto(base + "/")
    page.set_input_files("#file", str(source))
    page.get_by_role("button", name="Upload and compress").click()
    page.wait_for_url(f"{base}/requests/*")
    rows = finish_and_check(page, tmp_path, done=3, failed=0)
    assert len(rows[1][3].split(",")) == 2
    assert rows[2][3].startswith(base + "/api/images/")


@pytest.mark.slow
def test_bad_csv_shows_the_problems(
    page: Page, tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """A bad CSV leaves the user on the page with each problem listed."""
    base = start_service(tmp_path, services, allow_private=True)
    source = tmp_path / "bad.csv"
    source.write_text("S. No.,Product Name,Input Image Urls\n1,,ftp://x/y.jpg\n")
    page.goto(base + "/")
    page.set_input_files("#file", str(source))
    page.get_by_role("button", name="Upload and compress").click()
    message = page.locator("#message")
    expect(message).to_be_visible()
    expect(message).to_contain_text("row 2, Product Name")
    page.set_viewport_size({"width": 380, "height": 800})
    page.screenshot(path=str(tmp_path / "phone-width.png"), full_page=True)


@pytest.mark.slow
def test_pages_load_nothing_from_elsewhere_and_break_no_policy(
    page: Page, tmp_path: Path, services: list[ServiceProcess], image_server: LocalServer
) -> None:
    """Issue 12, 7a and 7d: the request page shows originals as links, so viewers' browsers
    never contact the image hosts; no page (upload, request, /schema) breaks its
    Content-Security-Policy or loads anything from another origin."""
    base = start_service(tmp_path, services, allow_private=True)
    urls = [image_server.add(f"/{i}.jpg", data) for i, data in enumerate(corpus_images(2))]
    source = tmp_path / "products.csv"
    source.write_text(f'S. No.,Product Name,Input Image Urls\n1,Shoe,"{urls[0]},{urls[1]}"\n')
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(base + "/")
    page.set_input_files("#file", str(source))
    page.get_by_role("button", name="Upload and compress").click()
    page.wait_for_url(f"{base}/requests/*")
    finish_and_check(page, tmp_path, done=2, failed=0)
    originals = page.locator("a.original")
    expect(originals).to_have_count(2)
    assert sorted(originals.nth(i).get_attribute("href") or "" for i in range(2)) == sorted(urls)
    assert "noreferrer" in (originals.first.get_attribute("rel") or "")
    assert page.locator(f'img[src^="{image_server.base}"]').count() == 0

    page.goto(base + "/schema")
    expect(page.locator("h1")).to_contain_text("imgcompress")
    expect(page.locator("code", has_text="POST /api/upload")).to_be_visible()

    elsewhere = [url for url in requested if not url.startswith((base, "blob:", "data:"))]
    assert elsewhere == [], f"the browser contacted other origins: {elsewhere}"
    assert {url.removeprefix(base) for url in missing} <= {"/favicon.ico"}, missing
    problems = [text for text in problems if not text.startswith("Failed to load resource")]
    assert problems == [], f"console errors (a CSP violation is one): {problems}"


@pytest.mark.slow
def test_retry_download_all_and_recent_requests(
    page: Page, tmp_path: Path, services: list[ServiceProcess], image_server: LocalServer
) -> None:
    """Recurring feeds on the page: a failed image is retried with the button once it is
    there, "Download all" gives a zip of every image, and / lists the recent requests."""
    import zipfile

    base = start_service(tmp_path, services, allow_private=True)
    good = image_server.add("/good.jpg", corpus_images(1)[0])
    late = image_server.url("/late.jpg")  # 404 until added below
    source = tmp_path / "products.csv"
    source.write_text(f'S. No.,Product Name,Input Image Urls\n1,Shoe,"{good},{late}"\n')
    page.goto(base + "/")
    page.set_input_files("#file", str(source))
    page.get_by_role("button", name="Upload and compress").click()
    page.wait_for_url(f"{base}/requests/*")
    request_id = page.url.rsplit("/", 1)[1]
    finish_and_check(page, tmp_path, done=1, failed=1)
    retry = page.get_by_role("button", name="Retry failed images")
    expect(retry).to_be_visible()
    image_server.add("/late.jpg", corpus_images(2)[1])
    retry.click()
    expect(page.locator("#counts")).to_contain_text("2 done · 0 failed", timeout=60_000)
    expect(retry).to_be_hidden()
    with page.expect_download() as download_info:
        page.locator("#zip-link").click()
    target = tmp_path / "images.zip"
    download_info.value.save_as(target)
    assert zipfile.ZipFile(target).namelist() == ["1-Shoe-1.jpg", "1-Shoe-2.jpg"]
    page.goto(base + "/")
    recent = page.locator("#recent-list li")
    expect(recent.first).to_contain_text(request_id)
    expect(recent.first).to_contain_text("Completed · 2 done, 0 failed of 2")
