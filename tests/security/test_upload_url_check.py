"""One URL check at upload and at fetch (issue 12, finding 7c).

Image URLs used to be held at upload only to a light syntax check, so ``127.1`` or
``0x7f000001`` were accepted and failed later in the worker. Now the manifest runs the
fetcher's own rules that need no DNS (:func:`check_destination`): a bad URL is a 400 at
upload naming its row and column, and the worker refuses nothing the upload accepted
except on what DNS or the server say.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import AsyncTestClient

from imgcompress_core import Settings
from imgcompress_core._guard import url_refusal
from imgcompress_core.errors import FetchError, ManifestError, ManifestProblem
from imgcompress_core.fetch import check_destination
from imgcompress_core.manifest import URLS_COLUMN, ManifestLimits, parse_manifest
from imgcompress_web import create_app

HEADER = "S. No.,Product Name,Input Image Urls\n"

# Refused whatever allow_private_networks says: odd notations, metadata, user info.
ALWAYS_REFUSED = [
    "http://127.1/a.jpg",
    "http://0x7f000001/a.jpg",
    "http://2130706433/a.jpg",
    "http://0177.0.0.1/a.jpg",
    "http://0x7f.1/a.jpg",
    "http://127.0.0.1./a.jpg",
    "http://%31%32%37.0.0.1/a.jpg",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://0.0.0.0/a.jpg",
    "http://a..b.example/a.jpg",
    "http://-a.example/a.jpg",
    "http://good.example\\@127.0.0.1/a.jpg",
]
# Refused unless allow_private_networks: literal loopback and private addresses.
PRIVATE = [
    "http://127.0.0.1/a.jpg",
    "http://127.0.0.1:8000/a.jpg",
    "http://[::1]/a.jpg",
    "http://[::ffff:127.0.0.1]/a.jpg",
    "http://10.0.0.5/a.jpg",
    "http://192.168.1.1/a.jpg",
    "http://[fe80::1]/a.jpg",
]
ACCEPTED = [
    "https://example.com/a.jpg",
    "HTTPS://Example.COM:8443/p/b.png?size=large#x",
    "https://bücher.example/ä.jpg",
    "http://93.184.216.34/a.jpg",
]


def problems_for(url: str, limits: ManifestLimits = ManifestLimits()) -> list[str]:
    """The reasons parse_manifest gives for a one-row CSV holding ``url``."""
    problems: tuple[ManifestProblem, ...] = ()
    try:
        parse_manifest(f'{HEADER}1,A,"{url}"\n'.encode(), limits)
    except ManifestError as exc:
        problems = exc.problems
    assert all(p.row == 2 and p.column == URLS_COLUMN for p in problems), problems
    return [p.reason for p in problems]


@pytest.mark.parametrize("url", ALWAYS_REFUSED + PRIVATE)
def test_refused_at_upload_by_default(url: str) -> None:
    """The default limits refuse every form the fetcher would refuse without DNS."""
    [reason] = problems_for(url)
    assert "not acceptable" in reason or "must not contain" in reason


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_refused_even_with_private_networks_allowed(url: str) -> None:
    """allow_private_networks admits private addresses, not odd notations or metadata."""
    assert problems_for(url, ManifestLimits(allow_private_networks=True))


@pytest.mark.parametrize("url", PRIVATE + ACCEPTED)
def test_private_literals_pass_when_allowed(url: str) -> None:
    """With private networks allowed (tests, demos) loopback literals are accepted."""
    assert problems_for(url, ManifestLimits(allow_private_networks=True)) == []


@pytest.mark.parametrize("url", ACCEPTED)
def test_public_urls_pass(url: str) -> None:
    """Names and public literals are accepted (names are resolved only when fetched)."""
    assert problems_for(url) == []


def test_the_reason_is_the_fetchers() -> None:
    """The upload names the same rule the fetcher would have failed the image with."""
    url = "http://0x7f000001/a.jpg"
    [reason] = problems_for(url)
    with pytest.raises(FetchError) as caught:
        check_destination(url, allow_private=False)
    assert caught.value.code == "invalid_url"
    assert caught.value.message.removeprefix("the URL is not acceptable: ") in reason
    assert "'0x7f000001' is an IP address in an unusual notation" in reason


def _verdict(url: str, allow_private: bool) -> bool:
    try:
        check_destination(url, allow_private=allow_private)
    except FetchError:
        return False
    return True


hosts = st.sampled_from(
    ["example.com", "Example.COM", "127.0.0.1", "127.1", "[::1]", "0x7f.1", "10.1.2.3",
     "bücher.example", "xn--bcher-kva.example", "a_b.example", "a..b", "", "%41.example",
     "169.254.169.254", "[::ffff:10.0.0.1]", "good@evil.example", "ex ample.com"]
)  # fmt: skip
tails = st.text(alphabet=st.sampled_from(list("/?#abc.%20\\é\u200b\t:@[]")), max_size=12)


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "ftp"]),
    host=hosts,
    port=st.sampled_from(["", ":80", ":0", ":65536", ":+1", ":8443"]),
    tail=tails,
    allow_private=st.booleans(),
)
def test_memoised_check_agrees_with_the_full_check(
    scheme: str, host: str, port: str, tail: str, allow_private: bool
) -> None:
    """url_refusal (memoised per origin, for large CSVs) accepts exactly what
    check_destination, the fetcher's first step, accepts."""
    url = f"{scheme}://{host}{port}{tail}"
    refusal = url_refusal(url, allow_private=allow_private)
    assert (refusal is None) == _verdict(url, allow_private), (url, refusal)


@pytest.mark.anyio
async def test_upload_answers_400_naming_row_and_column(tmp_path: Path) -> None:
    """Through the API: 400 invalid_csv with the row and column of each refused URL."""
    settings = Settings(
        database=tmp_path / "s.sqlite3", run_worker=False, trusted_hosts="testserver.local"
    )
    text = (
        f'{HEADER}1,A,https://example.com/a.jpg\n2,B,"https://example.com/b.jpg,http://127.1/x"\n'
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post(
            "/api/upload", files={"file": ("p.csv", text.encode(), "text/csv")}
        )
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "invalid_csv"
        [problem] = body["problems"]
        assert (problem["row"], problem["column"]) == (3, URLS_COLUMN)
        assert "http://127.1/x" in problem["reason"]
        assert "unusual notation" in problem["reason"]
        loopback = f"{HEADER}1,A,http://127.0.0.1:9/a.jpg\n"
        refused = await client.post(
            "/api/upload", files={"file": ("p.csv", loopback.encode(), "text/csv")}
        )
        assert refused.status_code == 400
        assert "allow_private_networks is off" in refused.json()["problems"][0]["reason"]


@pytest.mark.anyio
async def test_upload_accepts_loopback_when_private_networks_are_allowed(tmp_path: Path) -> None:
    """Tests and demos that turn the guard off explicitly may still use loopback."""
    settings = Settings(
        database=tmp_path / "s.sqlite3",
        run_worker=False,
        allow_private_networks=True,
        trusted_hosts="testserver.local",
    )
    text = f"{HEADER}1,A,http://127.0.0.1:9/a.jpg\n"
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post(
            "/api/upload", files={"file": ("p.csv", text.encode(), "text/csv")}
        )
        assert response.status_code == 202
