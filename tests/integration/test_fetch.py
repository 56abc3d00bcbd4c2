"""The HTTP fetcher against a real server on loopback: RELIABILITY.md F-01..F-12.

Only 127.0.0.2/32 is allowed; the canary on 127.0.0.1 must never be reached (its fixture
fails the test at teardown otherwise). Private and metadata targets are reached only
through a fake resolver, and ``connect_spy`` proves no connection was attempted to them:
it also refuses, without a packet, any non-loopback destination in every test here.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from pipeline.adapters.fetch import Fetcher, parse_retry_after
from pipeline.core.models import FeedOutcome, FetchResult
from pipeline.settings import FetchSettings
from tests.support.feedserver import Canary, FeedServer, Route
from tests.support.fixtures_http import FEED_SERVER_ALLOW

T = TypeVar("T")
MiB = 1 << 20
RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'


@pytest.fixture(autouse=True)
def _no_connection_leaves_loopback(connect_spy: list[tuple[str, int]]) -> None:
    """Every test here runs under the spy: a non-loopback connect fails without a packet."""


def fetch_settings(**overrides: Any) -> FetchSettings:
    values: dict[str, Any] = {"allow_hosts": FEED_SERVER_ALLOW, "deadline": 10.0}
    values.update(overrides)
    return FetchSettings(**values)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def fetch_one(
    url: str,
    settings: FetchSettings | None = None,
    resolver: AbstractResolver | None = None,
    **kwargs: Any,
) -> FetchResult:
    async with Fetcher(settings or fetch_settings(), resolver=resolver) as fetcher:
        return await fetcher.fetch(url, **kwargs)


class FakeResolver(AbstractResolver):
    """Answers from a table (name → addresses, or a callable giving them per call) and
    records every name asked, in order. Unknown names fail like NXDOMAIN."""

    def __init__(self, table: dict[str, Sequence[str] | Callable[[], Sequence[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        entry = self.table.get(host)
        if entry is None:
            raise OSError(f"fake resolver: no such name {host}")
        addresses = entry() if callable(entry) else entry
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in addresses
        ]

    async def close(self) -> None:
        pass


class PeakRSS:
    """Samples this process's RSS every few ms; ``growth`` is peak minus the baseline."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.baseline = self.peak = 0

    def __enter__(self) -> PeakRSS:
        self.baseline = self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


# --- F-01: literal and localhost destinations -----------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0177.0.0.1",
        "localhost",
        "localhost.",
    ],
)
def test_private_literal_destination_is_refused_before_connect(
    host: str, canary: Canary, connect_spy: list[tuple[str, int]]
) -> None:
    result = run(fetch_one(f"http://{host}:{canary.port}/secret"))
    assert result.outcome is FeedOutcome.BLOCKED
    assert result.error is not None
    assert result.error.startswith("destination is not a public address (")
    assert result.body is None
    assert connect_spy == []


def test_mapped_address_is_named_in_the_refusal(canary: Canary) -> None:
    result = run(fetch_one(f"http://[::ffff:127.0.0.1]:{canary.port}/"))
    assert result.error == "destination is not a public address (::ffff:127.0.0.1)"


def test_allowed_address_is_fetched(
    feed_server: FeedServer, connect_spy: list[tuple[str, int]]
) -> None:
    feed_server.route("/feed.xml", body=RSS)
    result = run(fetch_one(feed_server.url("/feed.xml")))
    assert result.outcome is FeedOutcome.OK
    assert result.body == RSS
    assert result.http_status == 200
    assert connect_spy == [("127.0.0.2", feed_server.port)]


def test_allowed_host_name_is_fetched_even_though_it_resolves_privately() -> None:
    with FeedServer(host="127.0.0.3") as internal:
        internal.route("/feed.xml", body=RSS)
        resolver = FakeResolver({"feeds.internal": ["127.0.0.3"], "other.internal": ["127.0.0.3"]})
        settings = fetch_settings(allow_hosts=(*FEED_SERVER_ALLOW, "feeds.internal"))

        async def both() -> tuple[FetchResult, FetchResult]:
            async with Fetcher(settings, resolver=resolver) as fetcher:
                named = await fetcher.fetch(f"http://feeds.internal:{internal.port}/feed.xml")
                other = await fetcher.fetch(f"http://other.internal:{internal.port}/feed.xml")
                return named, other

        named, other = run(both())
        assert named.outcome is FeedOutcome.OK
        assert other.outcome is FeedOutcome.BLOCKED
        assert internal.hits("/feed.xml") == 1


def test_request_carries_user_agent_and_asks_only_for_gzip_and_deflate(
    feed_server: FeedServer,
) -> None:
    feed_server.route("/feed.xml", body=RSS, headers={"Set-Cookie": "track=1"})
    settings = fetch_settings(user_agent="qasid-test/1.0")

    async def twice() -> None:
        async with Fetcher(settings) as fetcher:
            await fetcher.fetch(feed_server.url("/feed.xml"))
            await fetcher.fetch(feed_server.url("/feed.xml"))

    run(twice())
    first, second = feed_server.requests_for("/feed.xml")
    assert first.headers["user-agent"] == "qasid-test/1.0"
    assert first.headers["accept-encoding"] == "gzip, deflate"
    assert "cookie" not in second.headers  # nothing carried from one fetch to the next


# --- F-02 and the redirect guard ------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_loopback_is_refused_at_the_hop(
    status: int, feed_server: FeedServer, canary: Canary, connect_spy: list[tuple[str, int]]
) -> None:
    feed_server.redirect("/feed.xml", canary.url("/secret"), status=status)
    result = run(fetch_one(feed_server.url("/feed.xml")))
    assert result.outcome is FeedOutcome.BLOCKED
    assert result.error == (
        f"redirect to {canary.url('/secret')} refused: "
        "destination is not a public address (127.0.0.1)"
    )
    assert result.permanent_redirect is None  # the feed URL must not move there
    assert feed_server.hits("/feed.xml") == 1
    assert {host for host, _ in connect_spy} == {"127.0.0.2"}


def test_redirect_to_a_name_resolving_to_loopback_is_refused_by_the_resolver(
    feed_server: FeedServer, canary: Canary, connect_spy: list[tuple[str, int]]
) -> None:
    resolver = FakeResolver({"feed.test": ["127.0.0.2"], "sneaky.test": ["127.0.0.1"]})
    feed_server.redirect("/feed.xml", f"http://sneaky.test:{canary.port}/secret", status=301)
    result = run(fetch_one(f"http://feed.test:{feed_server.port}/feed.xml", resolver=resolver))
    assert result.outcome is FeedOutcome.BLOCKED
    assert result.error is not None
    assert result.error.endswith("destination is not a public address (127.0.0.1)")
    assert result.permanent_redirect is None
    assert resolver.calls == ["feed.test", "sneaky.test"]
    assert connect_spy == [("127.0.0.2", feed_server.port)]


def test_every_redirect_hop_goes_through_the_guarded_resolver(feed_server: FeedServer) -> None:
    names = ["a.test", "b.test", "c.test"]
    resolver = FakeResolver({name: ["127.0.0.2"] for name in names})
    port = feed_server.port
    feed_server.redirect("/a", f"http://b.test:{port}/b", status=301)
    feed_server.redirect("/b", f"http://c.test:{port}/c", status=308)
    feed_server.route("/c", body=RSS)
    result = run(fetch_one(f"http://a.test:{port}/a", resolver=resolver))
    assert result.outcome is FeedOutcome.OK
    assert resolver.calls == names
    assert result.final_url == f"http://c.test:{port}/c"
    assert result.permanent_redirect == f"http://c.test:{port}/c"


def test_permanent_redirect_is_reported_only_when_every_hop_is_permanent(
    feed_server: FeedServer,
) -> None:
    feed_server.redirect("/old", "/older", status=301)  # relative Location
    feed_server.redirect("/older", feed_server.url("/feed.xml"), status=302)
    feed_server.redirect("/moved", "/feed.xml", status=308)
    feed_server.route("/feed.xml", body=RSS)

    async def both() -> tuple[FetchResult, FetchResult]:
        async with Fetcher(fetch_settings()) as fetcher:
            return (
                await fetcher.fetch(feed_server.url("/old")),
                await fetcher.fetch(feed_server.url("/moved")),
            )

    mixed, permanent = run(both())
    assert mixed.outcome is FeedOutcome.OK
    assert mixed.final_url == feed_server.url("/feed.xml")
    assert mixed.permanent_redirect is None
    assert permanent.permanent_redirect == feed_server.url("/feed.xml")
    assert permanent.url == feed_server.url("/moved")


def test_redirect_without_location_is_an_error(feed_server: FeedServer) -> None:
    feed_server.route("/feed.xml", status=302, content_type=None)
    result = run(fetch_one(feed_server.url("/feed.xml")))
    assert result.outcome is FeedOutcome.REDIRECT_ERROR
    assert result.error is not None and "no Location header" in result.error


@pytest.mark.parametrize("location", ["file:///etc/passwd", "gopher://127.0.0.2:70/", "ftp://x/"])
def test_redirect_to_another_scheme_is_refused(location: str, feed_server: FeedServer) -> None:
    feed_server.redirect("/feed.xml", location)
    result = run(fetch_one(feed_server.url("/feed.xml")))
    assert result.outcome is FeedOutcome.REDIRECT_ERROR
    assert result.error is not None and "scheme is not allowed" in result.error


# --- F-03: names resolving to private addresses ---------------------------------------


@pytest.mark.parametrize(
    "addresses",
    [
        ["169.254.169.254"],
        ["10.0.0.5"],
        ["192.168.1.1"],
        ["100.64.0.1"],
        ["fc00::1"],
        ["fe80::1"],
        ["::ffff:10.0.0.5"],
        ["8.8.8.8", "10.0.0.5"],  # a public and a private address together
        ["2001:4860:4860::8888", "127.0.0.1"],
    ],
)
def test_name_resolving_to_a_private_address_is_refused_without_connecting(
    addresses: list[str], connect_spy: list[tuple[str, int]]
) -> None:
    resolver = FakeResolver({"evil.test": addresses})
    result = run(fetch_one("http://evil.test/feed.xml", resolver=resolver))
    assert result.outcome is FeedOutcome.BLOCKED
    assert result.error is not None
    assert result.error.startswith("destination is not a public address (")
    assert connect_spy == []  # no packet left


def test_name_resolving_to_a_public_address_passes_the_guard(
    connect_spy: list[tuple[str, int]],
) -> None:
    # Positive control for the test above: the guard lets it through and only the spy
    # (which refuses everything off loopback) stops the connection.
    resolver = FakeResolver({"public.test": ["8.8.8.8"]})
    result = run(fetch_one("http://public.test/feed.xml", resolver=resolver))
    assert connect_spy == [("8.8.8.8", 80)]
    assert result.outcome is FeedOutcome.CONNECTION_ERROR


def test_unresolvable_name_is_a_connection_error() -> None:
    result = run(fetch_one("http://nowhere.test/feed.xml", resolver=FakeResolver({})))
    assert result.outcome is FeedOutcome.CONNECTION_ERROR
    assert result.error is not None and "could not resolve nowhere.test" in result.error


# --- F-04: DNS rebinding --------------------------------------------------------------


def test_dns_rebinding_connects_to_the_address_that_was_checked(
    canary: Canary, connect_spy: list[tuple[str, int]]
) -> None:
    # The feed server shares the canary's port on another loopback address, so a second
    # resolution used for the connect would land on the canary.
    with FeedServer(port=canary.port) as server:
        server.route("/feed.xml", body=RSS)
        answers = iter([["127.0.0.2"]])
        resolver = FakeResolver({"rebind.test": lambda: next(answers, ["127.0.0.1"])})
        url = f"http://rebind.test:{canary.port}/feed.xml"

        first = run(fetch_one(url, resolver=resolver))
        assert first.outcome is FeedOutcome.OK
        assert resolver.calls == ["rebind.test"]  # one resolution for the connection
        assert connect_spy == [("127.0.0.2", canary.port)]

        second = run(fetch_one(url, resolver=resolver))  # new pool: resolves again
        assert second.outcome is FeedOutcome.BLOCKED
        assert connect_spy == [("127.0.0.2", canary.port)]
        assert server.hits("/feed.xml") == 1


# --- F-05: schemes and paths ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "file: scheme is not allowed"),
        ("/etc/passwd", "not an absolute URL"),
        ("ftp://127.0.0.2/feed", "ftp: scheme is not allowed"),
        ("gopher://127.0.0.2:70/", "gopher: scheme is not allowed"),
        ("data:text/xml,<rss/>", "data: scheme is not allowed"),
        ("javascript:alert(1)", "javascript: scheme is not allowed"),
    ],
)
def test_non_http_url_is_refused_without_connecting(
    url: str, reason: str, connect_spy: list[tuple[str, int]]
) -> None:
    result = run(fetch_one(url))
    assert result.outcome is FeedOutcome.BLOCKED
    assert result.error is not None and reason in result.error
    assert connect_spy == []


def test_feed_scheme_is_fetched_as_http(feed_server: FeedServer) -> None:
    feed_server.route("/feed.xml", body=RSS)
    result = run(fetch_one(f"feed://127.0.0.2:{feed_server.port}/feed.xml"))
    assert result.outcome is FeedOutcome.OK
    assert result.final_url == feed_server.url("/feed.xml")
    assert isinstance(result.body, bytes)  # the parser only ever gets bytes


# --- F-06: size cap -------------------------------------------------------------------


def _fifty_megabytes() -> Iterator[bytes]:
    block = b"x" * (64 * 1024)
    for _ in range(50 * MiB // len(block)):
        yield block


@pytest.mark.parametrize(
    ("framing", "route"),
    [
        ("true Content-Length", Route(body=_fifty_megabytes, content_length=50 * MiB)),
        ("chunked", Route(body=_fifty_megabytes)),
    ],
)
def test_large_body_is_aborted_at_the_cap(
    framing: str, route: Route, feed_server: FeedServer
) -> None:
    feed_server.route("/big.xml", route)
    feed_server.route("/next.xml", body=RSS)

    async def big_then_next() -> tuple[FetchResult, FetchResult]:
        async with Fetcher(fetch_settings()) as fetcher:
            return (
                await fetcher.fetch(feed_server.url("/big.xml")),
                await fetcher.fetch(feed_server.url("/next.xml")),
            )

    with PeakRSS() as rss:
        big, following = run(big_then_next())
    assert big.outcome is FeedOutcome.TOO_LARGE, framing
    assert big.error == "response exceeds 5 MiB"
    assert big.body is None
    assert rss.growth < 5 * MiB + 16 * MiB
    assert following.outcome is FeedOutcome.OK  # the next feed is still polled


def test_lying_content_length_reads_no_more_than_announced(feed_server: FeedServer) -> None:
    feed_server.route("/liar.xml", body=_fifty_megabytes, content_length=100)

    with FeedServer() as other:
        other.route("/next.xml", body=RSS)

        async def liar_then_next() -> tuple[FetchResult, FetchResult]:
            async with Fetcher(fetch_settings()) as fetcher:
                return (
                    await fetcher.fetch(feed_server.url("/liar.xml")),
                    await fetcher.fetch(other.url("/next.xml")),
                )

        with PeakRSS() as rss:
            liar, following = run(liar_then_next())
    # aiohttp stops at the announced 100 bytes. The rest is junk on that connection, which
    # it may report as a bad response (then or on the next request to the same server).
    # Either way nothing beyond 100 bytes is kept, and other feeds are unaffected.
    if liar.outcome is FeedOutcome.OK:
        assert liar.body == b"x" * 100
    else:
        assert liar.outcome is FeedOutcome.CONNECTION_ERROR
        assert liar.error is not None and len(liar.error) <= 300
    assert rss.growth < 5 * MiB + 16 * MiB
    assert following.outcome is FeedOutcome.OK


def test_body_of_exactly_the_cap_is_accepted_and_one_byte_more_is_not(
    feed_server: FeedServer,
) -> None:
    cap = 64 * 1024
    feed_server.route("/exact", body=b"a" * cap, chunked=True)
    feed_server.route("/over", body=b"a" * (cap + 1), chunked=True)
    settings = fetch_settings(max_bytes=cap)

    async def both() -> tuple[FetchResult, FetchResult]:
        async with Fetcher(settings) as fetcher:
            return (
                await fetcher.fetch(feed_server.url("/exact")),
                await fetcher.fetch(feed_server.url("/over")),
            )

    exact, over = run(both())
    assert exact.outcome is FeedOutcome.OK and exact.body is not None and len(exact.body) == cap
    assert over.outcome is FeedOutcome.TOO_LARGE
    assert over.error == "response exceeds 64 KiB"


# --- F-07: compression ----------------------------------------------------------------


@cache
def _bomb(wbits: int, total: int = 512 * MiB, block: int = MiB) -> tuple[bytes, ...]:
    """A genuine compressed stream of ``total`` zero bytes, about total/1000 bytes long,
    built without compressing ``total`` bytes: after a full flush the compressor's output
    for the same 1 MiB block repeats exactly, so one piece is reused."""
    zeros = bytes(block)
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    middle = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert middle == compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush(zlib.Z_FINISH)
    count = total // block
    if wbits > zlib.MAX_WBITS:  # gzip trailer: CRC-32 and size of the whole output
        crc = 0
        for _ in range(count):
            crc = zlib.crc32(zeros, crc)
        end = end[:-8] + struct.pack("<II", crc, total & 0xFFFFFFFF)
    elif wbits > 0:  # zlib trailer: Adler-32
        adler = 1
        for _ in range(count):
            adler = zlib.adler32(zeros, adler)
        end = end[:-4] + struct.pack(">I", adler)
    return (first, *([middle] * (count - 1)), end)


def test_bomb_builder_makes_a_valid_stream() -> None:
    small = b"".join(_bomb(16 + zlib.MAX_WBITS, total=8 * MiB))
    assert zlib.decompress(small, 16 + zlib.MAX_WBITS) == bytes(8 * MiB)


@pytest.mark.parametrize(
    ("encoding", "wbits"),
    [
        ("gzip", 16 + zlib.MAX_WBITS),
        ("deflate", zlib.MAX_WBITS),  # zlib-wrapped, as the RFC says
        ("deflate", -zlib.MAX_WBITS),  # raw, as many servers send it
    ],
)
def test_compression_bomb_is_aborted_at_the_decoded_cap(
    encoding: str, wbits: int, feed_server: FeedServer
) -> None:
    pieces = _bomb(wbits)
    assert sum(map(len, pieces)) < 600 * 1024  # 0.5 MB on the wire → 512 MiB decoded
    feed_server.route(
        "/bomb.xml", body=lambda: iter(pieces), headers={"Content-Encoding": encoding}
    )
    with PeakRSS() as rss:
        result = run(fetch_one(feed_server.url("/bomb.xml")))
    assert result.outcome is FeedOutcome.TOO_LARGE
    assert result.error == "response exceeds 5 MiB"
    assert rss.growth < 32 * MiB


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_feed_is_decoded(encoding: str, feed_server: FeedServer) -> None:
    body = zlib.compress(RSS) if encoding == "deflate" else _gzip(RSS)
    feed_server.route("/feed.xml", body=body, headers={"Content-Encoding": encoding})
    result = run(fetch_one(feed_server.url("/feed.xml")))
    assert result.outcome is FeedOutcome.OK
    assert result.body == RSS
    assert result.headers["content-encoding"] == encoding


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    "body",
    [
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"garbage that is not deflate" * 10,
        b"not gzip at all",
        _gzip(RSS)[:-12],  # cut short: no final block, no trailer
    ],
)
def test_corrupt_gzip_is_a_bad_compression_error(body: bytes, feed_server: FeedServer) -> None:
    feed_server.route("/feed.xml", body=body, headers={"Content-Encoding": "gzip"})
    result = run(fetch_one(feed_server.url("/feed.xml")))
    assert result.outcome is FeedOutcome.CONNECTION_ERROR
    assert result.error is not None and result.error.startswith("bad compression")


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, gzip"])
def test_unrequested_content_encoding_is_an_error(encoding: str, feed_server: FeedServer) -> None:
    feed_server.route(
        "/feed.xml", body=b"\x0b\x02\x80hello\x03", headers={"Content-Encoding": encoding}
    )
    result = run(fetch_one(feed_server.url("/feed.xml")))
    assert result.outcome is FeedOutcome.CONNECTION_ERROR
    assert result.error == f"unrequested content encoding {encoding!r}"


# --- F-08: slow servers ---------------------------------------------------------------


def test_slow_drip_and_silent_server_hit_the_deadline_while_other_feeds_complete(
    feed_server: FeedServer,
) -> None:
    feed_server.route("/drip.xml", body=RSS, chunk_size=1, delay=0.5)
    feed_server.route("/hang.xml", hang=True)
    feed_server.route("/fine.xml", body=RSS)
    settings = fetch_settings(deadline=3.0, read_timeout=20.0)

    async def together() -> list[FetchResult]:
        async with Fetcher(settings) as fetcher:
            paths = ["/drip.xml", "/hang.xml", "/fine.xml"]
            return await asyncio.gather(*(fetcher.fetch(feed_server.url(p)) for p in paths))

    started = time.monotonic()
    drip, hang, fine = run(together())
    duration = time.monotonic() - started
    for slow in (drip, hang):
        assert slow.outcome is FeedOutcome.TIMEOUT
        assert slow.error == "timed out after 3 s"
        assert slow.body is None
    assert fine.outcome is FeedOutcome.OK
    assert fine.elapsed < 1.0
    assert duration < 3.0 + 1.5


def test_silence_longer_than_the_read_timeout_is_a_timeout(feed_server: FeedServer) -> None:
    feed_server.route("/hang.xml", hang=True)
    settings = fetch_settings(read_timeout=0.3, deadline=10.0)
    result = run(fetch_one(feed_server.url("/hang.xml"), settings))
    assert result.outcome is FeedOutcome.TIMEOUT
    assert result.error == "timed out waiting for data from the server"
    assert result.elapsed < 2.0


# --- F-09: broken connections ---------------------------------------------------------


def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as probe:  # a port on 127.0.0.2 with nobody listening
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    result = run(fetch_one(f"http://127.0.0.2:{port}/feed.xml"))
    assert result.outcome is FeedOutcome.CONNECTION_ERROR
    assert result.error is not None
    assert result.error.startswith(f"could not connect to 127.0.0.2:{port}")
    assert "refused" in result.error.lower()


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        (Route(body=RSS * 100, drop_after=500), "not enough data"),  # FIN mid-body
        (Route(body=RSS * 1000, drop_after=5000, reset=True), ""),  # RST mid-body
        (Route(body=lambda: iter([RSS] * 10), drop_after=300), "transfer length"),  # chunked
    ],
    ids=["closed-mid-body", "reset-mid-body", "truncated-chunked"],
)
def test_broken_body_is_a_connection_error_with_the_reason(
    route: Route, reason: str, feed_server: FeedServer
) -> None:
    feed_server.route("/feed.xml", route)
    feed_server.route("/next.xml", body=RSS)

    async def broken_then_next() -> tuple[FetchResult, FetchResult]:
        async with Fetcher(fetch_settings()) as fetcher:
            return (
                await fetcher.fetch(feed_server.url("/feed.xml")),
                await fetcher.fetch(feed_server.url("/next.xml")),
            )

    broken, following = run(broken_then_next())
    assert broken.outcome is FeedOutcome.CONNECTION_ERROR
    assert broken.body is None
    assert broken.error is not None and reason in broken.error.lower()
    assert following.outcome is FeedOutcome.OK


# --- F-10: statuses and conditional GET -----------------------------------------------


def test_etag_is_sent_back_and_304_means_not_modified(feed_server: FeedServer) -> None:
    feed_server.route("/feed.xml", body=RSS, etag='"v1"')

    async def twice() -> tuple[FetchResult, FetchResult]:
        async with Fetcher(fetch_settings()) as fetcher:
            first = await fetcher.fetch(feed_server.url("/feed.xml"))
            return first, await fetcher.fetch(feed_server.url("/feed.xml"), etag=first.etag)

    first, second = run(twice())
    assert first.outcome is FeedOutcome.OK and first.etag == '"v1"'
    assert second.outcome is FeedOutcome.NOT_MODIFIED
    assert second.http_status == 304 and second.not_modified
    assert second.body is None
    assert second.etag == '"v1"'
    assert feed_server.requests_for("/feed.xml")[1].headers["if-none-match"] == '"v1"'


def test_last_modified_is_sent_back_and_304_means_not_modified(feed_server: FeedServer) -> None:
    stamp = "Wed, 21 Oct 2026 07:28:00 GMT"
    feed_server.route("/feed.xml", body=RSS, last_modified=stamp)

    async def twice() -> tuple[FetchResult, FetchResult]:
        async with Fetcher(fetch_settings()) as fetcher:
            first = await fetcher.fetch(feed_server.url("/feed.xml"))
            second = await fetcher.fetch(
                feed_server.url("/feed.xml"), last_modified=first.last_modified
            )
            return first, second

    first, second = run(twice())
    assert first.last_modified == stamp
    assert second.outcome is FeedOutcome.NOT_MODIFIED
    assert second.last_modified == stamp
    assert feed_server.requests_for("/feed.xml")[1].headers["if-modified-since"] == stamp


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (404, "HTTP 404 Not Found"),
        (410, "HTTP 410 Gone"),  # the poller counts 410s and disables the feed
        (500, "HTTP 500 Internal Server Error"),
        (403, "HTTP 403 Forbidden"),
    ],
)
def test_error_status_is_an_http_error(status: int, message: str, feed_server: FeedServer) -> None:
    feed_server.route("/feed.xml", status=status, body=b"<html>nope</html>")
    result = run(fetch_one(feed_server.url("/feed.xml")))
    assert result.outcome is FeedOutcome.HTTP_ERROR
    assert result.http_status == status
    assert result.error == message
    assert result.body is None
    assert result.retry_after is None


def test_retry_after_seconds_and_dates_are_honoured(feed_server: FeedServer) -> None:
    later = datetime.now(UTC) + timedelta(seconds=120)
    feed_server.route("/busy", status=429, headers={"Retry-After": "90"})
    feed_server.route("/down", status=503, headers={"Retry-After": format_datetime(later, True)})
    feed_server.route("/odd", status=503, headers={"Retry-After": "soon"})

    async def three() -> list[FetchResult]:
        async with Fetcher(fetch_settings()) as fetcher:
            return [await fetcher.fetch(feed_server.url(p)) for p in ("/busy", "/down", "/odd")]

    busy, down, odd = run(three())
    assert busy.outcome is FeedOutcome.HTTP_ERROR and busy.http_status == 429
    assert busy.retry_after == 90.0
    assert down.http_status == 503 and down.retry_after is not None
    assert 100 < down.retry_after <= 120
    assert odd.retry_after is None


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:01:00 GMT", now) == 60.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None


def test_html_page_is_returned_as_bytes_with_its_content_type(feed_server: FeedServer) -> None:
    page = b"<!doctype html><html><body>Not a feed</body></html>"
    feed_server.route("/feed.xml", body=page, content_type="text/html; charset=utf-8")
    result = run(fetch_one(feed_server.url("/feed.xml")))
    assert result.outcome is FeedOutcome.OK  # deciding "not a feed" is the parser's job
    assert result.body == page
    assert result.headers["content-type"] == "text/html; charset=utf-8"


# --- F-11: redirect loops and chains --------------------------------------------------


def test_redirect_loop_is_too_many_redirects(feed_server: FeedServer) -> None:
    feed_server.redirect("/a", "/b")
    feed_server.redirect("/b", "/a")
    result = run(fetch_one(feed_server.url("/a")))
    assert result.outcome is FeedOutcome.REDIRECT_ERROR
    assert result.error == "too many redirects (more than 5)"
    assert feed_server.hits() == 6


def test_six_hop_chain_is_too_many_and_five_hops_are_fine(feed_server: FeedServer) -> None:
    for hop in range(1, 7):
        feed_server.redirect(f"/r{hop}", f"/r{hop + 1}", status=301)
    feed_server.route("/r7", body=RSS)

    async def both() -> tuple[FetchResult, FetchResult]:
        async with Fetcher(fetch_settings()) as fetcher:
            return (
                await fetcher.fetch(feed_server.url("/r1")),  # 6 redirects
                await fetcher.fetch(feed_server.url("/r2")),  # 5 redirects
            )

    six, five = run(both())
    assert six.outcome is FeedOutcome.REDIRECT_ERROR
    assert six.error == "too many redirects (more than 5)"
    assert six.permanent_redirect is None
    assert five.outcome is FeedOutcome.OK
    assert five.final_url == feed_server.url("/r7")
    assert feed_server.hits("/r7") == 1  # never requested by the six-hop fetch


# --- F-12: TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed, so no self-signed certificate can be made")
    directory: Path = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.2",
            "-addext", "subjectAltName=IP:127.0.0.2",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_self_signed_certificate_is_a_verification_error_never_downgraded(
    self_signed: ssl.SSLContext,
) -> None:
    with FeedServer(tls=self_signed) as server:
        server.route("/feed.xml", body=RSS)
        result = run(fetch_one(server.url("/feed.xml")))
        assert result.outcome is FeedOutcome.CONNECTION_ERROR
        assert result.error is not None
        assert result.error.startswith("TLS certificate verification failed for 127.0.0.2")
        assert "self-signed" in result.error or "self signed" in result.error
        assert server.hits() == 0  # no request went over an unverified channel


def test_https_to_http_redirect_is_refused(self_signed: ssl.SSLContext) -> None:
    # verify_tls=False is the editor's explicit opt-out; used here only to reach the hop.
    with FeedServer(tls=self_signed) as tls_server, FeedServer() as plain:
        plain.route("/feed.xml", body=RSS)
        tls_server.redirect("/feed.xml", plain.url("/feed.xml"), status=301)
        result = run(fetch_one(tls_server.url("/feed.xml"), fetch_settings(verify_tls=False)))
        assert result.outcome is FeedOutcome.REDIRECT_ERROR
        assert result.error is not None and "from https to http" in result.error
        assert plain.hits() == 0


# --- the API itself -------------------------------------------------------------------


def test_fetcher_must_be_opened_first() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        run(Fetcher(fetch_settings()).fetch("http://127.0.0.2/"))


def test_many_concurrent_fetches_share_one_pool(feed_server: FeedServer) -> None:
    for index in range(40):
        feed_server.route(f"/f{index}.xml", body=RSS)
    settings = fetch_settings(concurrency=8, per_host=4)

    async def many() -> list[FetchResult]:
        async with Fetcher(settings) as fetcher:
            urls = [feed_server.url(f"/f{index}.xml") for index in range(40)]
            return await asyncio.gather(*(fetcher.fetch(url) for url in urls))

    results = run(many())
    assert all(result.outcome is FeedOutcome.OK for result in results)
    assert feed_server.hits() == 40
