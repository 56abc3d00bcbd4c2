"""Fetched bytes → ParsedFeed, with feedparser, safely.

- feedparser only ever gets an in-memory binary stream (``io.BytesIO``). Never a str (it
  opens URLs and local paths, RELIABILITY fact 1) and never bare bytes either: feedparser
  6.0.14 calls ``open()`` on bytes too, so a body of ``/etc/passwd`` or ``/dev/zero`` would
  be read from disk.
- Every feedparser exception becomes ``FeedError(outcome="parse_error")`` (fact 2).
- Entity declarations that could expand (billion laughs, external entities) are removed
  before parsing, so hostile DTDs cost nothing.
- ``ParsePool`` runs parses in worker processes with a wall-clock limit per parse, killing a
  worker that overruns: a markup-dense 1 MB entry costs feedparser seconds, and no feed may
  stall a poll.
- ``parse_feed_since`` parses only what changed: a well-formed UTF-8 document is cut at its
  entries with expat's byte offsets, and feedparser gets the document with only the entries
  whose bytes it has not seen in the feed's last stored poll (``EntryHashes``, which the
  poller keeps per feed). Whatever the splice could get wrong is parsed whole instead.

Strings in the result are raw feed text (untrusted, to be sanitized by
``pipeline.core.normalize``) but always UTF-8-encodable and free of NULs.
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import hashlib
import io
import itertools
import multiprocessing
import re
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from xml.parsers import expat

import feedparser
import feedparser.mixin
from pebble import ProcessExpired, ProcessPool

from pipeline.core.errors import FeedError
from pipeline.core.models import FeedOutcome, ParsedEntry, ParsedFeed
from pipeline.core.normalize import clean_text, entry_guid_key

if TYPE_CHECKING:  # settings pull in pydantic: 18 MB and 0.7 s per parse worker
    from pipeline.settings import FetchSettings

DEFAULT_MAX_ENTRIES = 200
_T = TypeVar("_T")
_PAIR = struct.Struct("<QQ")  # EntryHashes: entry digest, guid_key digest
# Dates outside these years are feed bugs (0001, 9999) rather than news; they become None.
MIN_YEAR, MAX_YEAR = 1900, 2200
BOZO_REASON_MAX = 500
# A worker is replaced after this many parses, returning whatever memory feedparser's
# allocations fragmented.
TASKS_PER_WORKER = 500

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PARSE_ERROR = FeedOutcome.PARSE_ERROR.value
NOT_A_FEED = FeedOutcome.NOT_A_FEED.value


# --- text hygiene ------------------------------------------------------------------------------
def _text(value: object) -> str | None:
    """A feedparser value as a str that PostgreSQL and UTF-8 accept, or None."""
    if not isinstance(value, str):
        return None
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from &#xDC00; in the loose parser
        value = value.encode("utf-8", "ignore").decode("utf-8")
    return value


def _datetime(value: object) -> datetime | None:
    """feedparser's *_parsed struct_time (always UTC) → aware UTC datetime, or None."""
    if not isinstance(value, time.struct_time):
        return None
    if not MIN_YEAR <= value.tm_year <= MAX_YEAR:
        return None
    try:
        # timegm, not datetime(*value[:6]): it normalises leap seconds and other overflow.
        return _EPOCH + timedelta(seconds=calendar.timegm(value))
    except (OverflowError, ValueError):
        return None


# --- hostile DTDs -------------------------------------------------------------------------------
_ENTITY_DECLARATION = re.compile(rb"<!ENTITY(?:[^>\"']|\"[^\"]*\"|'[^']*')*>")
_SAFE_ENTITY = re.compile(
    rb"<!ENTITY\s+[A-Za-z_][\w.-]*\s+(?:\"[^\"&%<]{0,1024}\"|'[^'&%<]{0,1024}')\s*>"
)
_PROLOG_SCAN = 64 * 1024  # entity declarations can only appear before the root element


def _defuse_entities(body: bytes) -> bytes:
    """Drop every entity declaration in the prolog that could expand: ones referring to other
    entities (billion laughs), parameter entities, SYSTEM/PUBLIC (external) ones and very long
    values. feedparser tries to do this itself, but only for declarations that start a line;
    expat's amplification guard then still lets a one-line billion laughs cost about a second.
    Only plain-text values stay. A dropped entity's references are left to feedparser's loose
    parser, which keeps HTML ones such as ``&nbsp;`` and leaves others as text."""
    head = body[:_PROLOG_SCAN]
    if b"<!ENTITY" not in head:
        return body

    def keep_if_safe(match: re.Match[bytes]) -> bytes:
        return match.group(0) if _SAFE_ENTITY.fullmatch(match.group(0)) else b""

    return _ENTITY_DECLARATION.sub(keep_if_safe, head) + body[_PROLOG_SCAN:]


def _class_name(error: BaseException) -> str:
    """``UnicodeEncodeError``, but ``re.error`` rather than a bare ``error``."""
    name = type(error).__qualname__
    if name[:1].islower() and type(error).__module__ != "builtins":
        return f"{type(error).__module__}.{name}"
    return name


def _bozo_reason(error: object) -> str:
    if not isinstance(error, BaseException):
        return "ill-formed document"
    return (_text(str(error)) or _class_name(error))[:BOZO_REASON_MAX]


def _looks_like_html(body: bytes) -> bool:
    head = body[:4096].lower()
    return any(marker in head for marker in (b"<!doctype html", b"<html", b"<head", b"<body"))


# --- feedparser → ParsedFeed -------------------------------------------------------------------
def _entry_link(entry: Mapping[str, Any]) -> str | None:
    link = _text(entry.get("link"))
    if link:
        return link
    for candidate in entry.get("links") or ():
        if isinstance(candidate, Mapping) and candidate.get("rel", "alternate") == "alternate":
            href = _text(candidate.get("href"))
            if href:
                return href
    return None


def _entry_summary(entry: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The entry's summary (else its first non-empty content) and the base URI its relative
    links resolve against (xml:base, else the document's URL, as feedparser tracks it)."""
    contents = [c for c in entry.get("content") or () if isinstance(c, Mapping)]
    summary = _text(entry.get("summary"))
    if summary:
        detail = entry.get("summary_detail")
        if isinstance(detail, Mapping):
            return summary, _text(detail.get("base"))
        # feedparser copies a lone <content> into "summary" without its details
        copied = next((c for c in contents if _text(c.get("value")) == summary), None)
        return summary, _text(copied.get("base")) if copied is not None else None
    for content in contents:
        value = _text(content.get("value"))
        if value:
            return value, _text(content.get("base"))
    return None, None


def _detail_language(entry: Mapping[str, Any]) -> str | None:
    """xml:lang (or the channel's <language>, which feedparser propagates) of the entry."""
    for key in ("summary_detail", "title_detail"):
        detail = entry.get(key)
        if isinstance(detail, Mapping):
            language = _text(detail.get("language"))
            if language:
                return language
    return _text(entry.get("language"))


def _parsed_entry(entry: dict[str, Any]) -> ParsedEntry:
    summary, base = _entry_summary(entry)
    return ParsedEntry(
        guid=_text(entry.get("id")),
        link=_entry_link(entry),
        title=_text(entry.get("title")),
        summary=summary,
        published=_datetime(entry.get("published_parsed")),
        # dict.get: FeedParserDict.get("updated_parsed") falls back to published_parsed
        # (with a DeprecationWarning), which would pass off a publication date as an update.
        updated=_datetime(dict.get(entry, "updated_parsed")),
        author=_text(entry.get("author")),
        source=_text((entry.get("source") or {}).get("title")),
        language=_detail_language(entry),
        base=base or None,
    )


def newest_entries(entries: list[ParsedEntry], limit: int) -> tuple[ParsedEntry, ...]:
    """The ``limit`` newest entries, in document order. Dated entries rank by date, newest
    first; undated ones come after them in document order (feeds list newest first)."""
    if len(entries) <= limit:
        return tuple(entries)

    def rank(index: int) -> tuple[bool, float, int]:
        moment = entries[index].published or entries[index].updated
        return (moment is None, -moment.timestamp() if moment else 0.0, index)

    kept = sorted(sorted(range(len(entries)), key=rank)[:limit])
    return tuple(entries[index] for index in kept)


def _body_bytes(body: object, url: str) -> bytes:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(f"parse_feed needs the fetched bytes, not {type(body).__name__}")
    body = bytes(body)
    if not body.strip():
        raise FeedError(url, "not a feed (empty body)", outcome=NOT_A_FEED)
    return body


def _content_type_header(content_type: str | None) -> str:
    # application/xml lets the XML declaration choose the charset; without any
    # Content-Type feedparser marks every document bozo.
    return " ".join((content_type or "application/xml").split())[:200]


def _feedparser(document: bytes, url: str, content_type: str | None) -> Any:
    """feedparser's result for an already defused document; FeedError when it raises."""
    headers = {"content-type": _content_type_header(content_type), "content-location": url}
    try:
        return feedparser.parse(
            io.BytesIO(document),
            response_headers=headers,
            # Neither sanitizing nor resolving relative URIs in HTML here: each re-parses
            # every HTML field (a quarter of feedparser's time each), and nh3 does both in
            # pipeline.core.normalize, resolving links against the base feedparser tracked
            # (xml:base or the document's URL: ParsedEntry.base).
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except Exception as error:  # feedparser raises many kinds on hostile input (fact 2)
        reason = _text(f"{_class_name(error)}: {error}") or _class_name(error)
        raise FeedError(
            url, f"parser failed: {reason[:BOZO_REASON_MAX]}", outcome=PARSE_ERROR
        ) from error


def _parsed_feed(result: Any, body: bytes, url: str, max_entries: int) -> ParsedFeed:
    version = _text(result.get("version")) or ""
    raw_entries = [entry for entry in result.get("entries") or () if isinstance(entry, dict)]
    bozo_error = result.get("bozo_exception")
    if not version and not raw_entries:
        if _looks_like_html(body):
            raise FeedError(url, "not a feed (looks like an HTML page)", outcome=NOT_A_FEED)
        detail = f": {_text(str(bozo_error))}" if bozo_error else ""
        message = f"not a feed (no RSS, Atom or RDF found{detail})"[:BOZO_REASON_MAX]
        raise FeedError(url, message, outcome=NOT_A_FEED)

    channel = result.get("feed") or {}
    entries = newest_entries([_parsed_entry(entry) for entry in raw_entries], max_entries)
    bozo = bool(result.get("bozo"))
    return ParsedFeed(
        version=version,
        title=clean_text(_text(channel.get("title"))),  # HTML in a feed title is not kept
        link=_text(channel.get("link")) or "",
        language=_text(channel.get("language")) or _detail_language(channel),
        entries=entries,
        bozo=bozo,
        bozo_reason=_bozo_reason(bozo_error) if bozo else None,
    )


def parse_feed(
    body: bytes,
    url: str,
    content_type: str | None = None,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> ParsedFeed:
    """Parse a fetched body. ``url`` (the final URL) resolves relative links; ``content_type``
    is the response's Content-Type (its charset matters to feedparser).

    Raises FeedError with outcome "parse_error" when feedparser raises, and "not_a_feed"
    when nothing feed-like was found. An ill-formed feed that still yields entries comes back
    with ``bozo=True`` and the reason.
    """
    body = _body_bytes(body, url)
    result = _feedparser(_defuse_entities(body), url, content_type)
    return _parsed_feed(result, body, url, max_entries)


# --- parsing only the entries that changed ---------------------------------------------------
@dataclass(frozen=True)
class EntryHashes:
    """What a feed's last stored document held, for ``parse_feed_since``: for each entry
    whose item was stored, the digest of the entry's exact bytes and the digest of its
    item's guid_key (``entry_guid_key``), packed as 16 bytes per entry (a poller keeps one
    per feed); ``context`` digests what else shapes how its entries parse (the URL, the
    Content-Type, the document before the entries but for channel elements that cannot
    affect them). Digests are 64-bit blake2b, the same in every process."""

    context: int
    packed: bytes

    @classmethod
    def of(cls, context: int, keys: Mapping[int, int]) -> EntryHashes:
        return cls(context, b"".join(_PAIR.pack(*pair) for pair in sorted(keys.items())))

    @property
    def keys(self) -> dict[int, int]:
        """Entry digest → guid_key digest."""
        return dict(_PAIR.iter_unpack(self.packed))


@dataclass(frozen=True)
class PartialParse:
    """``parse_feed_since``'s answer. ``feed``: the document's channel and the entries not in
    ``previous`` (every entry after a full parse); ``hashes``: what to pass as ``previous``
    next time, once this poll's items are stored (None: remember nothing, parse it all next
    time); ``skipped``: entries left out as unchanged (0 after a full parse)."""

    feed: ParsedFeed
    hashes: EntryHashes | None
    skipped: int = 0


def _digest(*parts: bytes) -> int:
    hasher = hashlib.blake2b(digest_size=8)
    for part in parts:
        hasher.update(part)
    return int.from_bytes(hasher.digest(), "big")


def _key_digest(entry: ParsedEntry, url: str) -> int:
    return _digest(entry_guid_key(entry, url).encode("utf-8", "surrogatepass"))


# Channel elements that feedparser reads into the channel only: their content may change (a
# lastBuildDate changes with every update) without changing how any entry parses.
_INERT_CHANNEL_ELEMENTS = frozenset(
    {
        "title",
        "subtitle",
        "tagline",
        "description",
        "link",
        "lastBuildDate",
        "pubDate",
        "updated",
        "modified",
        "generator",
        "ttl",
        "id",
        "image",
        "icon",
        "logo",
        "copyright",
        "rights",
        "docs",
        "managingEditor",
        "webMaster",
        "category",
        "cloud",
        "skipHours",
        "skipDays",
    }
)
_ENTRY_ELEMENTS = ("item", "entry")
_END_TAG = {
    name: re.compile(rb"</(?:[^\s<>/:]+:)?" + name.encode() + rb"[\x20\t\r\n]*>")
    for name in (*_ENTRY_ELEMENTS, *_INERT_CHANNEL_ELEMENTS)
}
_SPLICE_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_XML_ENCODING = re.compile(rb"<\?xml[^>]*?encoding[\x20\t\r\n]*=[\x20\t\r\n]*[\"']([^\"']*)[\"']")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([^\"';\s]*)", re.IGNORECASE)


class _Unsafe(Exception):
    """Raised inside the tokenizer's handlers: no splice for this document."""


_FEEDPARSER_NAMESPACES = {
    uri.lower(): prefix for uri, prefix in feedparser.mixin._FeedParserMixin.namespaces.items()
}
# Declaring these can set the feed's version (feedparser's track_namespace).
_VERSION_NAMESPACES = frozenset(
    {
        "http://my.netscape.com/rdf/simple/0.9/",
        "http://purl.org/rss/1.0/",
        "http://www.w3.org/2005/atom",
    }
)


class _Namespaces:
    """What feedparser's ``track_namespace`` remembers document-wide rather than per scope,
    from the declarations before the first entry: the prefixes it maps to its own
    (``namespacemap``, read with the prefixes of element names) and the namespaces in use
    (``namespaces_in_use``: the first prefix bound to an unknown namespace names its
    elements). A declaration inside an entry may be left out of the parse (or put into it)
    only when it changes neither in a way feedparser reads: a default namespace it knows
    (the usual ``<div xmlns="http://www.w3.org/1999/xhtml">``) or a binding already made."""

    def __init__(self) -> None:
        self.prefixes: dict[str, str] = {}
        self.in_use: dict[str, str] = {}

    @staticmethod
    def _resolve(uri: str) -> tuple[str, str, str | None]:
        lower = uri.lower()
        if "backend.userland.com/rss" in lower:
            uri = lower = "http://backend.userland.com/rss"
        return uri, lower, _FEEDPARSER_NAMESPACES.get(lower)

    def track(self, prefix: str | None, uri: str) -> None:
        if not uri:
            return
        uri, _, known = self._resolve(uri)
        if known is not None:
            if prefix:
                self.prefixes[prefix] = known
            self.in_use[known] = uri
        elif prefix:
            self.in_use[prefix] = uri
        # (an unknown default namespace is tracked under "", a key feedparser never reads)

    def check_unchanged(self, prefix: str | None, uri: str) -> None:
        """Raise _Unsafe unless the declaration (inside an entry) changes nothing read."""
        if not uri:
            return
        uri, lower, known = self._resolve(uri)
        if lower in _VERSION_NAMESPACES:
            raise _Unsafe  # may set the feed's version
        if known is None:
            if prefix and self.in_use.get(prefix) != uri:
                raise _Unsafe
            return
        if prefix and self.prefixes.get(prefix, prefix) != known:
            raise _Unsafe
        # Its namespaces_in_use value is read (as exact text) only under the scope of a
        # declaration, which both parses then see: it must be the same text everywhere.
        if self.in_use.setdefault(known, uri) != uri:
            raise _Unsafe


@dataclass(frozen=True)
class _Split:
    spans: tuple[tuple[int, int], ...]  # each entry's bytes, in document order
    hashes: tuple[int, ...]
    context: int

    def splice(self, document: bytes, keep: Sequence[int]) -> bytes:
        """The document with only the entries at positions ``keep`` (ascending); everything
        before the first entry and after the last one stays as it is."""
        pieces = [document[: self.spans[0][0]]]
        pieces += [document[slice(*self.spans[index])] for index in keep]
        pieces.append(document[self.spans[-1][1] :])
        return b"\n".join(pieces)


def _splice_encoding_ok(document: bytes, content_type: str | None) -> bool:
    """Only UTF-8 (or ASCII) documents are cut and joined: byte offsets of ASCII markup are
    then character boundaries, and feedparser decodes the parts as it would the whole."""
    charset = _CHARSET.search(content_type or "")
    if charset and charset.group(1).lower() not in _SPLICE_CHARSETS:
        return False
    start = 3 if document.startswith(b"\xef\xbb\xbf") else 0
    head = document[start : start + 1024]
    if head.lstrip()[:1] != b"<" or b"\x00" in head[:4]:
        return False  # UTF-16/32, with or without a BOM, or not markup at all
    declaration = _XML_ENCODING.match(head) if head.startswith(b"<?xml") else None
    if declaration is None:
        return True
    return declaration.group(1).decode("ascii", "replace").lower() in _SPLICE_CHARSETS


def _split_entries(
    document: bytes, url: str, content_type: str | None, max_entries: int
) -> _Split | None:
    """Where a well-formed feed's entries are (``item``/``entry`` elements of any namespace),
    when they can be cut out and put back safely: none nested in another, all children of
    one element and separated by whitespace only, no entity expat could not expand, and no
    namespace declaration inside an entry that changes what feedparser tracks
    document-wide (``_Namespaces``). None otherwise, and for any XML error: the caller
    parses the whole document."""
    parser = expat.ParserCreate(namespace_separator=" ")
    stack: list[list[Any]] = []  # per open element: [local name, start offset, declares]
    entries: list[tuple[int, int]] = []
    entry_parent = -2  # start offset of the entries' parent, once the first entry starts
    entry_depth = 0  # depth of the open entry, 0 outside entries
    entry_start = 0
    children: list[tuple[int, int, str, int, bool]] = []  # depth 2-3: start, end, name, parent
    declarations: list[tuple[str | None, str]] = []  # of the element about to start
    namespaces = _Namespaces()

    def on_namespace(prefix: str | None, uri: str) -> None:
        declarations.append((prefix, uri))

    def on_start(name: str, attributes: object) -> None:
        nonlocal entry_depth, entry_start, entry_parent
        local = name.rpartition(" ")[2]
        declares = bool(declarations)
        if entry_depth:
            if local in _ENTRY_ELEMENTS:
                raise _Unsafe
        elif local in _ENTRY_ELEMENTS:
            parent = stack[-1][1] if stack else -1
            if parent < 0 or (entry_parent != -2 and parent != entry_parent):
                raise _Unsafe
            entry_parent = parent
            entry_depth = len(stack) + 1
            entry_start = parser.CurrentByteIndex
        elif declares:
            for frame in stack:
                frame[2] = True
        if declares:
            for prefix, uri in declarations:
                if entry_depth:
                    namespaces.check_unchanged(prefix, uri)  # raises _Unsafe
                elif entry_parent == -2:  # the document before the entries
                    namespaces.track(prefix, uri)
            declarations.clear()
        stack.append([local, parser.CurrentByteIndex, declares])

    def on_end(name: str) -> None:
        nonlocal entry_depth
        local, start, declares = stack.pop()
        depth = len(stack) + 1
        if depth == entry_depth:
            end_tag = _END_TAG[local].match(document, parser.CurrentByteIndex)
            if end_tag is None:  # an empty <item/>: where it ends is not reported
                raise _Unsafe
            entries.append((entry_start, end_tag.end()))
            entry_depth = 0
        elif not entry_depth and local in _INERT_CHANNEL_ELEMENTS and 2 <= depth <= 3:
            index = parser.CurrentByteIndex
            end_tag = _END_TAG[local].match(document, index)
            if end_tag is not None and stack[-1][0] != local:
                children.append((start, end_tag.end(), local, stack[-1][1], declares))
            elif document[index - 2 : index] == b"/>":
                children.append((start, index, local, stack[-1][1], declares))

    def on_skipped_entity(name: str, is_parameter_entity: bool) -> None:
        raise _Unsafe

    parser.StartNamespaceDeclHandler = on_namespace
    parser.StartElementHandler = on_start
    parser.EndElementHandler = on_end
    parser.SkippedEntityHandler = on_skipped_entity
    try:
        parser.Parse(document, True)
    except Exception:  # ExpatError, _Unsafe, LookupError (an unknown encoding) ...
        return None
    if not entries:
        return None
    for (_, end), (start, _) in itertools.pairwise(entries):
        if document[end:start].strip():
            return None  # text, a comment or an element between two entries
    first = entries[0][0]
    context = hashlib.blake2b(digest_size=8)
    context.update(f"{url}\x00{_content_type_header(content_type)}\x00{max_entries}\x00".encode())
    cursor = 0
    for start, end, _, parent, declares in children:
        if parent == entry_parent and end <= first and not declares:
            context.update(document[cursor:start])
            context.update(b"\x00")
            cursor = end
    context.update(document[cursor:first])
    spans = tuple(entries)
    return _Split(
        spans=spans,
        hashes=tuple(_digest(document[start:end]) for start, end in spans),
        context=int.from_bytes(context.digest(), "big"),
    )


def parse_feed_since(
    body: bytes,
    url: str,
    content_type: str | None = None,
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    previous: EntryHashes | None = None,
) -> PartialParse:
    """``parse_feed``, but feedparser sees only the entries whose bytes are not in
    ``previous`` (the ``hashes`` of this feed's last stored poll): the document is cut at
    its entries with a real XML tokenizer, and the entries already known are left out of
    what feedparser parses. The entries returned are exactly those a full parse gives for
    the same items, with the same channel.

    Any doubt means a full parse, as ``parse_feed`` does it: an ill-formed document, an
    encoding other than UTF-8 or ASCII, entries the splice cannot cut cleanly, more entries
    than ``max_entries`` (the newest are chosen among all), a context that changed since
    ``previous``, or a new entry sharing its guid_key with a skipped one (the store keeps
    the first of a repeated GUID)."""
    body = _body_bytes(body, url)
    document = _defuse_entities(body)
    split = None
    if _splice_encoding_ok(document, content_type):
        split = _split_entries(document, url, content_type, max_entries)
    if split is None:
        feed = _parsed_feed(_feedparser(document, url, content_type), body, url, max_entries)
        return PartialParse(feed, None)
    if (
        previous is not None
        and previous.context == split.context
        and len(split.hashes) <= max_entries
    ):
        partial = _parse_new_entries(split, document, body, url, content_type, previous)
        if partial is not None:
            return partial
    feed = _parsed_feed(_feedparser(document, url, content_type), body, url, max_entries)
    hashes = None
    if not feed.bozo and len(feed.entries) == len(split.hashes):
        keys = _stored_keys(split.hashes, [_key_digest(entry, url) for entry in feed.entries])
        hashes = EntryHashes.of(split.context, keys)
    return PartialParse(feed, hashes)


def _stored_keys(hashes: Sequence[int], keys: Sequence[int]) -> dict[int, int]:
    """Entry hash → guid_key digest of the entries whose items the store keeps: the first
    entry of a repeated guid_key only. A later one is parsed again next time (the first one
    may be gone by then, and its item then stored in its place)."""
    stored: dict[int, int] = {}
    taken: set[int] = set()
    for entry_hash, key in zip(hashes, keys, strict=True):
        if key not in taken:
            taken.add(key)
            stored.setdefault(entry_hash, key)
    return stored


def _parse_new_entries(
    split: _Split,
    document: bytes,
    body: bytes,
    url: str,
    content_type: str | None,
    previous: EntryHashes,
) -> PartialParse | None:
    """The splice's parse, or None when its result cannot stand for the full parse's."""
    known = previous.keys
    fresh = [index for index, h in enumerate(split.hashes) if h not in known]
    try:
        result = _feedparser(split.splice(document, fresh), url, content_type)
    except FeedError:
        return None
    encoding = str(result.get("encoding") or "").lower()
    raw_entries = result.get("entries") or ()
    if (
        result.get("bozo")
        or not result.get("version")
        or len(raw_entries) != len(fresh)
        or not (encoding == "utf-8" or document.isascii())
    ):
        return None
    try:
        feed = _parsed_feed(result, body, url, len(fresh) or 1)
    except FeedError:
        return None
    new_keys = [_key_digest(entry, url) for entry in feed.entries]
    skipped = {known[h] for h in split.hashes if h in known}
    if not skipped.isdisjoint(new_keys):
        return None  # a repeated GUID: which entry wins is decided by the whole document
    fresh_keys = dict(zip(fresh, new_keys, strict=True))
    every_key = [
        fresh_keys[index] if index in fresh_keys else known[h]
        for index, h in enumerate(split.hashes)
    ]
    hashes = EntryHashes.of(split.context, _stored_keys(split.hashes, every_key))
    return PartialParse(feed, hashes, skipped=len(split.hashes) - len(fresh))


# --- process pool --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _WorkerFailure:
    """A FeedError crossing the process boundary: FeedError's constructor takes more than
    its message, so it does not survive pickling as itself."""

    message: str
    outcome: str


def _parse_in_worker(
    body: bytes, url: str, content_type: str | None, max_entries: int
) -> ParsedFeed | _WorkerFailure:
    try:
        return parse_feed(body, url, content_type, max_entries=max_entries)
    except FeedError as error:
        return _WorkerFailure(error.message, error.outcome)


def _parse_since_in_worker(
    body: bytes,
    url: str,
    content_type: str | None,
    max_entries: int,
    previous: EntryHashes | None,
) -> PartialParse | _WorkerFailure:
    try:
        return parse_feed_since(body, url, content_type, max_entries=max_entries, previous=previous)
    except FeedError as error:
        return _WorkerFailure(error.message, error.outcome)


def _preload_modules() -> list[str]:
    """What the forkserver imports once, for every worker to find in memory: this module and
    the modules of qasid (and of the package of a ``-m`` main module) the parent has loaded.
    A new worker re-runs the parent's main module ("safe importing of main"); through the CLI
    that imports all of qasid and its libraries, about 1.5 s of CPU per worker, paid by every
    poll that starts its pool and every TASKS_PER_WORKER parses after that. (The main module
    itself is left to the worker: runpy warns when it is already imported.)"""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    main_name = getattr(spec, "name", None) or ""
    packages = ("pipeline.", main_name.split(".")[0] + ".") if "." in main_name else ("pipeline.",)
    names = [__name__]
    names += sorted(
        name
        for name in sys.modules
        if name.startswith(packages) and name != main_name and not name.endswith("__main__")
    )
    return names


def _process_context() -> Any:
    """forkserver where available, else spawn; never plain fork. The poller runs an asyncio
    loop and threads (pebble's own, the scheduler's), and forking a threaded process can
    copy a held lock into the child. forkserver forks from a clean, single-threaded server
    that has preloaded this module, so replacing a killed worker costs milliseconds."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_preload_modules())
        return context
    return multiprocessing.get_context("spawn")


class ParsePool:
    """Runs ``parse_feed`` in ``workers`` processes, each parse limited to ``timeout``
    seconds of wall-clock time once it starts. An overrunning worker is killed and replaced;
    its caller gets ``FeedError("parse time limit of N s exceeded", outcome="parse_error")``
    and the pool goes on serving others.

    Built on pebble's ProcessPool: unlike concurrent.futures.ProcessPoolExecutor and
    multiprocessing.Pool, it can kill the one worker whose task timed out (or was cancelled)
    without breaking the pool, and recycles workers after TASKS_PER_WORKER parses.

    ``workers=0`` parses in the calling process (tests, tiny installs): the time limit
    cannot be enforced there, since a thread cannot be killed.
    """

    def __init__(
        self, workers: int, timeout: float, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if workers < 0 or timeout <= 0 or max_entries < 1:
            raise ValueError("workers must be >= 0, timeout > 0 and max_entries >= 1")
        self.workers = workers
        self.timeout = timeout
        self.max_entries = max_entries
        self._pool: ProcessPool | None = None
        if workers:
            self._pool = ProcessPool(
                max_workers=workers, max_tasks=TASKS_PER_WORKER, context=_process_context()
            )

    @classmethod
    def from_settings(cls, fetch: FetchSettings) -> ParsePool:
        """From ``Settings.fetch``: parse_workers, parse_timeout and max_entries."""
        return cls(fetch.parse_workers, fetch.parse_timeout, fetch.max_entries)

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(wait=exc is None)

    def close(self, wait: bool = True) -> None:
        """Stop the workers: after in-flight parses finish (``wait``), or at once."""
        if self._pool is None:
            return
        if wait:
            self._pool.close()
        else:
            self._pool.stop()
        self._pool.join()
        self._pool = None

    def _limit_error(self, url: str) -> FeedError:
        return FeedError(url, f"parse time limit of {self.timeout:g} s exceeded", PARSE_ERROR)

    def submit(self, body: bytes, url: str, content_type: str | None = None) -> Future[ParsedFeed]:
        """Schedule a parse. The future's result is the ParsedFeed; its exception a
        FeedError. Cancelling it kills the worker if the parse is already running."""
        return self._schedule(
            url,
            functools.partial(parse_feed, body, url, content_type, max_entries=self.max_entries),
            _parse_in_worker,
            (bytes(body), url, content_type, self.max_entries),
        )

    def submit_since(
        self,
        body: bytes,
        url: str,
        content_type: str | None = None,
        previous: EntryHashes | None = None,
    ) -> Future[PartialParse]:
        """``submit`` for ``parse_feed_since``: only the entries not in ``previous`` are
        parsed, and the result says what to remember for next time."""
        return self._schedule(
            url,
            functools.partial(
                parse_feed_since,
                body,
                url,
                content_type,
                max_entries=self.max_entries,
                previous=previous,
            ),
            _parse_since_in_worker,
            (bytes(body), url, content_type, self.max_entries, previous),
        )

    def _schedule(
        self,
        url: str,
        inline: Callable[[], _T],
        in_worker: Callable[..., _T | _WorkerFailure],
        args: tuple[Any, ...],
    ) -> Future[_T]:
        outer: Future[_T] = Future()
        if self._pool is None:
            if self.workers:
                raise RuntimeError("ParsePool is closed")
            try:
                outer.set_result(inline())
            except FeedError as error:
                outer.set_exception(error)
            return outer

        inner = self._pool.schedule(in_worker, args=args, timeout=self.timeout)

        def settle(done: Future[_T | _WorkerFailure]) -> None:
            try:
                value = done.result()
            except CancelledError:
                outer.cancel()
                return
            except TimeoutError:
                _settle(outer, error=self._limit_error(url))
                return
            except ProcessExpired as error:
                message = f"parser process died (exit code {error.exitcode})"
                _settle(outer, error=FeedError(url, message, PARSE_ERROR))
                return
            except Exception as error:  # e.g. a result that failed to pickle
                message = f"parser failed: {_class_name(error)}: {error}"[:BOZO_REASON_MAX]
                _settle(outer, error=FeedError(url, message, PARSE_ERROR))
                return
            if isinstance(value, _WorkerFailure):
                _settle(outer, error=FeedError(url, value.message, value.outcome))
            else:
                _settle(outer, result=value)

        def propagate_cancel(done: Future[_T]) -> None:
            if done.cancelled():
                inner.cancel()

        inner.add_done_callback(settle)
        outer.add_done_callback(propagate_cancel)
        return outer

    async def parse(self, body: bytes, url: str, content_type: str | None = None) -> ParsedFeed:
        """``submit`` for asyncio callers; cancelling the awaiting task cancels the parse."""
        if self._pool is None and self.workers == 0:
            # Off the event loop, so fetches go on while a big feed parses.
            return await asyncio.to_thread(
                parse_feed, body, url, content_type, max_entries=self.max_entries
            )
        return await asyncio.wrap_future(self.submit(body, url, content_type))

    async def parse_since(
        self,
        body: bytes,
        url: str,
        content_type: str | None = None,
        previous: EntryHashes | None = None,
    ) -> PartialParse:
        """``submit_since`` for asyncio callers, as ``parse`` is ``submit``'s."""
        if self._pool is None and self.workers == 0:
            return await asyncio.to_thread(
                parse_feed_since,
                body,
                url,
                content_type,
                max_entries=self.max_entries,
                previous=previous,
            )
        return await asyncio.wrap_future(self.submit_since(body, url, content_type, previous))


def _settle(
    future: Future[_T],
    *,
    result: _T | None = None,
    error: BaseException | None = None,
) -> None:
    """Complete ``future`` unless its caller cancelled it meanwhile (set_result would
    overwrite a plain CANCELLED state instead of refusing)."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        elif result is not None:
            future.set_result(result)
    except InvalidStateError:
        pass


__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "EntryHashes",
    "ParsePool",
    "PartialParse",
    "newest_entries",
    "parse_feed",
    "parse_feed_since",
]
