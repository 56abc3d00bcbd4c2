"""HTTP fetching: the one part of qasid that talks to feed servers.

``Fetcher.fetch`` turns every per-feed problem into a ``FetchResult`` with an outcome and a
message; it never raises for them. What it guarantees (RELIABILITY.md, facts 4 and 5):

- The SSRF guard runs on the address actually connected to: names are checked inside the
  connector's resolver (aiohttp connects to exactly what the resolver returned, so DNS
  rebinding cannot slip between check and connect) and IP literals, which aiohttp never
  resolves, are checked before the request. Every redirect hop goes through both.
- Redirects are followed here, hop by hop, each target re-validated.
- The body cap applies to the *decoded* size: aiohttp's decompression is off and gzip or
  deflate is inflated with ``max_length``, so a bomb costs at most the cap in memory.
- A wall-clock deadline bounds the whole fetch, redirects and slow-drip bodies included.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from pipeline.core.errors import BlockedAddressError, FeedURLError
from pipeline.core.models import FeedOutcome, FetchResult
from pipeline.core.urls import (
    AllowList,
    blocked_message,
    check_feed_url,
    is_localhost_name,
    literal_address,
    parse_allow_list,
    resolve_redirect,
)
from pipeline.settings import FetchSettings

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECT_STATUSES = frozenset({301, 308})
MAX_ERROR = 300  # characters; some library messages quote whole response lines
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)


class GuardedResolver(AbstractResolver):
    """Resolves through ``inner`` and refuses the whole answer if any address in it is not
    allowed, so a name that maps to a public and a private address is refused outright.
    Names listed in the allow list are trusted whatever they resolve to."""

    def __init__(self, allow: AllowList, inner: AbstractResolver) -> None:
        self._allow = allow
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results:
            # aiohttp asserts on an empty answer; make it an ordinary resolution failure.
            raise OSError(f"no addresses found for {host}")
        if self._allow.allows_host(host):
            return results
        for result in results:
            address = ipaddress.ip_address(result["host"])
            if not self._allow.allows_address(address):
                raise BlockedAddressError(host, blocked_message(address))
        return results

    async def close(self) -> None:
        await self._inner.close()


class Fetcher:
    """Fetches feeds over HTTP(S). Use as ``async with Fetcher(settings) as fetcher``.

    ``resolver`` replaces the system resolver underneath the guard (tests inject a fake).
    One instance shares a connection pool of ``settings.concurrency`` connections, at most
    ``settings.per_host`` per host; ``fetch`` may be awaited concurrently.
    """

    def __init__(self, settings: FetchSettings, resolver: AbstractResolver | None = None) -> None:
        self._settings = settings
        self._allow = parse_allow_list(settings.allow_hosts)
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        inner = self._resolver or aiohttp.ThreadedResolver()
        connector = aiohttp.TCPConnector(
            limit=self._settings.concurrency,
            limit_per_host=self._settings.per_host,
            resolver=GuardedResolver(self._allow, inner),
            ssl=self._settings.verify_tls,  # a failed verification is reported, never retried
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # we inflate ourselves, under the cap
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self._settings.connect_timeout,
                sock_read=self._settings.read_timeout,
            ),
            headers={
                "User-Agent": self._settings.user_agent,
                "Accept": ACCEPT,
                "Accept-Encoding": "gzip, deflate",
            },
            cookie_jar=aiohttp.DummyCookieJar(),  # no state carried from one feed to another
            trust_env=False,  # a proxy would resolve names where our guard cannot see
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self, url: str, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """Fetch ``url``, conditionally when ``etag``/``last_modified`` are given.

        Returns a FetchResult for every per-feed outcome (blocked, timeout, HTTP error,
        too large, ...); raises only on programming errors or when used outside
        ``async with``.
        """
        if self._session is None:
            raise RuntimeError("Fetcher is not open: use 'async with Fetcher(...)'")
        trail = _Trail(url, url)
        started = time.monotonic()
        deadline = self._settings.deadline
        wall_clock = asyncio.timeout(deadline)
        try:
            async with wall_clock:
                result = await self._follow(self._session, trail, etag, last_modified)
        except TimeoutError:
            # Not ours when the library raised a bare TimeoutError (a DNS lookup can).
            message = f"timed out after {deadline:g} s" if wall_clock.expired() else "timed out"
            result = trail.failure(FeedOutcome.TIMEOUT, message)
        return replace(result, elapsed=time.monotonic() - started)

    async def _follow(
        self,
        session: aiohttp.ClientSession,
        trail: _Trail,
        etag: str | None,
        last_modified: str | None,
    ) -> FetchResult:
        try:
            trail.current = check_feed_url(trail.url)
        except FeedURLError as error:
            return trail.failure(FeedOutcome.BLOCKED, str(error))
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        permanent = True
        try:
            for _ in range(self._settings.max_redirects + 1):
                refused = self._refused_before_connect(trail.current)
                if refused:
                    return trail.failure(FeedOutcome.BLOCKED, trail.describe(refused))
                async with session.get(
                    trail.current, headers=headers, allow_redirects=False
                ) as response:
                    if response.status not in REDIRECT_STATUSES:
                        result = await self._final(trail, response, etag, last_modified)
                        if trail.hops and permanent and not result.outcome.is_failure:
                            result = replace(result, permanent_redirect=trail.current)
                        return result
                    try:
                        target = resolve_redirect(trail.current, response.headers.get("Location"))
                    except FeedURLError as error:
                        return trail.failure(
                            FeedOutcome.REDIRECT_ERROR,
                            f"bad redirect from {trail.current} ({response.status}): {error}",
                        )
                    permanent = permanent and response.status in PERMANENT_REDIRECT_STATUSES
                    trail.current = target
                    trail.hops += 1
            return trail.failure(
                FeedOutcome.REDIRECT_ERROR,
                f"too many redirects (more than {self._settings.max_redirects})",
            )
        except BlockedAddressError as error:
            return trail.failure(FeedOutcome.BLOCKED, trail.describe(error.message))
        except _BodyError as error:
            return trail.failure(error.outcome, error.message, http_status=error.status)
        except aiohttp.ClientError as error:
            return trail.failure(*self._describe_client_error(error))
        except OSError as error:  # e.g. a reset surfacing straight from the transport
            return trail.failure(FeedOutcome.CONNECTION_ERROR, f"connection error: {error}")

    def _refused_before_connect(self, url: str) -> str | None:
        """The refusal for a host that can be judged without DNS: an IP literal (aiohttp
        never passes those to the resolver) or a localhost name; None otherwise."""
        host = urlsplit(url).hostname or ""
        if self._allow.allows_host(host):
            return None
        if is_localhost_name(host):
            return blocked_message(host)
        address = literal_address(host)
        if address is None or self._allow.allows_address(address):
            return None
        return blocked_message(address)

    async def _final(
        self,
        trail: _Trail,
        response: aiohttp.ClientResponse,
        etag: str | None,
        last_modified: str | None,
    ) -> FetchResult:
        status = response.status
        headers = _lower_headers(response.headers.items())
        new_etag = headers.get("etag")
        new_modified = headers.get("last-modified")
        if status == 304:
            return FetchResult(
                url=trail.url,
                final_url=trail.current,
                http_status=304,
                headers=headers,
                etag=new_etag or etag,
                last_modified=new_modified or last_modified,
                outcome=FeedOutcome.NOT_MODIFIED,
            )
        if not 200 <= status < 300:
            retry_after = None
            if status in (429, 503):
                retry_after = parse_retry_after(headers.get("retry-after"), datetime.now(UTC))
            reason = f" {response.reason}" if response.reason else ""
            return trail.failure(
                FeedOutcome.HTTP_ERROR,
                f"HTTP {status}{reason}",
                http_status=status,
                headers=headers,
                retry_after=retry_after,
            )
        body = await self._read_body(response, status)
        return FetchResult(
            url=trail.url,
            final_url=trail.current,
            http_status=status,
            body=body,
            headers=headers,
            etag=new_etag,
            last_modified=new_modified,
        )

    async def _read_body(self, response: aiohttp.ClientResponse, status: int) -> bytes:
        cap = self._settings.max_bytes
        too_large = _BodyError(FeedOutcome.TOO_LARGE, f"response exceeds {_size(cap)}", status)
        # Content-Length counts the encoded bytes; a compressed body over the cap would
        # decode to more still, so refuse it before reading anything.
        if response.content_length is not None and response.content_length > cap:
            raise too_large
        decoder = _Decoder(response.headers.get("Content-Encoding", ""), status)
        chunks: list[bytes] = []
        raw_size = size = 0
        async for data in response.content.iter_any():
            raw_size += len(data)
            if raw_size > cap:
                raise too_large
            out = decoder.decode(data, cap - size + 1)
            size += len(out)
            if size > cap:
                raise too_large
            chunks.append(out)
        decoder.finish(raw_size)
        return b"".join(chunks)

    @staticmethod
    def _describe_client_error(error: aiohttp.ClientError) -> tuple[FeedOutcome, str]:
        if isinstance(error, aiohttp.ConnectionTimeoutError):
            return FeedOutcome.TIMEOUT, "timed out while connecting"
        if isinstance(error, aiohttp.SocketTimeoutError):
            return FeedOutcome.TIMEOUT, "timed out waiting for data from the server"
        if isinstance(error, aiohttp.ClientConnectorCertificateError):
            cert = error.certificate_error
            detail = getattr(cert, "verify_message", None) or getattr(cert, "reason", None)
            return (
                FeedOutcome.CONNECTION_ERROR,
                f"TLS certificate verification failed for {error.host}: {detail or cert}",
            )
        if isinstance(error, aiohttp.ClientConnectorSSLError):
            return FeedOutcome.CONNECTION_ERROR, f"TLS error with {error.host}: {error.os_error}"
        if isinstance(error, aiohttp.ClientConnectorDNSError):
            reason = _os_reason(error.os_error)
            return FeedOutcome.CONNECTION_ERROR, f"could not resolve {error.host}: {reason}"
        if isinstance(error, aiohttp.ClientConnectorError):
            reason = _os_reason(error.os_error)
            return (
                FeedOutcome.CONNECTION_ERROR,
                f"could not connect to {error.host}:{error.port}: {reason}",
            )
        if isinstance(error, aiohttp.ServerDisconnectedError):
            return FeedOutcome.CONNECTION_ERROR, "the server closed the connection"
        if isinstance(error, aiohttp.ClientPayloadError):
            return FeedOutcome.CONNECTION_ERROR, f"incomplete response body: {error}"
        if isinstance(error, aiohttp.ClientResponseError):
            return FeedOutcome.CONNECTION_ERROR, f"invalid HTTP response: {error.message}"
        return FeedOutcome.CONNECTION_ERROR, f"connection error: {error}"


@dataclass
class _Trail:
    """Where a fetch has got to, so that any failure can name the URL it happened at."""

    url: str  # as asked for
    current: str  # the URL being requested now
    hops: int = 0

    def describe(self, reason: str) -> str:
        return f"redirect to {self.current} refused: {reason}" if self.hops else reason

    def failure(
        self,
        outcome: FeedOutcome,
        error: str,
        *,
        http_status: int | None = None,
        headers: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> FetchResult:
        return FetchResult(
            url=self.url,
            final_url=self.current,
            http_status=http_status,
            headers=headers or {},
            retry_after=retry_after,
            error=error if len(error) <= MAX_ERROR else error[: MAX_ERROR - 3] + "...",
            outcome=outcome,
        )


class _BodyError(Exception):
    """Reading the body failed in a way that has its own outcome (size, encoding)."""

    def __init__(self, outcome: FeedOutcome, message: str, status: int) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.status = status


class _Decoder:
    """Inflates a gzip or deflate body under an output limit per call."""

    def __init__(self, content_encoding: str, status: int) -> None:
        self._status = status
        self._encoding = content_encoding.strip().lower()
        self._inflater: zlib._Decompress | None = None
        self._pending = b""  # deflate: bytes held until the zlib header can be seen
        if self._encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self._encoding not in ("", "identity", "deflate"):
            raise self._error(f"unrequested content encoding {content_encoding!r}")

    def decode(self, data: bytes, max_length: int) -> bytes:
        """Decoded bytes for ``data``; at most ``max_length`` of them, so that the caller
        sees the cap crossed without the whole expansion ever being held."""
        if self._encoding == "deflate" and self._inflater is None:
            data = self._pending + data
            if len(data) < 2:
                self._pending = data
                return b""
            # "deflate" should be zlib-wrapped, but many servers send a raw stream.
            wrapped = (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        if self._inflater is None:
            return data
        try:
            return self._inflater.decompress(data, max_length)
        except zlib.error as error:
            raise self._error(f"bad compression ({self._encoding}: {error})") from error

    def finish(self, raw_size: int) -> None:
        if self._inflater is not None and raw_size and not self._inflater.eof:
            raise self._error(f"bad compression ({self._encoding} stream is truncated)")
        if self._encoding == "deflate" and self._pending:
            raise self._error("bad compression (deflate stream is truncated)")

    def _error(self, message: str) -> _BodyError:
        return _BodyError(FeedOutcome.CONNECTION_ERROR, message, self._status)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP date)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _lower_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _os_reason(error: OSError) -> str:
    # Happy-eyeballs wraps the cause as "Connect call failed (...)"; the errno says why.
    if isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno)
    return str(error.strerror or error)


def _size(limit: int) -> str:
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit % factor == 0:
            return f"{limit // factor} {unit}"
    return f"{limit} bytes"
