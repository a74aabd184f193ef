"""What the web service does for its own safety (issue 12: findings 6, 7a and 8).

- 6: links come only from IMGCOMPRESS_PUBLIC_URL or a trusted Host; any other Host is a
  400 at upload (and everywhere else), never a stored link, never a 500 later.
- 7a: security headers on every response; images sandboxed; /schema needs no CDN.
- 8: limit messages name their setting, and each form problem has its own code.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from litestar.testing import AsyncTestClient

from imgcompress_core import Settings
from imgcompress_web import create_app
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio

HEADER = "S. No.,Product Name,Input Image Urls\n"
ROOT = Path(__file__).resolve().parents[2]


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    """Settings for one app: a fresh store, loopback allowed, the default host and port."""
    values: dict[str, Any] = {
        "database": tmp_path / "s.sqlite3",
        "allow_private_networks": True,
        "poll_interval": 0.05,
        "cpu_workers": 1,
        **changes,
    }
    return Settings(**values)


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    """The app with default trusted hosts, reached as http://127.0.0.1:8000 (no worker)."""
    app = create_app(settings_for(tmp_path, run_worker=False))
    async with AsyncTestClient(app=app, base_url="http://127.0.0.1:8000") as client:
        yield client


async def upload(client: AsyncTestClient, text: str, **headers: str) -> httpx.Response:  # type: ignore[type-arg]
    """POST a CSV as multipart with extra headers."""
    return await client.post(
        "/api/upload", files={"file": ("p.csv", text.encode(), "text/csv")}, headers=headers
    )


ONE_ROW = f"{HEADER}1,A,https://example.com/a.jpg\n"

# --- 6: the Host header ------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "a,b", "127.0.0.1:8001", "localhost.evil.example:8000", "", "[::2]"]
)
async def test_an_untrusted_host_is_a_400_at_upload(
    client: AsyncTestClient,  # type: ignore[type-arg]
    host: str,
) -> None:
    """Not the configured host:port or a loopback name for it: 400 invalid_host."""
    response = await upload(client, ONE_ROW, Host=host)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "invalid_host" and body["status"] == 400
    assert "IMGCOMPRESS_TRUSTED_HOSTS" in body["detail"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8000", "localhost:8000", "LocalHost:8000", "[::1]:8000"]
)
async def test_the_default_hosts_build_the_links(
    client: AsyncTestClient,  # type: ignore[type-arg]
    host: str,
) -> None:
    """The configured host:port, localhost, 127.0.0.1 and [::1] on its port are trusted,
    and the links of the request are built from the Host it came with."""
    response = await upload(client, ONE_ROW, Host=host)
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]
    status = (await client.get(f"/api/status/{request_id}", headers={"Host": host})).json()
    assert status["outputCsvUrl"] == f"http://{host}/api/requests/{request_id}/output.csv"


async def test_other_endpoints_refuse_untrusted_hosts_but_probes_do_not(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """Pages and the API answer 400 to an untrusted Host; health, ready and metrics are
    called by address and answer anyway."""
    evil = {"Host": "evil.example"}
    for path in ("/", "/api/status/x", "/api/requests/x/output.csv", "/samples/products.csv"):
        assert (await client.get(path, headers=evil)).status_code == 400, path
    for path in ("/health", "/ready", "/metrics"):
        assert (await client.get(path, headers=evil)).status_code == 200, path


async def test_trusted_hosts_and_public_url(tmp_path: Path) -> None:
    """IMGCOMPRESS_TRUSTED_HOSTS replaces the defaults (an entry without a port matches any
    port; *.x any subdomain); with IMGCOMPRESS_PUBLIC_URL the links use it whatever the
    Host, and its host is trusted too."""
    settings = settings_for(
        tmp_path, run_worker=False, trusted_hosts="images.example.com, *.cdn.example"
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        for host in ("images.example.com", "Images.Example.com:8443", "a.b.cdn.example"):
            response = await upload(client, ONE_ROW, Host=host)
            assert response.status_code == 202, (host, response.text)
        for host in ("127.0.0.1:8000", "cdn.example", "images.example.com.evil", "a,b.cdn.example"):
            assert (await upload(client, ONE_ROW, Host=host)).status_code == 400, host
    anyone = settings.model_copy(update={"trusted_hosts": "*"})
    async with AsyncTestClient(app=create_app(anyone)) as client:
        assert (await upload(client, ONE_ROW, Host="any.example:81")).status_code == 202
        for host in ("a,b", "a b", "x/y"):  # "*" is any well-formed host, never these
            assert (await upload(client, ONE_ROW, Host=host)).status_code == 400, host
    public = settings.model_copy(
        update={"trusted_hosts": "", "public_url": "https://img.example.org/"}
    )
    async with AsyncTestClient(app=create_app(public)) as client:
        response = await upload(client, ONE_ROW, Host="img.example.org")
        assert response.status_code == 202
        request_id = response.json()["requestId"]
        status = await client.get(f"/api/status/{request_id}", headers={"Host": "localhost:8000"})
        assert status.json()["outputCsvUrl"].startswith("https://img.example.org/api/requests/")


async def test_no_untrusted_link_is_stored_and_output_csv_never_500s(
    tmp_path: Path, image_server: LocalServer
) -> None:
    """The reported attack: Host: a,b at upload once made the request's output.csv a 500
    forever. It is refused; a request from a trusted Host completes and its output CSV,
    asked for with any Host, is 200 or 400, never 500."""
    url = image_server.add("/a.jpg", photo())
    text = f"{HEADER}1,A,{url}\n"
    async with AsyncTestClient(
        app=create_app(settings_for(tmp_path)), base_url="http://127.0.0.1:8000"
    ) as client:
        assert (await upload(client, text, Host="a,b")).status_code == 400
        request_id = (await upload(client, text)).json()["requestId"]
        with anyio.fail_after(30):
            while (await client.get(f"/api/status/{request_id}")).json()["status"] == "Pending":
                await anyio.sleep(0.05)
        out = await client.get(f"/api/requests/{request_id}/output.csv")
        assert out.status_code == 200
        rows = list(csv.reader(io.StringIO(out.text)))
        assert rows[1][-1].startswith("http://127.0.0.1:8000/api/images/")
        for host in ("a,b", "evil.example"):
            again = await client.get(
                f"/api/requests/{request_id}/output.csv", headers={"Host": host}
            )
            assert again.status_code == 400


# --- 7a: security headers and /schema ----------------------------------------------------


def _check_common(response: httpx.Response) -> str:
    headers = response.headers
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("x-frame-options") == "DENY", where
    assert headers.get("referrer-policy") == "no-referrer", where
    policy = headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy, where
    return policy


async def test_every_response_has_the_security_headers(
    tmp_path: Path, image_server: LocalServer
) -> None:
    """Pages, API answers, errors, static files, OpenAPI, samples and processed images:
    nosniff, DENY framing, no referrer, and a CSP: self only for HTML, sandboxed and
    loading nothing for anything else (a kept original that is also HTML stays inert)."""
    url = image_server.add("/a.jpg", photo())
    async with AsyncTestClient(
        app=create_app(settings_for(tmp_path)), base_url="http://127.0.0.1:8000"
    ) as client:
        request_id = (await upload(client, f"{HEADER}1,A,{url}\n")).json()["requestId"]
        with anyio.fail_after(30):
            while True:
                status = (await client.get(f"/api/status/{request_id}")).json()
                if status["status"] != "Pending":
                    break
                await anyio.sleep(0.05)
        image_id = status["products"][0]["images"][0]["imageId"]
        responses = [
            await client.get(path)
            for path in (
                "/",
                f"/requests/{request_id}",
                "/static/app.js",
                "/static/style.css",
                "/health",
                "/metrics",
                "/schema",
                "/schema/openapi.json",
                "/samples/products.csv",
                "/samples/images/lamp.png",
                f"/api/status/{request_id}",
                f"/api/requests/{request_id}/output.csv",
                f"/api/images/{image_id}",
                "/api/status/nope",
                "/no/such/page",
            )
        ]
        responses.append(await client.get("/api/upload"))  # 405
        responses.append(await client.get("/", headers={"Host": "evil.example"}))  # 400
        for response in responses:
            policy = _check_common(response)
            if response.headers.get("content-type", "").startswith("text/html"):
                assert "default-src 'self'" in policy and "script-src 'self'" in policy
                assert "unsafe-inline" not in policy and "http" not in policy
            else:
                assert policy.startswith("sandbox; default-src 'none'"), response.request.url
        image = responses[12]
        assert image.status_code == 200 and image.headers["content-type"].startswith("image/")


_EXTERNAL = re.compile(
    r"""<script[^>]*\bsrc\s*=\s*["']?(?:https?:)?//"""
    r"""|<link[^>]*\bhref\s*=\s*["']?(?:https?:)?//"""
    r"""|@import\s+(?:url\()?\s*["']?(?:https?:)?//"""
    r"""|url\(\s*["']?(?:https?:)?//""",
    re.IGNORECASE,
)


async def test_schema_needs_no_external_network(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """/schema is a plain page on this origin; the JSON and YAML documents are served; no
    /schema response loads a script or style from elsewhere (the CDN-based UIs are gone)."""
    page = await client.get("/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "POST /api/upload" in page.text and "<script" not in page.text
    assert (await client.get("/schema/openapi.json")).json()["paths"]["/api/upload"]
    yaml = await client.get("/schema/openapi.yaml")
    assert yaml.status_code == 200 and "/api/upload:" in yaml.text
    for path in (
        "/schema",
        "/schema/",
        "/schema/openapi.json",
        "/schema/openapi.yaml",
        "/schema/openapi.yml",
        "/schema/swagger",
        "/schema/redoc",
        "/schema/elements",
        "/schema/rapidoc",
        "/schema/scalar",
        "/schema/oauth2-redirect.html",
    ):
        response = await client.get(path)
        assert response.status_code in (200, 404), path
        assert not _EXTERNAL.search(response.text), (path, _EXTERNAL.search(response.text))
        policy = response.headers["content-security-policy"]
        assert "http" not in policy, path


# --- 8: messages and codes ---------------------------------------------------------------


async def test_a_huge_cell_names_the_settings(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """A row with 10,000 URLs: the message names max_urls_per_row and max_url_length, not
    the csv module's 'field larger than field limit (131072)'."""
    urls = ",".join(f"https://example.com/{i}.jpg" for i in range(10_000))
    response = await upload(client, f'{HEADER}1,A,"{urls}"\n')
    assert response.status_code == 400
    [problem] = response.json()["problems"]
    assert problem["row"] == 2
    assert "max_urls_per_row (50)" in problem["reason"]
    assert "max_url_length (2048)" in problem["reason"]
    assert "field limit" not in problem["reason"]


async def test_a_long_row_within_raised_limits_is_read(tmp_path: Path) -> None:
    """With max_urls_per_row raised, a cell over the csv module's default cap is read."""
    settings = settings_for(tmp_path, run_worker=False, max_urls_per_row=200, max_url_length=2048)
    urls = ",".join(f"https://example.com/{i:04d}/{'x' * 900}.jpg" for i in range(150))
    assert len(urls) > 131_072
    async with AsyncTestClient(
        app=create_app(settings), base_url="http://127.0.0.1:8000"
    ) as client:
        response = await upload(client, f'{HEADER}1,A,"{urls}"\n')
        assert response.status_code == 202, response.text[:500]


async def test_two_file_parts_say_exactly_one(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """Two parts named file: the message says there must be exactly one."""
    files = [
        ("file", ("a.csv", ONE_ROW.encode(), "text/csv")),
        ("file", ("b.csv", ONE_ROW.encode(), "text/csv")),
    ]
    response = await client.post("/api/upload", files=files)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_form"
    assert "exactly one" in body["problems"][0]["reason"]
    assert "must be a file part" not in body["detail"]


def _multipart(parts: list[tuple[str, str, bytes]]) -> bytes:
    body = b""
    for headers, name, value in parts:
        body += f'--xyz\r\nContent-Disposition: form-data; name="{name}"{headers}\r\n\r\n'.encode()
        body += value + b"\r\n"
    return body + b"--xyz--\r\n"


async def test_form_limits_have_their_own_codes(
    client: AsyncTestClient,  # type: ignore[type-arg]
) -> None:
    """An oversized part header is form_part_header_too_large; too many parts is still
    too_many_form_parts."""
    content_type = {"Content-Type": "multipart/form-data; boundary=xyz"}
    long_header = _multipart([(f'; filename="{"a" * 5000}.csv"', "file", ONE_ROW.encode())])
    response = await client.post("/api/upload", content=long_header, headers=content_type)
    assert response.status_code == 413
    assert response.json()["code"] == "form_part_header_too_large"
    many = _multipart([("", f"f{i}", b"x") for i in range(40)])
    response = await client.post("/api/upload", content=many, headers=content_type)
    assert response.status_code == 413
    assert response.json()["code"] == "too_many_form_parts"


def test_docs_give_the_real_webhook_attempts_and_authentication() -> None:
    """docs/security.md gives the real number of webhook attempts; docs/operations.md
    does not say the API has no authentication."""
    security = (ROOT / "docs" / "security.md").read_text()
    [row] = [line for line in security.splitlines() if "IMGCOMPRESS_WEBHOOK_MAX_ATTEMPTS" in line]
    assert f"| {Settings().webhook_max_attempts} |" in row
    operations = (ROOT / "docs" / "operations.md").read_text().lower()
    assert "no authentication" not in operations
    assert "imgcompress_api_keys" in operations
