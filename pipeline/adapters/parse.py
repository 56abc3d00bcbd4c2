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

Strings in the result are raw feed text (untrusted, to be sanitized by
``pipeline.core.normalize``) but always UTF-8-encodable and free of NULs.
"""

from __future__ import annotations

import asyncio
import calendar
import io
import multiprocessing
import re
import sys
import time
from collections.abc import Mapping
from concurrent.futures import CancelledError, Future, InvalidStateError
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import feedparser
from pebble import ProcessExpired, ProcessPool

from pipeline.core.errors import FeedError
from pipeline.core.models import FeedOutcome, ParsedEntry, ParsedFeed
from pipeline.core.normalize import clean_text

if TYPE_CHECKING:  # settings pull in pydantic: 18 MB and 0.7 s per parse worker
    from pipeline.settings import FetchSettings

DEFAULT_MAX_ENTRIES = 200
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
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(f"parse_feed needs the fetched bytes, not {type(body).__name__}")
    body = bytes(body)
    if not body.strip():
        raise FeedError(url, "not a feed (empty body)", outcome=NOT_A_FEED)
    headers = {
        # application/xml lets the XML declaration choose the charset; without any
        # Content-Type feedparser marks every document bozo.
        "content-type": " ".join((content_type or "application/xml").split())[:200],
        "content-location": url,
    }
    try:
        result = feedparser.parse(
            io.BytesIO(_defuse_entities(body)),
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
        outer: Future[ParsedFeed] = Future()
        if self._pool is None:
            if self.workers:
                raise RuntimeError("ParsePool is closed")
            try:
                outer.set_result(parse_feed(body, url, content_type, max_entries=self.max_entries))
            except FeedError as error:
                outer.set_exception(error)
            return outer

        inner = self._pool.schedule(
            _parse_in_worker,
            args=(bytes(body), url, content_type, self.max_entries),
            timeout=self.timeout,
        )

        def settle(done: Future[ParsedFeed | _WorkerFailure]) -> None:
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

        def propagate_cancel(done: Future[ParsedFeed]) -> None:
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


def _settle(
    future: Future[ParsedFeed],
    *,
    result: ParsedFeed | None = None,
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


__all__ = ["DEFAULT_MAX_ENTRIES", "ParsePool", "newest_entries", "parse_feed"]
