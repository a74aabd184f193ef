"""SSRF through redirects: every hop is parsed, resolved, vetted and pinned like the first.

The first hop is a "public" image server: a fake resolver gives ``images.example`` a
public-looking address and the socket layer routes that one address to a loopback
listener (nothing else leaves loopback). The server then redirects into private space,
to odd schemes, in loops and in long chains, with production settings throughout.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from security_kit import PUBLIC_V4, Canaries, FakeResolver, RawServer, RecordingBackend, Router

from imgcompress_core.errors import FetchError
from imgcompress_core.fetch import FetchOptions, HttpxFetcher

pytestmark = pytest.mark.anyio

INVALID, BLOCKED = "invalid_url", "blocked_destination"


class Site:
    """The public-looking first hop and what it saw."""

    def __init__(self) -> None:
        self.router = Router()
        self.server = RawServer(self.router, host="127.0.0.2")
        self.port = self.server.port
        self.resolver = FakeResolver(
            {
                "images.example": [PUBLIC_V4],
                "localhost": ["127.0.0.1"],
                "inside.example": ["10.0.0.5"],
                "metadata.google.internal": ["169.254.169.254"],
            }
        )
        self.backend = RecordingBackend({PUBLIC_V4: "127.0.0.2"})

    def url(self, path: str) -> str:
        return f"http://images.example:{self.port}{path}"

    def fetcher(self, **options: int) -> HttpxFetcher:
        return HttpxFetcher(
            FetchOptions(**options),  # type: ignore[arg-type]
            resolver=self.resolver,
            network_backend=self.backend,
        )

    async def fetch(self, path: str, **options: int) -> FetchError | bytes:
        fetcher = self.fetcher(**options)
        try:
            return (await fetcher.fetch(self.url(path))).data
        except FetchError as exc:
            return exc
        finally:
            await fetcher.aclose()

    def only_the_public_address_was_contacted(self) -> bool:
        return {address for address, _ in self.backend.attempts} <= {PUBLIC_V4}


@pytest.fixture
def site() -> Iterator[Site]:
    built = Site()
    try:
        yield built
    finally:
        built.server.stop()


TARGETS = [
    ("http://127.0.0.1:{c}/x", BLOCKED),
    ("https://127.0.0.1:{c}/x", BLOCKED),
    ("http://[::1]:{c}/", BLOCKED),
    ("http://[::ffff:127.0.0.1]:{c}/", BLOCKED),
    ("http://localhost:{c}/", BLOCKED),
    ("http://inside.example:{c}/", BLOCKED),
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", BLOCKED),
    ("http://metadata.google.internal/computeMetadata/v1/", BLOCKED),
    ("http://[fd00:ec2::254]/latest/api/token", BLOCKED),
    ("//127.0.0.1:{c}/scheme-relative", BLOCKED),
    ("http://2130706433:{c}/", INVALID),
    ("http://0x7f.1:{c}/", INVALID),
    ("http://127.1:{c}/", INVALID),
    ("/\\127.0.0.1:{c}/", INVALID),
    ("http://127.0.0.1:{c}\t/", INVALID),
    ("http://user:pw@images.example/", INVALID),
    ("file:///etc/passwd", INVALID),
    ("gopher://127.0.0.1:{c}/_GET%20/", INVALID),
    ("ftp://images.example/x", INVALID),
    ("javascript:alert(1)", INVALID),
    ("data:image/jpeg;base64,AAAA", INVALID),
    ("http://images.example:0/", INVALID),
]


@pytest.mark.parametrize(("location", "code"), TARGETS, ids=[t[0][:50] for t in TARGETS])
async def test_redirect_into_forbidden_space_opens_no_connection(
    location: str, code: str, site: Site, canaries: Canaries
) -> None:
    site.router.add("/go", b"", status=302, Location=location.replace("{c}", str(canaries.port)))
    outcome = await site.fetch("/go")
    assert isinstance(outcome, FetchError)
    assert outcome.code == code, outcome.message
    assert not outcome.retryable
    if code == INVALID:
        assert "redirected" in outcome.message
    assert site.router.hits("/go") == 1
    assert site.only_the_public_address_was_contacted()
    assert canaries.connections == 0


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_every_redirect_status_is_vetted(status: int, site: Site, canaries: Canaries) -> None:
    site.router.add("/go", b"", status=status, Location=f"http://127.0.0.1:{canaries.port}/")
    outcome = await site.fetch("/go")
    assert isinstance(outcome, FetchError) and outcome.code == BLOCKED
    assert canaries.connections == 0


async def test_an_allowed_redirect_chain_is_followed(site: Site) -> None:
    site.router.add("/r0", b"", status=301, Location="/r1")
    site.router.add("/r1", b"", status=307, Location=site.url("/img"))
    site.router.add("/img", b"picture")
    assert await site.fetch("/r0") == b"picture"
    assert [site.router.hits(p) for p in ("/r0", "/r1", "/img")] == [1, 1, 1]


async def test_a_redirect_to_itself_is_a_loop(site: Site) -> None:
    site.router.add("/loop", b"", status=302, Location="/loop")
    outcome = await site.fetch("/loop")
    assert isinstance(outcome, FetchError) and outcome.code == "too_many_redirects"
    assert "loop" in outcome.message
    assert site.router.hits("/loop") == 1


async def test_a_two_step_loop_is_cut(site: Site) -> None:
    site.router.add("/a", b"", status=302, Location="/b")
    site.router.add("/b", b"", status=302, Location=site.url("/a"))
    outcome = await site.fetch("/a")
    assert isinstance(outcome, FetchError) and outcome.code == "too_many_redirects"
    assert (site.router.hits("/a"), site.router.hits("/b")) == (1, 1)


@pytest.mark.parametrize("limit", [0, 1, 5])
async def test_redirects_are_bounded(limit: int, site: Site) -> None:
    for i in range(10):
        site.router.add(f"/r{i}", b"", status=302, Location=f"/r{i + 1}")
    outcome = await site.fetch("/r0", max_redirects=limit)
    assert isinstance(outcome, FetchError) and outcome.code == "too_many_redirects"
    assert f"more than {limit} redirects (max_redirects)" in outcome.message
    assert len(site.router.heads) == limit + 1


async def test_a_redirect_without_location_is_an_upstream_error(site: Site) -> None:
    site.router.add("/go", b"", status=302)
    outcome = await site.fetch("/go")
    assert isinstance(outcome, FetchError) and outcome.code == "upstream_http_302"


async def test_a_redirect_off_the_allow_list_is_refused(site: Site) -> None:
    site.resolver.set("elsewhere.example", [PUBLIC_V4])
    site.router.add("/go", b"", status=302, Location=f"http://elsewhere.example:{site.port}/")
    fetcher = HttpxFetcher(
        FetchOptions(allowed_hosts=frozenset({"images.example"})),
        resolver=site.resolver,
        network_backend=site.backend,
    )
    try:
        with pytest.raises(FetchError) as caught:
            await fetcher.fetch(site.url("/go"))
    finally:
        await fetcher.aclose()
    assert caught.value.code == BLOCKED and "allowed_hosts" in caught.value.message
    assert len(site.router.heads) == 1
