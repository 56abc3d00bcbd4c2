"""Feed URL rules: which URLs may be fetched and which addresses may be connected to.

Pure functions, no I/O. ``check_feed_url`` runs at subscribe time and again on every
redirect hop; ``is_address_allowed`` is the SSRF guard the fetcher applies to every address
it is about to connect to (resolved names and IP literals alike).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

from pipeline.core.errors import FeedURLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
ALLOWED_SCHEMES = ("http", "https")

_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
# Every label numeric (decimal, octal or hex): the host is an IPv4 literal in one of the
# legacy forms that inet_aton still accepts (2130706433, 0177.0.0.1, 0x7f.1, 127.1).
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix, IPv4 in the low 32 bits


def blocked_message(address: IPAddress | str) -> str:
    """The one wording used for every SSRF refusal."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = f"::ffff:{address.ipv4_mapped}"  # clearer than ::ffff:7f00:1
    return f"destination is not a public address ({address})"


def is_localhost_name(host: str) -> bool:
    """True for ``localhost`` and ``*.localhost`` (RFC 6761: always loopback), with or
    without a trailing dot, so they are refused without asking DNS."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def check_feed_url(url: str) -> str:
    """Validate a feed URL and return its normal form, before any connection is made.

    Accepts absolute http and https URLs; ``feed://host/x`` becomes ``http://host/x`` and
    ``feed:https://host/x`` becomes ``https://host/x``. The host is lower-cased (IDNA for
    non-ASCII names), legacy numeric IPv4 forms are rewritten as dotted quads so the
    address guard sees what a socket would, IPv6 literals are compressed, an empty path
    becomes ``/`` and the fragment is dropped.

    Raises FeedURLError with a reason for anything else: other schemes (file, ftp, gopher,
    data, javascript, ...), bare paths, credentials in the URL, a missing or malformed host
    or port. It does not decide whether the destination address is public.
    """
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise FeedURLError(str(url), "the URL is empty")
    if len(text) > MAX_URL_LENGTH:
        raise FeedURLError(text[:80] + "...", f"the URL is longer than {MAX_URL_LENGTH} characters")
    if _CONTROL_OR_SPACE.search(text):
        raise FeedURLError(text, "the URL contains spaces or control characters")

    lowered = text.lower()
    if lowered.startswith("feed:"):
        rest = text[len("feed:") :]
        # feed:https://x wraps a full URL; feed://x stands for http://x.
        text = rest if rest.lower().startswith(("http://", "https://")) else "http:" + rest

    try:
        parts = urlsplit(text)
    except ValueError as error:  # e.g. an unbalanced "[" in the host
        raise FeedURLError(text, f"not a valid URL ({error})") from error
    scheme = parts.scheme.lower()
    if not scheme:
        raise FeedURLError(text, "not an absolute URL: it must start with http:// or https://")
    if scheme not in ALLOWED_SCHEMES:
        raise FeedURLError(text, f"the {scheme}: scheme is not allowed, only http and https")
    if "@" in parts.netloc:
        raise FeedURLError(text, "user names and passwords in feed URLs are not allowed")
    if not parts.hostname:
        raise FeedURLError(text, "the URL has no host")
    try:
        port = parts.port
    except ValueError as error:
        raise FeedURLError(text, "the port is not a number between 1 and 65535") from error
    if port == 0:
        raise FeedURLError(text, "the port is not a number between 1 and 65535")

    host = _normal_host(text, parts.hostname, bracketed=parts.netloc.startswith("["))
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def resolve_redirect(current_url: str, location: str | None) -> str:
    """Return the checked absolute URL a redirect points to.

    ``location`` may be relative. Raises FeedURLError when it is missing, when the target
    fails ``check_feed_url``, or when it would downgrade https to http.
    """
    if not location or not location.strip():
        raise FeedURLError(current_url, "the redirect has no Location header")
    target = check_feed_url(urljoin(current_url, location.strip()))
    if urlsplit(current_url).scheme == "https" and urlsplit(target).scheme == "http":
        raise FeedURLError(target, "refused a redirect from https to http")
    return target


def literal_address(host: str) -> IPAddress | None:
    """The address an IP-literal host names (brackets optional), or None for a host name.

    Understands the legacy numeric IPv4 forms a socket would accept, so ``2130706433``
    and ``0177.0.0.1`` both give 127.0.0.1.
    """
    bare = host.strip("[]").rstrip(".").lower()
    if ":" in bare:
        try:
            return ipaddress.IPv6Address(bare)
        except ValueError:
            return None
    labels = bare.split(".")
    if not bare or not all(_NUMERIC_LABEL.match(label) for label in labels):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(bare))
    except OSError:
        return None


def _normal_host(url: str, hostname: str, *, bracketed: bool) -> str:
    if bracketed:
        try:
            address = ipaddress.IPv6Address(hostname)
        except ValueError as error:
            raise FeedURLError(url, f"{hostname!r} is not a valid IPv6 address") from error
        if address.scope_id:
            raise FeedURLError(url, "IPv6 zone identifiers are not allowed")
        return f"[{address.compressed}]"
    if all(_NUMERIC_LABEL.match(label) for label in hostname.rstrip(".").split(".")):
        address4 = literal_address(hostname)
        if address4 is None:
            raise FeedURLError(url, f"{hostname!r} is not a valid IPv4 address")
        return str(address4)
    try:
        ascii_host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError as error:
        raise FeedURLError(url, f"{hostname!r} is not a valid host name") from error
    labels = ascii_host[:-1].split(".") if ascii_host.endswith(".") else ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise FeedURLError(url, f"{hostname!r} is not a valid host name")
    return ascii_host


# --- the address guard ---------------------------------------------------------------


@dataclass(frozen=True)
class AllowList:
    """Destinations an editor allows despite the guard: host names and address ranges."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def allows_host(self, host: str) -> bool:
        """True when ``host`` (any case, with or without a trailing dot) is allowed by name."""
        return host.rstrip(".").lower() in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return is_address_allowed(address, self.networks)


def parse_allow_list(entries: Iterable[str]) -> AllowList:
    """Read ``[fetch] allow_hosts`` entries: IPs ("127.0.0.1", "::1"), CIDR ranges
    ("127.0.0.0/8") or host names ("feeds.local").

    A host name is allowed by name, whatever it resolves to; IPs and ranges allow those
    addresses under any name. Raises ValueError naming a malformed entry.
    """
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            if "/" in entry or ":" in entry:
                raise ValueError(f"{raw!r} is not a valid address or CIDR range") from None
        name = entry.rstrip(".").lower()
        if not name or not all(_HOST_LABEL.match(label) for label in name.split(".")):
            raise ValueError(f"{raw!r} is not a host name, an address or a CIDR range")
        hosts.add(name)
    return AllowList(frozenset(hosts), tuple(networks))


def is_address_allowed(address: IPAddress, allow: Iterable[IPNetwork] = ()) -> bool:
    """True when the fetcher may connect to ``address``.

    Only globally routable unicast addresses pass, unless the address lies in one of the
    ``allow`` networks. Refused: loopback, private, link-local, CGNAT (100.64/10),
    unique-local (fc00::/7), site-local, multicast, unspecified, reserved and documentation
    ranges, and IPv6 forms that embed a refused IPv4 address (IPv4-mapped, NAT64, 6to4).
    """
    allow = tuple(allow)
    embedded = _embedded_ipv4(address)
    candidates = [address] if embedded is None else [address, embedded]
    if any(candidate in network for candidate in candidates for network in allow):
        return True
    # An IPv6 form that carries an IPv4 address reaches that address: judge it alone.
    return _is_public(address if embedded is None else embedded)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: IPAddress) -> bool:
    if not address.is_global:  # private, loopback, CGNAT, documentation, 0/8, ...
        return False
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return False
    if address.is_loopback or address.is_link_local or address.is_private:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        # The ipaddress module counts deprecated site-local fec0::/10 as global.
        return not address.is_site_local
    return address not in _CGNAT
