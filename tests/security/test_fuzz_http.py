"""Hypothesis against the HTTP API: whatever a client sends, the answer is never a 500.

The app runs with its real lifespan (SQLite, no worker, so nothing is fetched) behind
Litestar's test client; every answer must be a documented status with problem details
for errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from imgcompress_core import Settings
from imgcompress_web import create_app

HEADER = b"S. No.,Product Name,Input Image Urls\n"
ALLOWED = {200, 202, 204, 304, 400, 401, 404, 405, 409, 413, 415, 422}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:  # type: ignore[type-arg]
    """One app for the whole module: hypothesis calls it thousands of times."""
    folder: Path = tmp_path_factory.mktemp("fuzz-http")
    app_settings = Settings(
        database=folder / "fuzz.sqlite3",
        run_worker=False,
        max_upload_bytes=20_000,
        trusted_hosts="testserver.local",  # the test client's Host
    )
    with TestClient(app=create_app(app_settings)) as client:
        yield client


def check(response) -> None:  # type: ignore[no-untyped-def]
    """A documented status; errors are problem details."""
    assert response.status_code in ALLOWED, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == response.status_code


csv_like = st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=1000).map(lambda t: HEADER + t.encode("utf-8", "surrogatepass")),
    st.lists(
        st.tuples(st.text(max_size=8), st.text(max_size=20), st.text(max_size=80)),
        max_size=5,
    ).map(lambda rows: HEADER + "".join(f'{a},{b},"{c}"\n' for a, b, c in rows).encode()),
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    csv=csv_like,
    webhook=st.one_of(st.none(), st.text(max_size=300)),
    key=st.one_of(st.none(), header_text),
    filename=st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'),
        max_size=40,
    ),
)
def test_upload_never_500s(
    client: TestClient,  # type: ignore[type-arg]
    csv: bytes,
    webhook: str | None,
    key: str | None,
    filename: str,
) -> None:
    """Random CSVs, webhook URLs, Idempotency-Keys and file names."""
    data = {"webhook_url": webhook} if webhook is not None else None
    headers = {"Idempotency-Key": key} if key is not None else {}
    response = client.post(
        "/api/upload",
        files={"file": (filename or "f.csv", csv, "text/csv")},
        data=data,
        headers=headers,
    )
    check(response)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD"]),
    path=st.sampled_from(
        ["/api/status/{}", "/api/requests/{}/output.csv", "/api/images/{}", "/api/requests/{}"]
    ),
    ident=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
        min_size=1,
        max_size=60,
    ),
    if_none_match=st.one_of(st.none(), header_text),
)
def test_lookups_never_500(
    client: TestClient,  # type: ignore[type-arg]
    method: str,
    path: str,
    ident: str,
    if_none_match: str | None,
) -> None:
    """Random ids, methods and conditional headers on every id-taking endpoint."""
    headers = {"If-None-Match": if_none_match} if if_none_match is not None else {}
    response = client.request(method, path.format(ident), headers=headers)
    if method == "HEAD":
        assert response.status_code < 500
        return
    check(response)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=3000),
    content_type=st.sampled_from(
        [
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "application/json",
            "text/csv",
            "application/x-www-form-urlencoded",
        ]
    ),
)
def test_raw_bodies_never_500(
    client: TestClient,  # type: ignore[type-arg]
    body: bytes,
    content_type: str,
) -> None:
    """Malformed multipart and other content types to the upload endpoint."""
    response = client.post("/api/upload", content=body, headers={"Content-Type": content_type})
    check(response)
