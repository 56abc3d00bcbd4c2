"""pipeline.core.urls: feed URL validation (F-05) and the address guard (F-01, F-03)."""

from __future__ import annotations

import ipaddress

import pytest

from pipeline.core.errors import FeedURLError
from pipeline.core.urls import (
    blocked_message,
    check_feed_url,
    is_address_allowed,
    is_localhost_name,
    literal_address,
    parse_allow_list,
    resolve_redirect,
)

# --- check_feed_url -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://www.dawn.com/feeds/home", "https://www.dawn.com/feeds/home"),
        ("  http://Example.COM  ", "http://example.com/"),
        ("http://example.com/a?b=1#frag", "http://example.com/a?b=1"),
        ("HTTPS://example.com:8443/feed", "https://example.com:8443/feed"),
        ("feed://example.com/rss", "http://example.com/rss"),
        ("feed:https://example.com/rss", "https://example.com/rss"),
        ("feed:http://example.com/rss", "http://example.com/rss"),
        ("http://bücher.de/feed", "http://xn--bcher-kva.de/feed"),
        ("http://example.com./feed", "http://example.com./feed"),
        # legacy numeric IPv4 forms are rewritten so the guard sees the real address
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://0177.0.0.1/", "http://127.0.0.1/"),
        ("http://0x7f.1/", "http://127.0.0.1/"),
        ("http://127.1:8080/x", "http://127.0.0.1:8080/x"),
        ("http://[::1]/", "http://[::1]/"),
        ("http://[::FFFF:127.0.0.1]/", "http://[::ffff:7f00:1]/"),
    ],
)
def test_check_feed_url_accepts_and_normalises_http_urls(url: str, expected: str) -> None:
    assert check_feed_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "file: scheme is not allowed"),
        ("FILE:///etc/passwd", "file: scheme is not allowed"),
        ("/etc/passwd", "not an absolute URL"),
        ("etc/passwd", "not an absolute URL"),
        ("example.com/feed", "not an absolute URL"),
        ("//example.com/feed", "not an absolute URL"),
        ("ftp://example.com/feed.xml", "ftp: scheme is not allowed"),
        ("gopher://example.com:70/", "gopher: scheme is not allowed"),
        ("data:text/xml,<rss/>", "data: scheme is not allowed"),
        ("javascript:alert(1)", "javascript: scheme is not allowed"),
        ("feed:javascript:alert(1)", "no host"),
        ("http://user:pass@example.com/feed", "passwords in feed URLs are not allowed"),
        ("http://user@example.com/feed", "passwords in feed URLs are not allowed"),
        ("http:///feed", "no host"),
        ("http://", "no host"),
        ("", "empty"),
        ("   ", "empty"),
        ("http://example.com:0/", "port"),
        ("http://example.com:99999/", "port"),
        ("http://example.com:abc/", "port"),
        ("http://exa mple.com/", "spaces or control characters"),
        ("http://example.com/\r\nHost: evil", "spaces or control characters"),
        ("http://1.2.3.999/", "not a valid IPv4 address"),
        ("http://[fe80::1%25eth0]/", "zone identifiers"),
        ("http://[::1/", "not a valid URL"),
        ("http://exa$mple.com/", "not a valid host name"),
        ("http://" + "a" * 64 + ".com/", "not a valid host name"),
        ("http://example.com/" + "a" * 3000, "longer than"),
    ],
)
def test_check_feed_url_refuses_with_a_clear_reason(url: str, reason: str) -> None:
    with pytest.raises(FeedURLError, match=reason):
        check_feed_url(url)


def test_check_feed_url_does_not_judge_the_destination_address() -> None:
    # Whether 127.0.0.1 may be fetched depends on [fetch] allow_hosts: the fetcher decides.
    assert check_feed_url("http://127.0.0.1:8000/feed") == "http://127.0.0.1:8000/feed"


# --- resolve_redirect -----------------------------------------------------------------


def test_relative_location_is_resolved_against_the_current_url() -> None:
    assert resolve_redirect("https://a.example/x/feed", "../rss") == "https://a.example/rss"
    assert resolve_redirect("https://a.example/x", "//b.example/y") == "https://b.example/y"


def test_https_to_http_redirect_is_refused() -> None:
    with pytest.raises(FeedURLError, match="from https to http"):
        resolve_redirect("https://a.example/feed", "http://a.example/feed")


def test_http_to_https_redirect_is_fine() -> None:
    assert resolve_redirect("http://a.example/f", "https://a.example/f") == "https://a.example/f"


@pytest.mark.parametrize("location", [None, "", "   "])
def test_missing_location_is_an_error(location: str | None) -> None:
    with pytest.raises(FeedURLError, match="no Location"):
        resolve_redirect("http://a.example/feed", location)


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "gopher://a.example/", "http://u:p@a.example/"]
)
def test_redirect_target_must_pass_check_feed_url(location: str) -> None:
    with pytest.raises(FeedURLError):
        resolve_redirect("http://a.example/feed", location)


# --- literal_address ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
        ("::1", "::1"),
        ("0.0.0.0", "0.0.0.0"),
    ],
)
def test_literal_address_reads_every_form_a_socket_would(host: str, expected: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize("host", ["example.com", "localhost", "1.2.3.com", "", "999.1.1.1"])
def test_literal_address_is_none_for_names(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.parametrize("host", ["localhost", "localhost.", "LOCALHOST", "a.localhost"])
def test_localhost_names_are_recognised(host: str) -> None:
    assert is_localhost_name(host)


def test_blocked_message_shows_mapped_addresses_readably() -> None:
    address = ipaddress.ip_address("::ffff:127.0.0.1")
    assert blocked_message(address) == "destination is not a public address (::ffff:127.0.0.1)"


# --- is_address_allowed ---------------------------------------------------------------

NOT_PUBLIC = [
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "0.0.0.0",  # unspecified
    "0.1.2.3",  # "this network"
    "10.0.0.5",  # private
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    "::1",
    "::",
    "fc00::1",  # unique-local
    "fd12:3456::1",
    "fe80::1",  # link-local
    "fe80::1%eth0",
    "fec0::1",  # deprecated site-local
    "ff02::1",  # multicast
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:10.0.0.5",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "64:ff9b::10.0.0.5",  # NAT64 of private
    "64:ff9b::127.0.0.1",
    "64:ff9b:1::a00:5",  # local-use NAT64 prefix
    "2002:a00:5::1",  # 6to4 of 10.0.0.5
    "2001:db8::1",  # documentation
    "2001::1",  # Teredo
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_address_allowed(ipaddress.ip_address(address))


def test_allow_list_admits_only_the_listed_range() -> None:
    allow = parse_allow_list(["127.0.0.2/32"])
    assert is_address_allowed(ipaddress.ip_address("127.0.0.2"), allow.networks)
    assert not is_address_allowed(ipaddress.ip_address("127.0.0.1"), allow.networks)
    assert not is_address_allowed(ipaddress.ip_address("10.0.0.5"), allow.networks)
    # the same destination written as IPv4-mapped IPv6 is the same allowed address
    assert is_address_allowed(ipaddress.ip_address("::ffff:127.0.0.2"), allow.networks)


def test_parse_allow_list_reads_addresses_ranges_and_names() -> None:
    allow = parse_allow_list(["127.0.0.1", "10.0.0.0/8", "::1", "[::2]", "Feeds.Local.", " "])
    assert allow.networks == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("::2/128"),
    )
    assert allow.hosts == frozenset({"feeds.local"})
    assert allow.allows_host("FEEDS.local.")
    assert not allow.allows_host("other.local")
    assert allow.allows_address(ipaddress.ip_address("10.1.2.3"))


def test_parse_allow_list_accepts_a_range_with_host_bits_set() -> None:
    assert parse_allow_list(["127.0.0.5/8"]).networks == (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "::g", "not a host", "bad_host$"])
def test_parse_allow_list_rejects_malformed_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        parse_allow_list([entry])
