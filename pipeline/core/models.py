"""Domain types, named for their pipeline stage: FeedSource → FetchResult → ParsedFeed /
ParsedEntry → Item. All immutable; adapters build them, the core transforms them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class FeedOutcome(StrEnum):
    """What happened the last time a feed was polled. Stored per feed."""

    OK = "ok"  # fetched and parsed, entries stored
    MALFORMED = "malformed"  # ill-formed but yielded entries: kept, with a warning
    NOT_MODIFIED = "not_modified"  # 304, or a body identical to the last one
    HTTP_ERROR = "http_error"  # 4xx/5xx
    GONE = "gone"  # 410 too many times: feed disabled
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    NOT_A_FEED = "not_a_feed"  # HTML page, empty body, nothing feedparser recognised
    PARSE_ERROR = "parse_error"  # the parser raised or ran out of time
    CONNECTION_ERROR = "connection_error"  # refused, reset, truncated, TLS, bad compression
    REDIRECT_ERROR = "redirect_error"  # loops, too many hops, bad Location
    BLOCKED = "blocked"  # SSRF guard refused the destination
    NEVER = "never"  # not polled yet

    @property
    def is_failure(self) -> bool:
        return self not in (
            FeedOutcome.OK,
            FeedOutcome.MALFORMED,
            FeedOutcome.NOT_MODIFIED,
            FeedOutcome.NEVER,
        )


@dataclass(frozen=True)
class FeedSource:
    """A feed as configured by an editor (config/feeds.toml, OPML or the CLI)."""

    url: str
    title: str = ""
    language: str = "en"
    country: str = ""  # ISO 3166 alpha-2 of the outlet, e.g. "PK", "US", "QA"
    kind: str = ""  # newspaper, wire, broadcaster, government, state_media, search, magazine
    interval_minutes: int = 30
    site_url: str = ""


@dataclass(frozen=True)
class FeedState:
    """What the store knows about a feed between polls (conditional GET and back-off)."""

    id: int
    url: str
    title: str = ""
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    interval_minutes: int = 30
    failures: int = 0  # consecutive failures
    gone_count: int = 0  # consecutive 410 answers
    enabled: bool = True
    status: str = FeedOutcome.NEVER.value
    last_checked_at: datetime | None = None
    next_poll_at: datetime | None = None
    language: str = "en"
    country: str = ""
    kind: str = ""
    site_url: str = ""
    origin: str = ""
    last_error: str | None = None
    http_status: int | None = None
    error_total: int = 0
    last_success_at: datetime | None = None
    items: int = 0  # stored items first seen in this feed (filled by listings only)


@dataclass(frozen=True)
class StoreCounts:
    """What one batch of items did to the store."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0  # the same story already stored from another feed


@dataclass(frozen=True)
class FetchResult:
    """The outcome of one HTTP fetch. ``body`` is None unless the server sent a new one."""

    url: str  # the URL asked for
    final_url: str  # after redirects
    http_status: int | None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None  # new URL when every hop was 301/308
    retry_after: float | None = None  # seconds, from Retry-After on 429/503
    error: str | None = None  # human message when the fetch failed
    outcome: FeedOutcome = FeedOutcome.OK
    elapsed: float = 0.0

    @property
    def not_modified(self) -> bool:
        return self.http_status == 304


@dataclass(frozen=True)
class ParsedEntry:
    """One entry as feedparser saw it. Strings are untrusted: raw feed text."""

    guid: str | None
    link: str | None
    title: str | None
    summary: str | None  # raw HTML: relative links unresolved, nothing sanitized
    published: datetime | None  # aware UTC, or None when missing/unparseable
    updated: datetime | None = None
    author: str | None = None
    source: str | None = None  # the outlet an aggregator credits (RSS <source>)
    language: str | None = None
    # What relative links in ``summary`` resolve against: its xml:base, else the document's
    # URL (None: the entry's link, else the feed's URL).
    base: str | None = None


@dataclass(frozen=True)
class ParsedFeed:
    """A whole parsed document."""

    version: str  # "" when feedparser recognised no feed format
    title: str
    link: str
    language: str | None
    entries: tuple[ParsedEntry, ...]
    bozo: bool = False
    bozo_reason: str | None = None


@dataclass(frozen=True)
class Item:
    """A normalised, sanitized news item ready to store."""

    guid_key: str  # feed-scoped identity: normalised guid, else link, else hash
    link: str  # canonical (tracking parameters and fragment removed); "" if none was safe
    title: str  # plain text
    summary_html: str  # sanitized HTML
    summary_text: str  # plain text copy
    published: datetime  # aware UTC; fetch time when missing or absurd
    language: str
    author: str = ""
    source: str = ""  # the outlet an aggregator credits; "" for the feed's own items
    content_hash: str = ""  # of title + summary, to detect updates at the source
    published_missing: bool = False
