"""Property-based fuzzing of the guard: whatever the text, only our own error comes out.

The compressor's counterpart (arbitrary and mutated bytes to ``compress_image`` give a
``CompressedImage`` or a ``CompressionError``, never another exception) lives in
``tests/unit/test_compress.py``: ``test_arbitrary_bytes_give_a_result_or_a_compression_error``
and ``test_mutated_images_give_a_result_or_a_compression_error``.
"""

from __future__ import annotations

import ipaddress
import ssl

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_kit import RecordingBackend, failing_resolver

from imgcompress_core.errors import FetchError
from imgcompress_core.fetch import (
    FetchOptions,
    HttpxFetcher,
    check_url,
    is_public_address,
    refusal_reason,
)

pytestmark = pytest.mark.anyio

CONTEXT = ssl.create_default_context()  # shared, so each example builds a fetcher cheaply

ALPHABET = st.sampled_from(
    [
        *"abcxyz0179.:@[]%/\\#?&=-_~+!$'()*,; \t\r\n",
        *["\x00", "\x7f", "\u00e4", "\u00df", "\u2460", "\u200b", "\u3002", "\uff0e", "\uff41"],
        *["\U0001f600", "\u202e", "\ud7ff", "xn--", "0x", "::", "ffff:", "127.", "%25"],
    ]
)
HOSTISH = st.lists(ALPHABET, max_size=30).map("".join)
URLS = st.one_of(
    st.text(max_size=80),
    st.builds(
        "{}{}{}".format,
        st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "//", "http:", "http:/", ""]),
        HOSTISH,
        st.text(max_size=20),
    ),
    st.ip_addresses().map(lambda ip: f"http://[{ip}]/" if ip.version == 6 else f"http://{ip}/"),
)


@given(URLS)
def test_check_url_returns_a_url_or_raises_fetch_error(text: str) -> None:
    try:
        parsed = check_url(text)
    except FetchError as exc:
        error = exc
    else:
        error = None
    if error is not None:
        assert error.code == "invalid_url" and error.message
        return
    assert isinstance(parsed, httpx.URL)
    assert parsed.scheme in ("http", "https") and parsed.raw_host
    assert not parsed.userinfo


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(URLS)
async def test_fetch_of_anything_raises_only_fetch_error(text: str) -> None:
    """With DNS always failing and every socket refused, only FetchError escapes, and no
    connection is ever attempted to an address that is not public."""
    backend = RecordingBackend(allow_loopback=False)
    fetcher = HttpxFetcher(
        FetchOptions(deadline=2.0),
        resolver=failing_resolver,
        network_backend=backend,
        ssl_context=CONTEXT,
    )
    try:
        with pytest.raises(FetchError) as caught:
            await fetcher.fetch(text)
    finally:
        await fetcher.aclose()
    assert caught.value.message
    assert all(is_public_address(host) for host, _ in backend.attempts)


@given(st.ip_addresses(v=4))
def test_ipv4_embedded_in_ipv6_keeps_its_verdict(v4: ipaddress.IPv4Address) -> None:
    refused = refusal_reason(str(v4)) is not None
    value = int(v4)
    forms = {
        "mapped": ipaddress.IPv6Address((0xFFFF << 32) | value),
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (value << 80)),
        "nat64": ipaddress.IPv6Address((0x64FF9B << 96) | value),
    }
    for name, v6 in forms.items():
        assert (refusal_reason(str(v6)) is not None) == refused, (name, str(v6))
    compatible = ipaddress.IPv6Address(value)
    if value > 1:
        assert refusal_reason(str(compatible)) is not None  # deprecated: always refused


@given(st.ip_addresses())
def test_an_approved_address_is_globally_routable(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    reason = refusal_reason(str(ip))
    if reason is None:
        assert ip.is_global and not ip.is_multicast
    relaxed = refusal_reason(str(ip), allow_private=True)
    assert relaxed is None or reason is not None  # relaxing never refuses more
