"""SSRF: with production settings, no blocked target ever gets a connection.

Every case runs the guarded fetcher as configured in production
(``allow_private_networks=False``) with a fake resolver. Canary listeners on 127.0.0.1,
127.0.0.2, 127.0.0.3 and ::1 (one port) record every connection; the socket layer under
the pin records every attempt and never touches a non-loopback address. A blocked
target must give a FetchError with the expected code, and neither record may grow.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from security_kit import (
    PUBLIC_V4,
    PUBLIC_V4_B,
    PUBLIC_V6,
    Canaries,
    Certificate,
    Conn,
    FakeResolver,
    RawServer,
    RecordingBackend,
    Router,
    ipv6_loopback_available,
    is_loopback,
    reply,
    response,
)

from imgcompress_core.errors import FetchError
from imgcompress_core.fetch import FetchOptions, HttpxFetcher
from imgcompress_core.ports import Fetched

pytestmark = pytest.mark.anyio

INVALID, BLOCKED, DNS = "invalid_url", "blocked_destination", "dns_failure"

NAMES: dict[str, list[str]] = {
    "loopback.example": ["127.0.0.1"],
    "loopback2.example": ["127.0.0.2"],
    "localhost": ["127.0.0.1"],
    "private10.example": ["10.0.0.5"],
    "private172.example": ["172.20.0.1"],
    "private192.example": ["192.168.0.10"],
    "cgnat.example": ["100.64.0.7"],
    "linklocal.example": ["169.254.10.10"],
    "metadata.example": ["169.254.169.254"],
    "metadata.google.internal": ["169.254.169.254"],
    "ecs.example": ["169.254.170.2"],
    "alibaba.example": ["100.100.100.200"],
    "azure.example": ["168.63.129.16"],
    "aws6.example": ["fd00:ec2::254"],
    "ula.example": ["fd12:3456::1"],
    "linklocal6.example": ["fe80::1"],
    "v6loopback.example": ["::1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "mapped-hex.example": ["::ffff:7f00:1"],
    "mapped-metadata.example": ["::ffff:169.254.169.254"],
    "nat64.example": ["64:ff9b::7f00:1"],
    "nat64-private.example": ["64:ff9b::a00:1"],
    "sixtofour.example": ["2002:7f00:1::"],
    "compat.example": ["::127.0.0.1"],
    "teredo.example": ["2001:0:4136:e378:8000:63bf:3fff:fdd2"],
    "zero.example": ["0.0.0.0"],
    "unspecified6.example": ["::"],
    "multicast.example": ["224.0.0.251"],
    "broadcast.example": ["255.255.255.255"],
    "reserved.example": ["240.0.0.1"],
    "testnet.example": ["192.0.2.10"],
    "mixed.example": [PUBLIC_V4, "127.0.0.1"],
    "mixed-last.example": [PUBLIC_V4, PUBLIC_V4_B, "10.1.2.3"],
    "mixed6.example": [PUBLIC_V6, "::1"],
    "mixed-family.example": [PUBLIC_V6, "127.0.0.1"],
    "garbage.example": ["not-an-address"],
    "empty.example": [],
}

LITERALS: list[tuple[str, str]] = [
    ("http://127.0.0.1:{port}/a.jpg", BLOCKED),
    ("http://127.0.0.2:{port}/a.jpg", BLOCKED),
    ("http://127.255.255.254:{port}/", BLOCKED),
    ("HTTP://127.0.0.1:{port}/", BLOCKED),
    ("http://2130706433:{port}/", INVALID),  # decimal
    ("http://0177.0.0.1:{port}/", INVALID),  # octal
    ("http://0x7f.1:{port}/", INVALID),  # hex, short
    ("http://0x7f000001:{port}/", INVALID),
    ("http://0x7f.0.0.1:{port}/", INVALID),
    ("http://127.1:{port}/", INVALID),  # short
    ("http://127.0.1:{port}/", INVALID),
    ("http://0:{port}/", INVALID),
    ("http://127.0.0.1.:{port}/", INVALID),  # trailing dot
    ("http://[::1]:{port}/", BLOCKED),
    ("http://[0:0:0:0:0:0:0:1]:{port}/", BLOCKED),
    ("http://[::ffff:127.0.0.1]:{port}/", BLOCKED),
    ("http://[::ffff:7f00:1]:{port}/", BLOCKED),
    ("http://[2002:7f00:1::]:{port}/", BLOCKED),  # 6to4
    ("http://[64:ff9b::7f00:1]:{port}/", BLOCKED),  # NAT64
    ("http://[::127.0.0.1]:{port}/", BLOCKED),  # IPv4-compatible
    ("http://0.0.0.0:{port}/", BLOCKED),
    ("http://[::]:{port}/", BLOCKED),
    ("http://[fe80::1%25lo]:{port}/", INVALID),  # zone id
    ("http://10.0.0.1/", BLOCKED),
    ("http://172.16.0.1/", BLOCKED),
    ("http://192.168.1.1/", BLOCKED),
    ("http://100.64.0.1/", BLOCKED),  # CGNAT
    ("http://169.254.1.1/", BLOCKED),  # link-local
    ("http://169.254.169.254/latest/meta-data/", BLOCKED),
    ("http://[fd00:ec2::254]/latest/meta-data/", BLOCKED),
    ("http://100.100.100.200/latest/meta-data/", BLOCKED),
    ("http://168.63.129.16/machine?comp=goalstate", BLOCKED),  # public, but Azure's
    ("http://[::ffff:a9fe:a9fe]/", BLOCKED),
    ("http://[64:ff9b::a9fe:a9fe]/", BLOCKED),
    ("http://[2002:a9fe:a9fe::]/", BLOCKED),
    ("http://224.0.0.1/", BLOCKED),
    ("http://255.255.255.255/", BLOCKED),
    ("http://240.0.0.1/", BLOCKED),
    ("http://198.18.0.1/", BLOCKED),
    ("http://192.0.2.1/", BLOCKED),
    ("http://[2001:db8::1]/", BLOCKED),
    ("http://[ff02::1]/", BLOCKED),
    ("http://[fc00::1]/", BLOCKED),
    ("http://[fe80::1]/", BLOCKED),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", BLOCKED),  # Teredo
]

ODD: list[tuple[str, str]] = [
    ("http://user:pass@loopback.example:{port}/", INVALID),
    ("http://user@" + "images.example/", INVALID),
    ("http://images.example@127.0.0.1:{port}/", INVALID),
    ("http://@127.0.0.1:{port}/", INVALID),
    ("http://127.0.0.1:{port}#@images.example/", BLOCKED),
    ("http://127.0.0.1:{port}\\@images.example/", INVALID),
    ("http://images.example\\@127.0.0.1:{port}/", INVALID),
    ("http:\\\\127.0.0.1:{port}\\", INVALID),
    ("http://%31%32%37.0.0.1:{port}/", INVALID),
    ("http://127%2E0%2E0%2E1:{port}/", INVALID),
    ("http://loopback%2Eexample:{port}/", INVALID),
    ("http://127\u30020\u30020\u30021:{port}/", INVALID),  # ideographic full stops
    ("http://127\uff0e0\uff0e0\uff0e1:{port}/", INVALID),  # fullwidth full stops
    ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:{port}/", INVALID),
    ("http://\u2460\u2461\u2466.0.0.1:{port}/", INVALID),  # circled digits
    ("http://loop\u200bback.example:{port}/", INVALID),  # zero-width space
    ("http://loopback.example\u00ad:{port}/", INVALID),  # soft hyphen
    ("http://xn--zz.example/", INVALID),  # bogus punycode
    ("http://loopback.example%00.images.example:{port}/", INVALID),
    ("http://loopback.example\x00:{port}/", INVALID),
    ("http://loopback.example\t:{port}/", INVALID),
    ("http://loopback.example\r\n:{port}/", INVALID),
    ("http:// loopback.example:{port}/", INVALID),
    ("http://loopback.example:{port} /", INVALID),
    ("http://loopback.example:0/", INVALID),
    ("http://loopback.example:99999/", INVALID),
    ("http://loopback.example:-1/", INVALID),
    ("http://loopback.example:+{port}/", INVALID),
    ("http://loopback.example:/", INVALID),
    ("http://:{port}/", INVALID),
    ("http:///", INVALID),
    ("http://-loopback.example/", INVALID),
    ("http://" + "a" * 64 + ".example/", INVALID),
    ("file:///etc/passwd", INVALID),
    ("gopher://127.0.0.1:{port}/_GET%20/", INVALID),
    ("ftp://127.0.0.1:{port}/", INVALID),
    ("dict://127.0.0.1:{port}/", INVALID),
    ("ws://127.0.0.1:{port}/", INVALID),
    ("javascript:alert(1)", INVALID),
    ("data:image/png;base64,iVBORw0KGgo=", INVALID),
    ("//127.0.0.1:{port}/", INVALID),
    ("127.0.0.1:{port}", INVALID),
    ("http:127.0.0.1:{port}", INVALID),
    ("http:/127.0.0.1:{port}/", INVALID),
    ("", INVALID),
]

CASES = (
    LITERALS
    + ODD
    + [
        (f"http://{name}:{{port}}/a.jpg", DNS if not answers else BLOCKED)
        for name, answers in NAMES.items()
    ]
    + [("http://unknown.example:{port}/", DNS)]
)


def production(backend: RecordingBackend | None = None, **options: Any) -> HttpxFetcher:
    """The fetcher as the service builds it by default, with the fake resolver."""
    return HttpxFetcher(
        FetchOptions(**options),
        resolver=FakeResolver(dict(NAMES)),
        network_backend=backend,
    )


async def expect_refusal(fetcher: HttpxFetcher, url: str, code: str) -> FetchError:
    try:
        with pytest.raises(FetchError) as caught:
            await fetcher.fetch(url)
    finally:
        await fetcher.aclose()
    assert caught.value.code == code, caught.value.message
    assert caught.value.message  # a human sentence, always
    if code != DNS:
        assert not caught.value.retryable
    return caught.value


@pytest.mark.parametrize(("template", "code"), CASES, ids=[c[0][:60] for c in CASES])
async def test_blocked_target_gets_no_connection(
    template: str, code: str, canaries: Canaries
) -> None:
    backend = RecordingBackend()
    url = template.replace("{port}", str(canaries.port))
    await expect_refusal(production(backend), url, code)
    assert backend.attempts == []
    assert canaries.connections == 0


NOT_LOOPBACK_IF_REACHED = ("2002:", "64:ff9b", "[::127.", "fe80")


def _only_loopback_if_reached(template: str) -> bool:
    """Would a broken guard send this case to loopback only (safe with real sockets)?"""
    if "{port}" not in template or any(m in template for m in NOT_LOOPBACK_IF_REACHED):
        return False
    for name, answers in NAMES.items():
        if f"//{name}:" in template:
            return bool(answers) and all(
                is_loopback(a) or a.startswith("::ffff:127.") for a in answers
            )
    return True


LOOPBACK_ONLY = [case for case in CASES if _only_loopback_if_reached(case[0])]


@pytest.mark.parametrize(
    ("template", "code"), LOOPBACK_ONLY, ids=[c[0][:60] for c in LOOPBACK_ONLY]
)
async def test_blocked_target_gets_no_connection_with_real_sockets(
    template: str, code: str, canaries: Canaries
) -> None:
    """The same, with the production socket layer (only for targets that are loopback)."""
    url = template.replace("{port}", str(canaries.port))
    await expect_refusal(production(), url, code)
    assert canaries.connections == 0


async def test_the_canary_does_record_a_connection(canaries: Canaries) -> None:
    """The battery is not vacuous: with the guard relaxed, the same URL reaches the canary."""
    fetcher = production(allow_private_networks=True)
    try:
        fetched = await fetcher.fetch(f"http://loopback.example:{canaries.port}/a.jpg")
    finally:
        await fetcher.aclose()
    assert fetched.data == b"canary"
    assert canaries.connections == 1


async def test_refusals_name_the_reason() -> None:
    error = await expect_refusal(production(), "http://metadata.example/", BLOCKED)
    assert "169.254.169.254" in error.message and "metadata" in error.message
    error = await expect_refusal(production(), "http://mixed-last.example/", BLOCKED)
    assert "10.1.2.3" in error.message and "allow_private_networks" in error.message


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://azure.example/",
        "http://aws6.example/",
        "http://[::ffff:169.254.169.254]/",
        "http://zero.example/",
        "http://multicast.example/",
        "http://teredo.example/",
    ],
)
async def test_metadata_and_nonsense_stay_refused_with_private_networks_allowed(url: str) -> None:
    backend = RecordingBackend()
    await expect_refusal(production(backend, allow_private_networks=True), url, BLOCKED)
    assert backend.attempts == []


# DNS rebinding: the connection goes to the address that was vetted, nothing else


async def test_rebinding_cannot_switch_the_address() -> None:
    """Vetted 127.0.0.2, then the name rebinds to 127.0.0.3: only .2 sees a connection."""
    body = response(200, b"vetted", {"Content-Type": "image/jpeg"})
    vetted = RawServer(reply(body), host="127.0.0.2")
    rebound = RawServer(reply(body), host="127.0.0.3", port=vetted.port)
    resolver = FakeResolver({"rebind.example": [["127.0.0.2"], ["127.0.0.3"]]})
    fetcher = HttpxFetcher(FetchOptions(allow_private_networks=True), resolver=resolver)
    try:
        fetched = await fetcher.fetch(f"http://rebind.example:{vetted.port}/a.jpg")
    finally:
        await fetcher.aclose()
        vetted.stop()
        rebound.stop()
    assert fetched.data == b"vetted"
    assert (vetted.connections, rebound.connections) == (1, 0)
    assert resolver.calls == ["rebind.example"]  # asked once, by the guard; httpx never asks


async def test_rebinding_to_loopback_after_a_public_answer(canaries: Canaries) -> None:
    """Production settings: vetted as public, rebinds to 127.0.0.1: the canary sees nothing."""
    router = Router()
    router.add("/a.jpg", b"public")
    server = RawServer(router, host="127.0.0.2")
    port = server.port
    resolver = FakeResolver({"rebind.example": [[PUBLIC_V4], ["127.0.0.1"]]})
    backend = RecordingBackend({PUBLIC_V4: "127.0.0.2"})
    fetcher = HttpxFetcher(FetchOptions(), resolver=resolver, network_backend=backend)
    try:
        fetched = await fetcher.fetch(f"http://rebind.example:{port}/a.jpg")
    finally:
        await fetcher.aclose()
        server.stop()
    assert fetched.data == b"public"
    assert backend.attempts == [(PUBLIC_V4, port)]
    assert router.header(0, "Host") == f"rebind.example:{port}"
    assert canaries.connections == 0


async def test_every_redirect_hop_is_resolved_and_vetted_again(canaries: Canaries) -> None:
    """A redirect back to the same name is re-resolved: the rebound private answer is refused."""
    router = Router()
    router.add("/first", b"", status=302, Location="/second")
    router.add("/second", b"never")
    server = RawServer(router, host="127.0.0.2")
    resolver = FakeResolver({"rebind.example": [[PUBLIC_V4], ["127.0.0.1"]]})
    backend = RecordingBackend({PUBLIC_V4: "127.0.0.2"})
    fetcher = HttpxFetcher(FetchOptions(), resolver=resolver, network_backend=backend)
    try:
        await expect_refusal(fetcher, f"http://rebind.example:{server.port}/first", BLOCKED)
    finally:
        server.stop()
    assert resolver.calls == ["rebind.example", "rebind.example"]
    assert (router.hits("/first"), router.hits("/second")) == (1, 0)
    assert canaries.connections == 0


async def test_a_connection_without_a_vetted_pin_is_refused(canaries: Canaries) -> None:
    """Fail closed: the pool cannot open a socket that the guard did not vet and pin."""
    fetcher = production(allow_private_networks=True)
    try:
        request = httpx.Request("GET", f"http://127.0.0.1:{canaries.port}/")
        with pytest.raises(httpx.ConnectError, match="unvetted"):
            await fetcher._guard._transport.handle_async_request(request)
    finally:
        await fetcher.aclose()
    assert canaries.connections == 0


async def test_all_vetted_addresses_are_tried_in_order() -> None:
    server = RawServer(host="127.0.0.2")
    resolver = FakeResolver({"two.example": [PUBLIC_V4, PUBLIC_V4_B]})
    backend = RecordingBackend({PUBLIC_V4_B: "127.0.0.2"})  # the first address is unreachable
    fetcher = HttpxFetcher(FetchOptions(), resolver=resolver, network_backend=backend)
    try:
        fetched = await fetcher.fetch(f"http://two.example:{server.port}/")
    finally:
        await fetcher.aclose()
        server.stop()
    assert fetched.data == b"canary"
    assert backend.attempts == [(PUBLIC_V4, server.port), (PUBLIC_V4_B, server.port)]


async def test_keep_alive_connections_are_reused_per_host() -> None:
    router = Router()
    router.add("/a.jpg", b"a")
    router.add("/b.jpg", b"b")
    server = RawServer(router)
    backend = RecordingBackend({PUBLIC_V4: "127.0.0.1"})
    resolver = FakeResolver({"images.example": [PUBLIC_V4]})
    fetcher = HttpxFetcher(FetchOptions(), resolver=resolver, network_backend=backend)
    try:
        for name in ("a", "b", "a"):
            fetched = await fetcher.fetch(f"http://images.example:{server.port}/{name}.jpg")
            assert fetched.data == name.encode()
    finally:
        await fetcher.aclose()
        server.stop()
    assert len(backend.attempts) == 1
    assert server.connections == 1
    assert [router.header(i, "Accept-Encoding") for i in range(3)] == ["identity"] * 3
    assert router.header(0, "Cookie") is None


# TLS: SNI and the certificate check use the real name while the socket goes to the pin


def echo_head(conn: Conn) -> None:
    """Answer with the request head as the body."""
    head = conn.read_head()
    conn.send(response(200, head, {"Content-Type": "image/jpeg"}))


async def tls_fetch(certificate: Certificate, name: str) -> tuple[RawServer, Fetched | FetchError]:
    server = RawServer(echo_head, tls=certificate.server_context())
    resolver = FakeResolver({name: [PUBLIC_V4]})
    backend = RecordingBackend({PUBLIC_V4: "127.0.0.1"})
    fetcher = HttpxFetcher(
        FetchOptions(),
        resolver=resolver,
        network_backend=backend,
        ssl_context=certificate.client_context(),
    )
    outcome: Fetched | FetchError
    try:
        outcome = await fetcher.fetch(f"https://{name}:{server.port}/a.jpg")
    except FetchError as exc:
        outcome = exc
    finally:
        await fetcher.aclose()
        server.stop()
    return server, outcome


async def test_tls_uses_the_real_name_for_sni_and_the_certificate(
    certificate: Certificate,
) -> None:
    server, outcome = await tls_fetch(certificate, "images.example")
    assert isinstance(outcome, Fetched), outcome
    assert server.sni == ["images.example"]
    head = outcome.data
    assert f"Host: images.example:{server.port}".encode() in head


async def test_tls_certificate_for_another_name_is_refused(certificate: Certificate) -> None:
    server, outcome = await tls_fetch(certificate, "other.example")
    assert isinstance(outcome, FetchError)
    assert outcome.code == "connection_failed"
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.message or "certificate" in outcome.message
    assert server.sni == ["other.example"]


# Relaxing: the allow-list and explicit proxies; environment proxies are ignored


async def test_allow_list_restricts_and_never_bypasses_the_address_check(
    canaries: Canaries,
) -> None:
    router = Router()
    router.add("/a.jpg", b"ok")
    server = RawServer(router)
    port = server.port
    try:
        resolver = FakeResolver(
            {
                "images.example": [PUBLIC_V4],
                "a.cdn.example": [PUBLIC_V4],
                "evilcdn.example": [PUBLIC_V4],
                "cdn.example": [PUBLIC_V4],
                "internal.cdn.example": ["10.0.0.1"],
            }
        )
        backend = RecordingBackend({PUBLIC_V4: "127.0.0.1"})
        options = FetchOptions(allowed_hosts=frozenset({"images.example", "*.cdn.example"}))
        fetcher = HttpxFetcher(options, resolver=resolver, network_backend=backend)
        try:
            assert (await fetcher.fetch(f"http://images.example:{port}/a.jpg")).data == b"ok"
            assert (await fetcher.fetch(f"http://A.CDN.example:{port}/a.jpg")).data == b"ok"
            for refused in ("evilcdn.example", "cdn.example", "internal.cdn.example"):
                with pytest.raises(FetchError) as caught:
                    await fetcher.fetch(f"http://{refused}:{port}/a.jpg")
                assert caught.value.code == BLOCKED
            assert "allowed_hosts" in str(await _refusal(fetcher, f"http://x.example:{port}/"))
        finally:
            await fetcher.aclose()
    finally:
        server.stop()
    assert canaries.connections == 0


async def _refusal(fetcher: HttpxFetcher, url: str) -> FetchError:
    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(url)
    return caught.value


async def test_environment_proxies_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    router = Router()
    router.add("/a.jpg", b"direct")
    image_server = RawServer(router)
    proxy = RawServer()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, proxy.url())
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    fetcher = HttpxFetcher(FetchOptions(allow_private_networks=True))
    try:
        assert (await fetcher.fetch(image_server.url("/a.jpg"))).data == b"direct"
    finally:
        await fetcher.aclose()
        proxy.stop()
        image_server.stop()
    assert proxy.connections == 0


async def test_an_explicit_proxy_is_used_and_destinations_are_still_vetted() -> None:
    heads: list[bytes] = []

    def proxy_handler(conn: Conn) -> None:
        heads.append(conn.read_head())
        conn.send(response(200, b"via proxy", {"Content-Type": "image/jpeg"}))

    proxy = RawServer(proxy_handler)
    resolver = FakeResolver({"images.example": [PUBLIC_V4], "inside.example": ["10.0.0.8"]})
    fetcher = HttpxFetcher(FetchOptions(proxy=proxy.url()), resolver=resolver)
    try:
        assert (await fetcher.fetch("http://images.example/a.jpg")).data == b"via proxy"
        assert heads[0].startswith(b"GET http://images.example/a.jpg HTTP/1.1")
        refused = await _refusal(fetcher, "http://inside.example/a.jpg")
        assert refused.code == BLOCKED
        refused = await _refusal(fetcher, "http://127.0.0.1/a.jpg")
        assert refused.code == BLOCKED
    finally:
        await fetcher.aclose()
        proxy.stop()
    assert proxy.connections == 1


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("host", ["[::1]", "[0:0:0:0:0:0:0:1]", "v6.example"])
async def test_ipv6_destinations_are_pinned_too(host: str) -> None:
    """With private networks allowed (tests), IPv6 literals and AAAA answers connect."""
    server = RawServer(host="::1")
    resolver = FakeResolver({"v6.example": ["::1"]})
    fetcher = HttpxFetcher(FetchOptions(allow_private_networks=True), resolver=resolver)
    try:
        fetched = await fetcher.fetch(f"http://{host}:{server.port}/a.jpg")
    finally:
        await fetcher.aclose()
        server.stop()
    assert fetched.data == b"canary"
    assert server.connections == 1
