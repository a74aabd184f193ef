"""The outbound-request guard shared by downloads and webhooks (private; see ``fetch``).

Two layers, each usable on its own:

``check_url``
    The one URL parser. ``httpx.URL`` parses the text once; the same object is vetted
    and then sent, so the validator and the client can never disagree about the host.
    A few refusal-only checks run on the raw text first (control characters,
    backslashes, alternative IDNA dots, a port that is not plain digits).

``resolve_destination`` (and ``vet_destination``, its accept-now-fetch-later form)
    Resolves the host (IP literals are not resolved) with an injectable resolver and
    refuses the destination if ANY answer is not globally routable, looking through
    IPv4-mapped, IPv4-compatible, 6to4 and NAT64 forms. Returns the vetted addresses.

The third layer, the client that connects only to the vetted addresses, is
:mod:`._pinned`.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence

import anyio
import httpx

from .errors import FetchError

__all__ = [
    "Resolver",
    "check_destination",
    "check_url",
    "host_allowed",
    "is_public_address",
    "odd_character",
    "refusal_reason",
    "resolve_destination",
    "system_resolver",
    "url_refusal",
    "vet_destination",
]

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 8192


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """Resolve ``host`` with the system resolver, returning every address."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# --- the URL ---------------------------------------------------------------------------

_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#]*)")
_ODD_CHARS = frozenset("\\\u3002\uff0e\uff61")  # backslash; dots IDNA would map to "."
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


def _invalid(reason: str) -> FetchError:
    return FetchError(f"the URL is not acceptable: {reason}", code="invalid_url")


def odd_character(text: str) -> str | None:
    """Return the first character refused anywhere in a URL (as text), or None."""
    for char in text:
        if char in _ODD_CHARS:
            return repr(char)
        if ord(char) <= 32 or char.isspace() or unicodedata.category(char)[0] in "CZ":
            return f"U+{ord(char):04X}"
    return None


@functools.lru_cache(maxsize=4096)  # a pure function of the text: parse each URL once
def check_url(url: str) -> httpx.URL:
    """Parse ``url`` once; return it, or raise FetchError(invalid_url) naming the problem.

    Accepted: ``http``/``https``, a host that is a DNS name (IDNA allowed), a dotted-quad
    IPv4 or a bracketed IPv6 literal, an optional port 1-65535 in plain digits. Refused:
    user info, empty hosts, percent-encoded hosts, numeric hosts in any other notation
    (``2130706433``, ``0x7f.1``, ``127.1``, ``0177.0.0.1``), zone ids, backslashes,
    whitespace and control or format characters anywhere.
    """
    if not isinstance(url, str) or not url:
        raise _invalid("it is empty")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"it is longer than {MAX_URL_LENGTH} characters")
    odd = odd_character(url)
    if odd is not None:
        raise _invalid(
            f"it contains the character {odd} (spaces, control characters, "
            "backslashes and look-alike dots are refused)"
        )
    match = _AUTHORITY.match(url)
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:  # IDNA errors are ValueErrors
        raise _invalid(str(exc) or type(exc).__name__) from exc
    if parsed.scheme not in ("http", "https"):
        raise _invalid("only http and https URLs can be fetched")
    if match is None:
        raise _invalid("it must start with http:// or https:// followed by a host")
    authority = match.group(1)
    if "@" in authority or parsed.userinfo:
        raise _invalid("URLs with a user name or password are refused")
    _check_authority(authority, parsed)
    return parsed


def _check_authority(authority: str, parsed: httpx.URL) -> None:
    if authority.startswith("["):
        host_text, _, port_part = authority[1:].partition("]")
    else:
        host_text, _, port_text = authority.partition(":")
        port_part = f":{port_text}" if ":" in authority else ""
    if port_part and (
        not re.fullmatch(r":[0-9]{1,5}", port_part) or not 1 <= int(port_part[1:]) <= 65535
    ):
        raise _invalid(f"the port {port_part[1:]!r} is not a number from 1 to 65535")
    if "%" in host_text:
        raise _invalid("percent-encoded host names and IPv6 zone ids are refused")
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        raise _invalid("the URL has no host name")
    try:
        _ = parsed.host  # decodes IDNA A-labels ("xn--..."): a bogus one raises
    except ValueError as exc:
        raise _invalid(f"the host {host!r} is not valid IDNA ({exc})") from exc
    if authority.startswith("["):
        return  # httpx has checked that it is a valid IPv6 address
    if host_text.isascii() and host_text.lower() != host:
        raise _invalid(f"the host {host_text!r} does not parse to itself")
    name = host.removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise _invalid(f"{host!r} is not a valid host name")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            canonical = str(ipaddress.IPv4Address(host)) == host
        except ValueError:
            canonical = False
        if not canonical:
            raise _invalid(
                f"{host!r} is an IP address in an unusual notation; write IPv4 addresses "
                "as four decimal numbers (a.b.c.d)"
            )


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Return True if ``host`` matches an entry (exact, or ``*.suffix`` for subdomains)."""
    name = host.lower().removesuffix(".")
    for entry in allowed_hosts:
        pattern = entry.strip().lower().removesuffix(".").strip("[]")
        if pattern.startswith("*.") and name.endswith(pattern[1:]) and name != pattern[2:]:
            return True
        if name == pattern:
            return True
    return False


# --- the addresses ---------------------------------------------------------------------

_METADATA_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OCI, DigitalOcean, OpenStack instance metadata
        "169.254.170.2/32",  # AWS ECS task metadata and credentials
        "169.254.170.23/32",  # AWS EKS pod identity
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure WireServer (a public address!)
        "192.0.0.192/32",  # Oracle Cloud (classic) metadata
        "fd00:ec2::/32",  # AWS IMDS and EKS pod identity on IPv6 (fd00:ec2::254, ::23)
    )
)
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


@functools.lru_cache(maxsize=1024)  # a pure function, asked before every download
def refusal_reason(address: str, *, allow_private: bool = False) -> str | None:
    """Return why ``address`` may not be connected to, or None if it may.

    Cloud metadata, unspecified, multicast, broadcast and Teredo addresses are refused
    even when ``allow_private`` is set; that switch only admits loopback, private,
    link-local, CGNAT and other non-global unicast addresses.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    verdict = _classify(ip)
    if verdict is None:
        return None
    reason, always = verdict
    return reason if always or not allow_private else None


def is_public_address(address: str) -> bool:
    """Return True if ``address`` is globally routable (and not a cloud metadata endpoint)."""
    return refusal_reason(address) is None


def _classify(ip: IPAddress) -> tuple[str, bool] | None:
    """Return (reason, refused even with allow_private) or None for a public address."""
    if any(ip in net for net in _METADATA_NETWORKS if net.version == ip.version):
        return "a cloud metadata endpoint", True
    if isinstance(ip, ipaddress.IPv6Address):
        special = _classify_ipv6_forms(ip)
        if special is not None:
            return None if special == _PUBLIC else special
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "the unspecified address (or 'this network', 0.0.0.0/8)", True
    if ip.is_multicast:
        return "a multicast address", True
    if ip == _BROADCAST:
        return "the broadcast address", True
    for test, name in (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "a carrier-grade NAT address"),
        (ip.is_private, "a private-network address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a globally routable address"),
    ):
        if test:
            return name, False
    return None


_PUBLIC = ("", False)


def _classify_ipv6_forms(ip: ipaddress.IPv6Address) -> tuple[str, bool] | None:
    """Judge IPv6 forms that carry or tunnel IPv4: a verdict, ``_PUBLIC``, or None (plain)."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        form, v4 = embedded
        inner = _classify(v4)
        if inner is not None:
            return f"the {form} form of {inner[0]}", inner[1]
        if form == "IPv4-compatible":
            return "a deprecated IPv4-compatible IPv6 address", False
        return _PUBLIC
    if ip.teredo is not None:
        return "a Teredo tunnel address", True
    if ip in _NAT64_LOCAL:
        return "a local-use NAT64 address", False
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        return "NAT64", low
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:
        return "IPv4-compatible", low
    return None


async def vet_destination(
    url: httpx.URL,
    *,
    allow_private: bool,
    resolver: Resolver = system_resolver,
    allowed_hosts: frozenset[str] = frozenset(),
) -> None:
    """Check a URL accepted now and fetched later (e.g. a webhook URL at upload).

    Raises FetchError like :func:`resolve_destination`. With ``allow_private`` a host
    name is not resolved here (tests and demos use names that only resolve later, or
    never); the send-time check resolves and pins as always.
    """
    if allow_private and not _is_ip_literal(url):
        _check_allowed(url, allowed_hosts)
        return
    await resolve_destination(
        url, allow_private=allow_private, resolver=resolver, allowed_hosts=allowed_hosts
    )


def _is_ip_literal(url: httpx.URL) -> bool:
    try:
        ipaddress.ip_address(url.raw_host.decode("ascii"))
    except ValueError:
        return False
    return True


def _check_allowed(url: httpx.URL, allowed_hosts: frozenset[str]) -> None:
    host = url.raw_host.decode("ascii").lower()
    if allowed_hosts and not host_allowed(host, allowed_hosts):
        raise FetchError(
            f"{host!r} is not on the list of hosts that may be fetched (allowed_hosts)",
            code="blocked_destination",
        )


async def resolve_destination(
    url: httpx.URL,
    *,
    allow_private: bool,
    resolver: Resolver = system_resolver,
    allowed_hosts: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
    """Return the addresses ``url``'s host may be reached at, or raise FetchError.

    Codes: ``blocked_destination`` (not on a non-empty allow-list, or any address is
    refused), ``dns_failure`` (no answer; retryable when the resolver raised OSError).
    """
    _check_allowed(url, allowed_hosts)
    host = url.raw_host.decode("ascii").lower()
    port = url.port or (443 if url.scheme == "https" else 80)
    literal = _is_ip_literal(url)
    if literal:
        addresses: tuple[str, ...] = (str(ipaddress.ip_address(host)),)
    else:
        addresses = await _resolve(resolver, host, port)
    _refuse_addresses(host, addresses, literal=literal, allow_private=allow_private)
    return addresses


def _refuse_addresses(
    host: str, addresses: Sequence[str], *, literal: bool, allow_private: bool
) -> None:
    """Raise FetchError(blocked_destination) if any of ``host``'s addresses is refused."""
    for address in addresses:
        reason = refusal_reason(address, allow_private=allow_private)
        if reason is None:
            continue
        where = f"{host!r} is" if literal else f"{host!r} resolves to {address}, which is"
        relax = "" if allow_private else " (allow_private_networks is off)"
        raise FetchError(
            f"{where} a non-public address: {reason}; private, loopback, link-local and "
            f"metadata destinations are refused{relax}",
            code="blocked_destination",
        )


def check_destination(
    url: str, *, allow_private: bool, allowed_hosts: frozenset[str] = frozenset()
) -> httpx.URL:
    """Return ``url`` parsed if every rule that needs no DNS lets it through, else raise
    FetchError: :func:`check_url`, the host allow-list, and an IP literal's address.

    The fetcher runs this first; the upload check (:func:`url_refusal`) runs the same
    rules, so a URL accepted at upload fails later only on what DNS or the server say.
    """
    parsed = check_url(url)
    _check_allowed(parsed, allowed_hosts)
    if _is_ip_literal(parsed):
        host = parsed.raw_host.decode("ascii").lower()
        address = str(ipaddress.ip_address(host))
        _refuse_addresses(host, (address,), literal=True, allow_private=allow_private)
    return parsed


def url_refusal(
    url: str, *, allow_private: bool, allowed_hosts: frozenset[str] = frozenset()
) -> str | None:
    """Return why :func:`check_destination` refuses ``url`` (its message), or None.

    Built for checking many URLs at once (an uploaded CSV): the rules that read the whole
    URL (its length and characters) run on every URL, the rest once per scheme and
    authority, which is all they look at.
    """
    if len(url) > MAX_URL_LENGTH:
        return f"it is longer than {MAX_URL_LENGTH} characters"
    odd = odd_character(url) if not url.isascii() or _ODD_ASCII.search(url) else None
    match = _AUTHORITY.match(url)
    if odd is not None or match is None:
        return _origin_refusal(url, allow_private, allowed_hosts)  # the full check says why
    return _origin_refusal(match.group(0), allow_private, allowed_hosts)


_ODD_ASCII = re.compile(r"[\x00-\x20\x7f\\]")  # what odd_character finds in ASCII text


@functools.lru_cache(maxsize=4096)
def _origin_refusal(url: str, allow_private: bool, allowed_hosts: frozenset[str]) -> str | None:
    try:
        check_destination(url, allow_private=allow_private, allowed_hosts=allowed_hosts)
    except FetchError as exc:
        return exc.message.removeprefix("the URL is not acceptable: ")
    return None


async def _resolve(resolver: Resolver, host: str, port: int) -> tuple[str, ...]:
    try:
        answers = tuple(str(a) for a in await resolver(host, port))
    except OSError as exc:
        raise FetchError(
            f"the host name {host!r} could not be resolved", code="dns_failure", retryable=True
        ) from exc
    except ValueError as exc:  # e.g. UnicodeError from the IDNA codec
        raise FetchError(
            f"the host name {host!r} could not be resolved: {exc}", code="dns_failure"
        ) from exc
    if not answers:
        raise FetchError(f"the host name {host!r} has no addresses", code="dns_failure")
    return tuple(dict.fromkeys(answers))  # unique, in the resolver's order
