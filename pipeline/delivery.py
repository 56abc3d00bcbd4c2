"""Digests, alerts and the send queue (issue 4): the use cases on top of the ledger.

- ``build_due_digests``: for every subscriber whose digest is due in their own zone, build
  it and insert edition + delivery row in one transaction (idempotent per period).
- ``build_public_editions``: the same over every theme, for the archive.
- ``queue_alerts``: high-priority items and instant watchlists, capped per day.
- ``drain_queue``: claim rows, re-check suppression, render, send, record the outcome.
- ``recover``: rows stuck in ``sending`` become ``unknown``; unknown rows with no provider
  news after a window are resent once (the only source of a duplicate, counted).

Decisions (what is due, what a digest holds, what is alert-worthy) live in pipeline.core;
these functions only load, call the core and store.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import re
import secrets
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache, cached_property, lru_cache
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote
from zoneinfo import ZoneInfo

from pipeline.adapters import forked, watchlist_cache
from pipeline.adapters.delivery_store import DeliveryRow, DeliveryStore, EditionRow, JSONText
from pipeline.adapters.digest_render import Assembler, DigestAssembler
from pipeline.adapters.render import EmailRenderer, Recipient, RenderedEmail, SiteInfo
from pipeline.adapters.storage import StoredItem
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.collector import gc_paused
from pipeline.core.digest import (
    Digest,
    DigestCandidate,
    DigestJSON,
    DigestRequest,
    ReaderDigests,
    ThemeInfo,
    alert_worthy,
    build_digest,
    digest_as_dict,
    entry_as_dict,
    single_entry,
    theme_names,
)
from pipeline.core.due import Period, due_period
from pipeline.core.errors import ConfigError, QueryError
from pipeline.core.mail import Mailer, OutgoingEmail, SendOutcome, SendResult, parse_address
from pipeline.core.reader_hits import HitTable
from pipeline.core.subscribers import Frequency, Subscriber, SubscriberStatus
from pipeline.core.watchlists import WatchlistIndex, WatchlistMatches
from pipeline.core.wording import counted
from pipeline.editorial import load_theme_infos
from pipeline.rules import load_aliases
from pipeline.tokens import Tokens

log = logging.getLogger(__name__)

RETRY_BACKOFF = timedelta(minutes=2)  # when a provider asks for a retry but says no delay
ALERT_LOOKBACK = timedelta(hours=24)  # only fresh news is worth an interruption


@dataclass
class BuildSummary:
    built: int = 0  # editions queued for sending
    empty: int = 0  # periods with nothing to say (recorded, not sent)
    existing: int = 0  # already built (another worker, or an earlier run)
    public: int = 0
    processes: int = 1  # that built the personal digests (``[digest] build_workers``)
    helper_private_mib: float = 0.0  # the most memory of its own a forked child held

    def line(self) -> str:
        on = f" on {self.processes} processes" if self.processes > 1 else ""
        return (
            f"digests: {self.built} built, {self.empty} empty, {self.existing} already built"
            f"{on}; {self.public} public editions"
        )


@dataclass
class DrainSummary:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    suppressed: int = 0
    fatal: str | None = None
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = (
            f"send queue: {self.sent} sent, {self.retried} to retry, {self.failed} failed, "
            f"{self.unknown} unknown, {self.suppressed} suppressed"
        )
        return text + (f"; stopped: {self.fatal}" if self.fatal else "")


def check_sending_settings(app: App) -> None:
    """Refuse to send without what the law and RFC 8058 require (M-09)."""
    mail, web = app.settings.mail, app.settings.web
    source = app.settings.path("config/qasid.toml")
    if not mail.postal_address.strip():
        raise ConfigError(
            "mail.postal_address",
            "is required: every email must show the sender's postal address",
            str(source),
        )
    if not web.base_url.strip():
        raise ConfigError("web.base_url", "is required for unsubscribe links", str(source))


# -- what the services share -----------------------------------------------------------------


class Editorial:
    """The themes, the renderer and (built on first use) the watchlist engine, once per job."""

    def __init__(self, app: App, subscribers: Iterable[Subscriber]) -> None:
        root = Path(app.settings.root)
        self.root = root
        self.themes: list[ThemeInfo] = load_theme_infos(root)
        self.names = theme_names(self.themes)  # what a story's reasons call its themes
        self._subscribers = tuple(subscribers)
        cache = app.settings.digest.watchlist_cache
        self.index_cache = app.settings.path(cache) if cache.strip() else None
        base = app.settings.web.base_url
        site = SiteInfo(
            name=app.settings.digest.site_name,
            base_url=base,
            archive_url=f"{base}/archive",
            postal_address=app.settings.mail.postal_address,
        )
        # Per-reader parts of an email are substitution tags, so readers whose digests are
        # otherwise identical get identical bodies, which SendGrid takes in one request.
        # The tags are random per run: feed text cannot contain them by design.
        nonce = secrets.token_hex(6)
        self.tags = {
            name: f"%%{nonce}{name}%%" for name in ("reason", "manage", "unsubscribe", "view")
        }
        self.renderer = EmailRenderer(root / "templates", site, frozenset(self.tags.values()))
        # Digests are assembled from stories rendered once per job (the same email).
        self.assembler: Assembler = DigestAssembler(self.renderer)
        self.parts: dict[str, dict[str, Any]] = {}  # compact editions' parts read so far
        self.tokens: Tokens = app.tokens

    @cached_property
    def queries(self) -> dict[int, str]:
        """Watchlist id → query, for the readers given. Made on first use: a digest build
        makes it only in the child that loads the watchlist engine (500,000 entries)."""
        return {w.id: w.query for s in self._subscribers for w in s.watchlists}

    @cached_property
    def index(self) -> WatchlistIndex[int]:
        """Every watchlist in one automaton; made only when a job needs to match, from
        the engine kept in var/ by the last job when there is one (watchlist_cache)."""
        return self.index_for(self.queries, self.read_cached_index())

    def read_cached_index(self) -> watchlist_cache.Cached | None:
        """The engine the last job kept (``watchlist_cache.read_cached``: the slow part),
        None when there is none or no cache is configured."""
        if self.index_cache is None:
            return None
        return watchlist_cache.read_cached(self.index_cache, self._aliases_path)

    def index_for(
        self, queries: Mapping[int, str], cached: watchlist_cache.Cached | None
    ) -> WatchlistIndex[int]:
        """The engine for ``queries``: ``cached`` brought up to date (and kept again), or
        one made from the texts."""
        if self.index_cache is None:
            return WatchlistIndex(queries.items(), aliases=self.aliases)
        return watchlist_cache.up_to_date(
            self.index_cache, self._aliases_path, cached, queries, self.aliases
        )

    @property
    def _aliases_path(self) -> Path:
        return self.root / "config" / "aliases.toml"

    def load_index(self) -> None:
        """Make the watchlist engine now and forget the watchlist texts it was made from
        (``queries``, an entry per watchlist, remade if asked for again)."""
        self.index  # noqa: B018 (made on first use)
        self.__dict__.pop("queries", None)

    def forget_index(self) -> None:
        """Drop the watchlist engine (made again on next use)."""
        self.__dict__.pop("index", None)

    @cached_property
    def aliases(self) -> dict[str, Any]:
        return dict(load_aliases(self._aliases_path))

    def match_watchlists(self, watchlists: Mapping[int, str], title: str, body: str) -> set[int]:
        """Which of a few ``watchlists`` (id → query) one item matches, with the job's
        aliases. A query that no longer parses matches nothing (it is shown to its owner
        when they edit it)."""
        if not watchlists:
            return set()
        try:
            index: WatchlistIndex[int] = WatchlistIndex(watchlists.items(), aliases=self.aliases)
        except (QueryError, ValueError) as error:
            log.warning("an instant watchlist does not parse: %s", error)
            return set()
        return set(index.match(title, body))


def load_editorial(app: App, subscribers: Iterable[Subscriber]) -> Editorial:
    """The job's editorial set-up; ``subscribers`` are the readers whose watchlists the
    job matches against items (none for a job that only sends)."""
    return Editorial(app, subscribers)


def to_candidate(item: StoredItem, watchlists: Sequence[str] = ()) -> DigestCandidate:
    return DigestCandidate(
        id=item.id,
        title=item.title,
        link=item.link,
        source=item.source or item.feed,
        published=item.published,
        summary_text=item.summary_text,
        themes=tuple(item.themes),
        scores=item.scores,
        evidence=item.evidence,
        us_link=bool(item.us_link),
        relevant=bool(item.relevant),
        watchlists=tuple(watchlists),
        undated=bool(item.published_missing),
    )


def _watch_hits(
    editorial: Editorial, subscriber: Subscriber, items: Sequence[StoredItem]
) -> dict[str, list[str]]:
    """item id → the subscriber's watchlist queries it matched."""
    mine = {w.id for w in subscriber.watchlists}
    if not mine:
        return {}
    out: dict[str, list[str]] = {}
    for item in items:
        for wid in editorial.index.match(item.title, item.summary_text):
            if wid in mine:
                out.setdefault(item.id, []).append(editorial.queries[wid])
    return out


# -- building digests --------------------------------------------------------------------


def _digest_frequency(subscriber: Subscriber) -> str:
    # Instant subscribers get alerts, and a daily digest of the rest (over-cap alerts too).
    return "weekly" if subscriber.frequency is Frequency.WEEKLY else "daily"


BUILD_CHUNK = 500  # editions written per transaction


class _Periods:
    """What every reader due for the same period shares, computed once per period: the
    items, every watchlist's matches in one batch, the day's stories and each theme
    choice's ranked entries (``ReaderDigests``), the previous period's story counts."""

    def __init__(self, app: App, editorial: Editorial) -> None:
        self.app = app
        self.editorial = editorial
        self.items_in = cache(lambda start, end: app.store.items_between(start, end))
        self._data: dict[tuple[datetime, datetime], _PeriodData] = {}
        # a previous period's story counts per theme choice, when computed elsewhere
        self._counts: dict[tuple[datetime, datetime], dict[frozenset[str], dict[str, int]]] = {}

    def data(self, start: datetime, end: datetime) -> _PeriodData:
        found = self._data.get((start, end))
        if found is None:
            items = self.items_in(start, end)
            planner = ReaderDigests(
                [to_candidate(item) for item in items], self.editorial.themes, start, end
            )
            found = self._data[(start, end)] = _PeriodData(items, planner)
        return found

    def counts_of(
        self, start: datetime, end: datetime, choices: Iterable[frozenset[str]]
    ) -> dict[frozenset[str], dict[str, int]]:
        """Stories per theme in the period, for each theme choice (what a previous period
        gives the volume lines): pure once the period's items are read."""
        planner = self.data(start, end).planner
        return {chosen: planner.counts(chosen) for chosen in choices}

    def use_counts(
        self, start: datetime, end: datetime, counts: dict[frozenset[str], dict[str, int]]
    ) -> None:
        self._counts[(start, end)] = counts

    def _request(self, subscriber: Subscriber, period: Period) -> DigestRequest:
        span = period.end - period.start
        earlier = (period.start - span, period.start)
        known = self._counts.get(earlier, {}).get(frozenset(subscriber.themes))
        if known is None:
            known = self.data(*earlier).planner.counts(subscriber.themes)
        settings = self.app.settings.digest
        return DigestRequest(
            themes=subscriber.themes,
            period_start=period.start,
            period_end=period.end,
            title=settings.site_name,
            label_date=period.local_date,
            previous_counts=dict(known),
            top_stories=settings.top_stories,
            max_per_section=settings.max_per_section,
        )

    def digests(self, readers: Sequence[tuple[Subscriber, Period]]) -> list[Digest]:
        """The readers' digests, in order: the hits of a period's readers are found
        together (``_PeriodData.reader_hits``)."""
        by_period: dict[tuple[datetime, datetime], list[int]] = {}
        for n, (_, period) in enumerate(readers):
            by_period.setdefault((period.start, period.end), []).append(n)
        out: list[Digest | None] = [None] * len(readers)
        for span, places in by_period.items():
            data = self.data(*span)
            planner = data.planner
            requests = [self._request(*readers[n]) for n in places]
            subscribers = [readers[n][0] for n in places]
            # the watchlist hits a digest can show are among the first ``keep`` of those
            # outside the reader's themes (``ReaderDigests.build``)
            keep = max(r.top_stories + r.max_watchlist_stories for r in requests)
            hits = data.reader_hits(self.editorial, subscribers, keep)
            for n, request, (found, left_out) in zip(places, requests, hits, strict=True):
                out[n] = planner.build(request, found, left_out)
        return cast(list[Digest], out)


class _PeriodData:
    def __init__(self, items: Sequence[StoredItem], planner: ReaderDigests) -> None:
        self.items = items
        self.planner = planner
        self._matches: PackedMatches | None = None
        self._table: HitTable | None = None

    def match(self, editorial: Editorial) -> PackedMatches:
        """Watchlist id → the period's item ids it matches: every watchlist in one batch
        (unless ``matched`` gave them)."""
        if self._matches is None:
            self._matches = match_items(editorial, self.items)
        return self._matches

    def matched(self, matches: PackedMatches) -> None:
        # From the engine's child the item ids come back unpickled: strings equal to the
        # candidates' ids but other objects. Every reader's hits are looked up by them in
        # the stories' dicts, where the candidates' own objects compare by identity alone.
        matches.use_item_ids([item.id for item in self.items])
        self._matches = matches
        self._table = None

    def table(self, editorial: Editorial) -> HitTable:
        """The matches with what trimming readers' hits needs (made once, before the
        build's helpers are forked: they share it)."""
        if self._table is None:
            matches = self.match(editorial)
            self._table = matches.hit_table(*self.planner.static_order(matches.item_ids))
        return self._table

    def reader_hits(
        self, editorial: Editorial, subscribers: Sequence[Subscriber], keep: int
    ) -> list[tuple[dict[str, list[str]], int]]:
        """Per subscriber: item id → their watchlist queries it matched, less the hits no
        digest can show (``HitTable.reader_hits``), and how many were left out."""
        if not any(s.watchlists for s in subscribers):
            return [({}, 0) for _ in subscribers]
        table = self.table(editorial)
        run = self.match(editorial).run
        planner = self.planner
        readers = [
            (
                [(found, w.query) for w in s.watchlists if (found := run(w.id)) is not None],
                planner.theme_mask(s.themes),
            )
            for s in subscribers
        ]
        return table.reader_hits(readers, keep)


def match_items(editorial: Editorial, items: Sequence[StoredItem]) -> PackedMatches:
    """Watchlist id → the ids of ``items`` it matches, every watchlist in one batch: the
    items are numbered by place, and the engine's answer in places is packed as it is."""
    return _match_texts(
        editorial.index, [item.id for item in items], [(i.title, i.summary_text) for i in items]
    )


def _match_texts(
    index: WatchlistIndex[int], item_ids: Sequence[str], texts: Sequence[tuple[str, str]]
) -> PackedMatches:
    matches = index.items_by_watchlist((n, title, body) for n, (title, body) in enumerate(texts))
    return PackedMatches.of_places(matches, item_ids)


class PackedMatches(Mapping[int, tuple[str, ...]]):
    """``match_items``' answer in three flat arrays, for handing it from a forked child:
    pickled as bytes, where the mapping itself (~290,000 watchlists holding ~8 million
    references to item ids at full size) took ~2 s to unpickle in the waiting parent.
    ``item_ids``: the matched items' ids, in the order given to ``match_items``. A
    watchlist's items come back as a tuple of ids in that order, made when asked for.
    Made from the engine's answer in item places (``of_places``)."""

    __slots__ = ("_at", "_item_ids", "_offsets", "_places")

    def __init__(self, item_ids: Sequence[str]) -> None:
        self._item_ids = list(item_ids)
        self._places = array("I")  # item places, a run per distinct match
        self._offsets = array("L", [0])  # where each run ends
        self._at: dict[int, int] = {}  # watchlist id → its run

    def _run(self, places: Iterable[int]) -> int:
        self._places.extend(places)
        self._offsets.append(len(self._places))
        return len(self._offsets) - 2

    @classmethod
    def of_places(
        cls, matches: WatchlistMatches[int, int], item_ids: Sequence[str]
    ) -> PackedMatches:
        """The engine's answer for items numbered by their place in ``item_ids`` (0, 1,
        2, ...): its per-query places are the runs as they are, and each watchlist is
        looked up through its query (no id → place mapping, no per-watchlist tuple)."""
        packed = cls(item_ids)
        run_of = {qid: packed._run(places) for qid, places in matches.by_query.items()}
        packed._at = {
            watchlist_id: run_of[qid]
            for watchlist_id, qid in matches.query_of.items()
            if qid in run_of
        }
        return packed

    @property
    def item_ids(self) -> list[str]:
        return self._item_ids

    def use_item_ids(self, item_ids: list[str]) -> None:
        """Hold ``item_ids`` (equal to the ids held: the same items in the same order)."""
        if item_ids != self._item_ids:
            raise ValueError("use_item_ids: not the items these matches were made for")
        self._item_ids = item_ids

    def run(self, watchlist_id: int) -> int | None:
        """The watchlist's run of item places (None when it matched nothing)."""
        return self._at.get(watchlist_id)

    def hit_table(
        self, known: Sequence[bool], masks: Sequence[int], static: Sequence[int]
    ) -> HitTable:
        """The runs as arrays (the places shared, not copied) with the items' columns."""
        return HitTable.of(self._places, self._offsets, self._item_ids, known, masks, static)

    def get(self, watchlist_id: int, default: Any = None) -> Any:
        run = self._at.get(watchlist_id)
        if run is None:
            return default
        places = self._places[self._offsets[run] : self._offsets[run + 1]]
        return tuple(map(self._item_ids.__getitem__, places))

    def __getitem__(self, watchlist_id: int) -> tuple[str, ...]:
        found = self.get(watchlist_id)
        if found is None:
            raise KeyError(watchlist_id)
        return cast(tuple[str, ...], found)

    def __contains__(self, watchlist_id: object) -> bool:
        return watchlist_id in self._at

    def __iter__(self) -> Iterator[int]:
        return iter(self._at)

    def __len__(self) -> int:
        return len(self._at)

    def __getstate__(self) -> tuple[Any, ...]:
        # The watchlist → run table as two arrays too (a dict pickles entry by entry).
        at = self._at
        return (
            self._item_ids,
            self._places,
            self._offsets,
            array("q", at.keys()),
            array("L", at.values()),
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._item_ids, self._places, self._offsets, watchlists, runs = state
        self._at = dict(zip(watchlists, runs, strict=True))


def _match_periods(
    editorial: Editorial, periods: Sequence[Sequence[StoredItem]], forget: bool, job: int = 0
) -> list[PackedMatches]:
    """``match_items`` for each period's items; ``forget``: in a forked child, whose
    answers are handed back (packed), the engine, most of the memory, is made first. Here
    (the process ``job``: the child failed and this runs in the job) it is forgotten
    before the answers are returned; a forked child keeps it until it ends, which lets
    all of it go at once (freeing its objects one by one took 0.4 s, while the job
    waited for the answers)."""
    if not forget:
        return [match_items(editorial, items) for items in periods]
    started = time.perf_counter()
    editorial.load_index()  # then the watchlist texts it was made from can go
    loaded = time.perf_counter()
    found = [match_items(editorial, items) for items in periods]
    in_child = os.getpid() != job
    log.info(
        "digest build: watchlist engine loaded (%.1f s) and matched against %d period(s) "
        "(%.1f s)%s",
        loaded - started,
        len(periods),
        time.perf_counter() - loaded,
        " in a forked child" if in_child else "",
    )
    forked.note_private_peak()
    if not in_child:
        editorial.forget_index()
    return found


_ToMatch = list[tuple[list[str], list[tuple[str, str]]]]  # per period: item ids, texts


def _engine_child(app: App, wanted: Connection) -> list[PackedMatches]:
    """The watchlist engine's process, forked as the build starts: it unpickles the
    engine's file (``watchlist_cache``; the slow part) while the job reads its readers,
    then reads the active readers' watchlists itself (``active_queries``), brings the
    engine up to date with them, and matches what the job sends through ``wanted``: each
    due period's item ids and (title, text), in the job's order (the job's own read of the
    items, so that an item stored meanwhile cannot appear in one and not the other)."""
    started = time.perf_counter()
    editorial = load_editorial(app, ())  # its engine alone: made from the texts read below
    cached = editorial.read_cached_index()
    unpickled = time.perf_counter()
    try:
        periods: _ToMatch = wanted.recv()
    except EOFError:  # the job ended its build before saying what to match
        return []
    finally:
        wanted.close()
    if not periods:
        return []
    app.store.engine.dispose(close=False)  # database connections of its own
    index = editorial.index_for(SubscriberStore(app.store).active_queries(), cached)
    del cached
    loaded = time.perf_counter()
    found = [_match_texts(index, ids, texts) for ids, texts in periods]
    log.info(
        "digest build: watchlist engine loaded (%.1f s, %.1f s of it unpickling as the "
        "readers were read) and matched against %d period(s) (%.1f s) in a forked child",
        loaded - started,
        unpickled - started,
        len(periods),
        time.perf_counter() - loaded,
    )
    forked.note_private_peak()
    return found


class _EngineChild:
    """``_engine_child`` started; ``send`` tells it what to match, ``result`` gives the
    answer. If the child fails or dies, the job matches here (``fallback``), as it would
    alone. A build that fails before ``send`` closes nothing itself: the job's end of the
    pipe closes with this object (or with the build's own process), and the child, told
    nothing, ends."""

    def __init__(self, app: App, fallback: Callable[[], list[PackedMatches]]) -> None:
        receiver, self._sender = multiprocessing.get_context("fork").Pipe(duplex=False)
        job = os.getpid()

        def work() -> list[PackedMatches]:
            if os.getpid() == job:
                return fallback()
            self._sender.close()  # the child's copy of the job's end
            return _engine_child(app, receiver)

        self.call = forked.ChildCall(work)
        receiver.close()  # the child's end, in the job
        self._sending: threading.Thread | None = None

    def send(self, periods: _ToMatch) -> None:
        """Hand the child the periods to match, from a thread: the child reads them only
        once it has unpickled the engine, and megabytes do not fit in the pipe."""

        def send() -> None:
            with contextlib.suppress(OSError):  # the child died: ``result`` matches here
                self._sender.send(periods)
            self._sender.close()

        self._sending = threading.Thread(target=send, daemon=True)
        self._sending.start()

    def running(self) -> bool:
        return self.call.running()

    def result(self) -> list[PackedMatches]:
        if self._sending is None:
            self._sender.close()
        found = self.call.result()
        if self._sending is not None:
            self._sending.join()
        return found


_Due = tuple[Subscriber, str, Period]  # a reader, the digest's frequency, its period


class _Steps:
    """Logs a long job's steps as they end, each with the seconds it took."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.started = self.last = time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        took, total = now - self.last, now - self.started
        log.info("%s: %s (%.1f s, %.1f s in all)", self.job, what, took, total)
        self.last = now


def build_due_digests(app: App, now: datetime | None = None) -> BuildSummary:
    """Build every personal digest that is due now (and the public editions).

    Readers due for the same period share its items, watchlist matches and stories (the
    period's items are clustered once, not per reader), and readers with the same themes
    their ranked entries (``ReaderDigests``). Once that is loaded, the digests are built
    ``BUILD_CHUNK`` readers a task on every core (``[digest] build_workers``: forked helpers
    hand their chunks back, ``forked.run_tasks``), and each chunk's editions are written
    here in one transaction. The archive's item index catches up first
    (``jobs.index_item_archive``), so the public editions built here are searchable with
    every item they show.

    The cyclic garbage collector is paused for the whole job (it is CPU-bound and waits
    on no network): it makes millions of small objects in no cycle (stories, entries,
    edition rows, caches that live to its end), and each collection walked the young ones
    again (~14% of the build's CPU in a profile). Reference counting frees them when the
    job's locals go.

    With more than one build process, the whole build runs in a forked child (its log
    lines relayed here as they come): what it leaves behind (caches, a heap fragmented by
    millions of freed objects: 750 MB resident after a 100,000-reader build) goes with the
    child, rather than staying in this process and in every process forked from it later.
    The send queue this process drained right after a build took 7% more CPU for it
    (BENCHMARKS.md). If the child fails, the build runs again here, and the editions the
    child stored count as already built."""
    workers = app.settings.digest.build_workers or forked.available_cores()
    if workers > 1 and forked.can_fork():
        job = os.getpid()
        build = forked.ChildCall(
            lambda: _build_in_child(app, now, job, workers), relay_logs=True, forks=True
        )
        return build.result()
    with gc_paused():
        return _build_due_digests(app, now, workers)


def _build_in_child(app: App, now: datetime | None, job: int, workers: int) -> BuildSummary:
    if os.getpid() != job:  # a forked child opens database connections of its own
        app.store.engine.dispose(close=False)
    with gc_paused():
        return _build_due_digests(app, now, workers)


def _build_due_digests(app: App, now: datetime | None, workers: int) -> BuildSummary:
    from pipeline.jobs import index_item_archive

    step = _Steps("digest build")
    index_item_archive(app)
    now = now or app.clock()
    job = os.getpid()
    # With more than one core the watchlist engine (1.2 GB for 500,000 watchlists) is
    # loaded and run in a forked child, so it never lives in this process nor in the
    # build's helpers forked from it. The child starts now: it unpickles the engine's file
    # while this process reads the readers, and matches once told what (``_EngineChild``);
    # this process clusters the due periods meanwhile. The matches come back packed
    # (``PackedMatches``).
    engine = (
        _EngineChild(app, lambda: _match_periods(editorial, matched_items(), True, job))
        if workers > 1 and forked.can_fork()
        else None
    )
    people = SubscriberStore(app.store)
    ledger = DeliveryStore(app.store)
    active = people.active()
    editorial = load_editorial(app, active)
    last = {f: ledger.last_period_ends(f) for f in ("daily", "weekly")}
    due: list[_Due] = []
    # A period depends on the hour, zone, frequency and last period alone: a few distinct
    # ones, each worked out once.
    periods_of: dict[tuple[int, str, str, datetime | None], Period | None] = {}
    for subscriber in active:
        frequency = _digest_frequency(subscriber)
        last_end = last[frequency].get(subscriber.id)
        key = (subscriber.hour, subscriber.timezone, frequency, last_end)
        if key in periods_of:
            period = periods_of[key]
        else:
            zone = ZoneInfo(subscriber.timezone)
            period = periods_of[key] = due_period(now, subscriber.hour, zone, frequency, last_end)
        if period is not None:
            due.append((subscriber, frequency, period))
    # Readers of the same period and theme choice side by side: a chunk's readers share
    # that choice's ranked lists, so each process builds a choice's lists about once
    # rather than every process building every choice's.
    choices: dict[tuple[str, ...], tuple[str, ...]] = {}
    for subscriber, _, _ in due:
        if subscriber.themes not in choices:
            choices[subscriber.themes] = tuple(sorted(subscriber.themes))
    due.sort(key=lambda d: (d[2].start, d[2].end, choices[d[0].themes], d[0].id))
    step.done(f"{len(due):,} of {len(active):,} readers due")
    periods = _Periods(app, editorial)
    summary = BuildSummary()
    early_public = 0  # public editions built while the engine's child matched
    watched: dict[tuple[datetime, datetime], bool] = {}
    for subscriber, _, period in due:
        span = (period.start, period.end)
        watched[span] = watched.get(span, False) or bool(subscriber.watchlists)
    to_match = [(span, periods.items_in(*span)) for span, lists in watched.items() if lists]

    def matched_items() -> list[Sequence[StoredItem]]:
        return [items for _, items in to_match]

    matching: _EngineChild | forked.ChildCall[list[PackedMatches]]
    if engine is not None:
        engine.send(
            [
                ([i.id for i in items], [(i.title, i.summary_text) for i in items])
                for _, items in to_match
            ]
        )
        matching = engine
    else:
        matching = forked.ChildCall(
            lambda: _match_periods(editorial, matched_items(), False, job), fork=False
        )
    for span in watched:
        periods.data(*span)
    # The public editions (every theme: their own clustering) are the first tasks of the
    # build, beside the readers' chunks; their items are read while the engine works.
    public = _public_plans(app, now, periods.items_in)
    # The theme choices' lists (which need no matches) are all readied here, the most read
    # first, and the build's helpers inherit them. Left to the helpers, they cost more
    # there: measured once, with an engine child that answered before they were all made
    # (a variant since reverted), the build took 83 s and 153-155 s of CPU against 79 s
    # and 145 s with all made here. Then, until the child is done, the public editions
    # (which need no matches either) are built and stored here.
    readied = _ready_choices(periods, due)
    while public and matching.running():
        plan = public.pop(0)
        summary.public += _store_public(app, plan, _public_digest(app, editorial, plan), now)
        early_public += 1
    waiting = time.perf_counter()
    matches = matching.result()
    waited = time.perf_counter() - waiting
    for (span, _), by_watchlist in zip(to_match, matches, strict=True):
        periods.data(*span).matched(by_watchlist)
        periods.data(*span).table(editorial)  # made here: the build's helpers share it
    clustered = [periods.data(*span).planner for span in watched]
    step.done(
        f"{sum(len(p.candidates) for p in clustered):,} items clustered into "
        f"{sum(len(p.stories.members) for p in clustered):,} stories; watchlists matched "
        f"against {sum(len(items) for _, items in to_match):,} items beside it "
        f"({readied:,} theme choices' lists readied, {early_public} public editions "
        f"built meanwhile; {waited:.1f} s waited for the matches)"
    )
    # The previous periods' stories are needed for their counts alone: clustered in a
    # forked child (their items read here first), so that their memory is gone when it
    # ends; after the engine's child, so that the two never hold their memory at once.
    earlier: dict[tuple[datetime, datetime], set[frozenset[str]]] = {}
    for subscriber, _, period in due:
        span = (period.start - (period.end - period.start), period.start)
        if span not in watched:
            earlier.setdefault(span, set()).add(frozenset(subscriber.themes))
    for span in earlier:
        periods.items_in(*span)
    counting = forked.ChildCall(
        lambda: {span: periods.counts_of(*span, choices) for span, choices in earlier.items()},
        fork=workers > 1 and bool(earlier),
    )
    for span, counts in counting.result().items():
        periods.use_counts(*span, counts)
    if earlier:
        step.done(f"stories of {len(earlier)} previous period(s) counted")
    # Editions are stored compact (``DigestJSON.compact``): a story or theme many readers
    # share is one part, stored once; each edition holds references and what is its
    # reader's own. Their text is spliced from pieces encoded once.
    encoder = DigestJSON()
    chunks = [due[start : start + BUILD_CHUNK] for start in range(0, len(due), BUILD_CHUNK)]

    def build(task: int) -> Digest | _Chunk:
        if task < len(public):
            return _public_digest(app, editorial, public[task])
        return _chunk_editions(chunks[task - len(public)], now, periods, encoder)

    def write(task: int, built: Digest | _Chunk) -> None:
        if isinstance(built, Digest):
            summary.public += _store_public(app, public[task], built, now)
            return
        _write_editions(ledger, built, summary)

    run = forked.run_tasks(len(public) + len(chunks), build, write, workers)
    step.done(
        f"{len(due):,} digests, {len(public) + early_public} public editions, "
        f"{run.processes} processes"
    )
    summary.processes = run.processes
    summary.helper_private_mib = max(
        run.helper_private_mib,
        engine.call.private_mib if engine is not None else 0.0,
        counting.private_mib,
    )
    log.info("digest build finished: %s", summary.line())
    return summary


def _ready_choices(periods: _Periods, due: Sequence[_Due]) -> int:
    """Make the due readers' theme choices' lists (``ReaderDigests.base``), the choices
    most readers share first. Returns how many."""
    readers: Counter[tuple[datetime, datetime, tuple[str, ...]]] = Counter()
    for subscriber, _, period in due:
        planner = periods.data(period.start, period.end).planner
        readers[(period.start, period.end, planner.wanted(subscriber.themes))] += 1
    for start, end, wanted in sorted(readers, key=readers.__getitem__, reverse=True):
        periods.data(start, end).planner.base(wanted)
    return len(readers)


# A chunk of built editions: their rows, and the parts they refer to that the process
# building them had not handed out before (each helper sends its results in order).
_Chunk = tuple[list[dict[str, Any]], dict[str, str]]


def _chunk_editions(
    due: Sequence[_Due], now: datetime, periods: _Periods, encoder: DigestJSON
) -> _Chunk:
    """The edition rows of some due readers (pure: everything was loaded beforehand)."""
    pending: list[dict[str, Any]] = []
    digests = periods.digests([(subscriber, period) for subscriber, _, period in due])
    for (subscriber, frequency, period), digest in zip(due, digests, strict=True):
        pending.append(
            {
                "kind": "personal",
                "subscriber_id": subscriber.id,
                "frequency": frequency,
                "period_start": period.start,
                "period_end": period.end,
                "local_date": period.local_date.isoformat(),
                "subject": digest.subject,
                "item_count": len(digest.item_ids),
                # a plain str: a helper hands the rows back pickled, and a str subclass
                # pickles ten times slower (10 ms for 1,000 rows); ``_write_editions``
                # marks it encoded
                "content": encoder.compact(digest),
                "now": now,
                "queue_delivery": not digest.empty,
            }
        )
    return pending, encoder.new_parts()


def _write_editions(ledger: DeliveryStore, chunk: _Chunk, summary: BuildSummary) -> None:
    pending, parts = chunk
    for spec in pending:
        spec["content"] = JSONText(spec["content"])
    for spec, (_, created) in zip(pending, ledger.create_editions(pending, parts), strict=True):
        if not created:
            summary.existing += 1
        elif not spec["queue_delivery"]:
            summary.empty += 1
        else:
            summary.built += 1
    pending.clear()


def _build(
    app: App,
    editorial: Editorial,
    themes: Sequence[str],
    period: Period,
    items: Sequence[StoredItem],
    hits: Mapping[str, Sequence[str]],
    items_in: Any,
    title: str | None = None,
) -> Digest:
    settings = app.settings.digest
    span = period.end - period.start
    previous_items = items_in(period.start - span, period.start)
    previous = build_digest(
        [to_candidate(i) for i in previous_items],
        DigestRequest(themes=themes, period_start=period.start - span, period_end=period.start),
        editorial.themes,
    )
    return build_digest(
        [to_candidate(i, hits.get(i.id, ())) for i in items],
        DigestRequest(
            themes=themes,
            period_start=period.start,
            period_end=period.end,
            title=title or settings.site_name,
            label_date=period.local_date,
            previous_counts=previous.theme_counts,
            top_stories=settings.top_stories,
            max_per_section=settings.max_per_section,
        ),
        editorial.themes,
    )


@dataclass(frozen=True)
class _PublicPlan:
    """A public edition that is due, with the items it and its previous period hold."""

    frequency: str
    period: Period
    items: Sequence[StoredItem]
    previous: Sequence[StoredItem]


def _public_plans(app: App, now: datetime, items_in: Any) -> list[_PublicPlan]:
    """The public editions due now, their items read (what building them reads)."""
    ledger = DeliveryStore(app.store)
    settings = app.settings.digest
    zone = ZoneInfo(settings.public_timezone)
    plans = []
    for frequency in ("daily", "weekly"):
        last = ledger.last_period_end("public", None, frequency)
        period = due_period(now, settings.public_hour, zone, frequency, last)
        if period is not None:
            span = period.end - period.start
            items = items_in(period.start, period.end)
            previous = items_in(period.start - span, period.start)
            plans.append(_PublicPlan(frequency, period, items, previous))
    return plans


def _public_digest(app: App, editorial: Editorial, plan: _PublicPlan) -> Digest:
    """The public edition over every theme (pure: a forked build helper can make it)."""
    return _build(
        app,
        editorial,
        [t.id for t in editorial.themes],
        plan.period,
        plan.items,
        {},
        lambda start, end: plan.previous,
        title=f"{app.settings.digest.site_name} {plan.frequency} edition",
    )


def _store_public(app: App, plan: _PublicPlan, digest: Digest, now: datetime) -> bool:
    _, created = DeliveryStore(app.store).create_edition(
        kind="public",
        subscriber_id=None,
        frequency=plan.frequency,
        period_start=plan.period.start,
        period_end=plan.period.end,
        local_date=plan.period.local_date.isoformat(),
        subject=digest.subject,
        item_count=len(digest.item_ids),
        content=digest_as_dict(digest),
        now=now,
        queue_delivery=False,
    )
    return created


def build_public_editions(
    app: App, now: datetime, editorial: Editorial | None = None, items_in: Any = None
) -> int:
    """The public daily and weekly editions over every theme, for the archive."""
    editorial = editorial or load_editorial(app, [])
    items_in = items_in or cache(lambda start, end: app.store.items_between(start, end))
    built = 0
    for plan in _public_plans(app, now, items_in):
        built += _store_public(app, plan, _public_digest(app, editorial, plan), now)
    return built


# -- alerts ------------------------------------------------------------------------------


def queue_alerts(app: App, now: datetime | None = None) -> int:
    """Queue instant alerts for fresh high-priority items and instant watchlists.

    One alert per (subscriber, item), ever (a unique row); at most ``alerts_per_day`` per
    subscriber in 24 hours: the rest reach them in their next digest.
    """
    now = now or app.clock()
    settings = app.settings.digest
    people = SubscriberStore(app.store)
    ledger = DeliveryStore(app.store)
    active = people.active()
    wants_alerts = [
        s
        for s in active
        if s.frequency is Frequency.INSTANT or any(w.instant for w in s.watchlists)
    ]
    if not wants_alerts:
        return 0
    editorial = load_editorial(app, wants_alerts)
    fresh = [
        i
        for i in app.store.items_fetched_since(now - ALERT_LOOKBACK)
        if i.published >= now - ALERT_LOOKBACK
    ]
    queued = 0
    for subscriber in wants_alerts:
        instant_lists = {w.id for w in subscriber.watchlists if w.instant}
        budget = settings.alerts_per_day - ledger.alerts_since(
            subscriber.id, now - timedelta(days=1)
        )
        for item in fresh:
            if budget <= 0:
                break
            candidate = to_candidate(item)
            themed = (
                subscriber.frequency is Frequency.INSTANT
                and alert_worthy(candidate, settings.alert_themes)
                and any(t in subscriber.themes for t in candidate.themes)
            )
            watched = bool(instant_lists) and any(
                wid in instant_lists for wid in editorial.index.match(item.title, item.summary_text)
            )
            if (themed or watched) and ledger.queue_alert(subscriber.id, item.row_id, now):
                queued += 1
                budget -= 1
    if queued:
        log.info("alerts queued: count=%d", queued)
    return queued


# -- sending -----------------------------------------------------------------------------


def _links(app: App, tokens: Tokens, subscriber: Subscriber) -> tuple[str, str]:
    base = app.settings.web.base_url
    unsubscribe = (
        f"{base}/unsubscribe/{tokens.make('unsubscribe', subscriber.id, subscriber.email)}"
    )
    manage = f"{base}/manage/{tokens.make('manage', subscriber.id, subscriber.email)}"
    return unsubscribe, manage


def _reason(subscriber: Subscriber, site_name: str, watchlists: int | None = None) -> str:
    lists = len(subscriber.watchlists) if watchlists is None else watchlists
    return _reason_text(
        subscriber.frequency, subscriber.hour, subscriber.timezone, len(subscriber.themes),
        lists, site_name,
    )  # fmt: skip


@lru_cache(maxsize=4096)  # readers of a send share a few hours, zones and counts
def _reason_text(
    frequency: Frequency, hour: int, timezone: str, themes: int, lists: int, site_name: str
) -> str:
    how = {
        Frequency.INSTANT: "instant alerts and a daily digest",
        Frequency.DAILY: "a daily digest",
        Frequency.WEEKLY: "a weekly digest",
    }[frequency]
    return (
        f"You receive this because you subscribed to {site_name} ({how} at "
        f"{hour:02d}:00 {timezone}, {counted(themes, 'theme')}, "
        f"{counted(lists, 'watchlist')})."
    )


def compose(
    app: App,
    editorial: Editorial,
    row: DeliveryRow,
    subscriber: Subscriber,
    editions: Mapping[int, EditionRow] | None = None,
    watchlist_count: int | None = None,
) -> OutgoingEmail | None:
    """The email for one ledger row, or None when its content is gone.

    The body is rendered with substitution tags where it names the reader (links, the
    "why you got this" line); the email carries the values to put in their place.
    ``editions``: editions already read for a batch of rows (others are read here).
    ``watchlist_count``: how many watchlists the reader keeps, when ``subscriber`` holds
    only their instant ones (``SubscriberStore.for_sending``).
    """
    unsubscribe, manage = _links(app, editorial.tokens, subscriber)
    base = app.settings.web.base_url
    tags = editorial.tags
    values = {
        tags["reason"]: _reason(subscriber, app.settings.digest.site_name, watchlist_count),
        tags["manage"]: manage,
        tags["unsubscribe"]: unsubscribe,
    }
    # a digest's footer links to the edition on the web too (``view_url``, set below)
    recipient = Recipient(
        reason=tags["reason"],
        manage_url=tags["manage"],
        unsubscribe_url=tags["unsubscribe"],
        view_url=tags["view"] if row.edition_id is not None and row.channel == "digest" else "",
        timezone=subscriber.timezone,
    )
    custom_args: dict[str, str] = {}  # the mailer adds delivery_id itself
    rendered: RenderedEmail
    if row.channel == "confirm":
        token = editorial.tokens.make("confirm", subscriber.id, subscriber.email)
        values[tags["reason"]] = (
            "You receive this because this address was entered on our sign-up form."
        )
        rendered = editorial.renderer.confirmation(recipient, f"{base}/confirm/{token}")
    elif row.channel == "link":
        values[tags["reason"]] = "You receive this because someone asked for a new link."
        rendered = editorial.renderer.manage_link(recipient)
    elif row.edition_id is not None:
        edition = (editions or {}).get(row.edition_id) or DeliveryStore(app.store).get_edition(
            row.edition_id
        )
        if edition is None:
            return None
        view_token = editorial.tokens.make("view", subscriber.id, subscriber.email, str(edition.id))
        values[tags["view"]] = f"{base}/editions/{edition.id}/{view_token}"
        if not recipient.view_url:
            recipient = replace(recipient, view_url=tags["view"])
        heading = {"weekly": "Weekly digest", "daily": "Daily digest"}.get(
            edition.frequency, "Digest"
        )
        rendered = editorial.assembler.digest(edition.content, recipient, heading)
        custom_args["edition_id"] = str(edition.id)
    else:
        item = app.store.get_item_by_row(row.alert_item_id or 0)
        if item is None:
            return None
        # The reader's own instant watchlists (as re-read for this batch), matched alone:
        # the job need not hold every reader's watchlists to send.
        instant = {w.id: w.query for w in subscriber.watchlists if w.instant}
        matched = editorial.match_watchlists(instant, item.title, item.summary_text)
        queries = [instant[wid] for wid in instant if wid in matched]
        candidate = to_candidate(item, queries)
        entry = entry_as_dict(single_entry(candidate, subscriber.themes, editorial.names))
        heading = (
            f"Watchlist: {queries[0]}" if queries else _alert_heading(candidate, editorial.themes)
        )
        rendered = editorial.renderer.alert(entry, recipient, heading)
    sender = parse_address(app.settings.mail.from_address)
    return OutgoingEmail(
        delivery_id=str(row.id),
        to=subscriber.email,
        from_addr=app.settings.mail.from_address,
        reply_to=app.settings.mail.reply_to or None,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        date=app.clock(),
        list_unsubscribe_url=unsubscribe,
        list_unsubscribe_mailto=_unsubscribe_mailto(sender.domain, unsubscribe),
        list_id=app.settings.mail.list_id,
        custom_args=custom_args,
        substitutions={tag: value for tag, value in values.items() if _used(rendered, tag)},
    )


_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]*")  # what ``quote`` leaves as it is


def _unsubscribe_mailto(domain: str, unsubscribe_url: str) -> str:
    """The mailto: unsubscribe link, its subject naming the link's token."""
    token = unsubscribe_url.rsplit("/", 1)[-1]
    # a token is URL-safe base64 and dots: quoted, only the space changes
    quoted = (
        "unsubscribe%20" + token if _URL_SAFE.fullmatch(token) else quote(f"unsubscribe {token}")
    )
    return f"mailto:unsubscribe@{domain}?subject={quoted}"


def _used(rendered: RenderedEmail, tag: str) -> bool:
    # searched from the end: the link tags sit in the footer of a ~40 KB digest
    return rendered.html.rfind(tag) >= 0 or tag in rendered.text or tag in rendered.subject


def _alert_heading(candidate: DigestCandidate, themes: Sequence[ThemeInfo]) -> str:
    names = [t.name for t in themes if t.id in candidate.themes]
    us = ", with US involvement" if candidate.us_link else ""
    return f"{' / '.join(names[:2]) or 'Alert'}{us}"


def drain_queue(
    app: App, mailer: Mailer, now: datetime | None = None, limit: int | None = None
) -> DrainSummary:
    """Send what is queued, batch by batch, until the queue is empty (or ``limit`` rows).

    Batches are claimed, composed and sent on every core (``[digest] send_workers``:
    forked helpers, each with database connections of its own and its own connection to
    the mail backend: ``mailer.after_fork()``, when the mailer has one, drops what the
    helper inherited); each process records what the backend answered for its batches.
    A fatal answer stops every process before its next batch. A batch that fails to
    compose goes back to the queue; a helper killed outright leaves its claimed rows in
    ``sending`` for the reaper, as a crashed job would.
    """
    check_sending_settings(app)
    summary = DrainSummary()
    editorial = load_editorial(app, ())  # sending matches no watchlist of others
    ledger = DeliveryStore(app.store)
    processes = app.settings.digest.send_workers or forked.available_cores()
    handled = 0
    # This process freezes what each batch leaves alive too, and unfreezes it all at the
    # end, unless something froze objects before (then it is left as it was). Cyclic
    # garbage the worker's other jobs make meanwhile waits for that.
    freeze_here = gc.get_freeze_count() == 0
    try:
        while not summary.fatal and (limit is None or handled < limit):
            moment = now or app.clock()
            due = ledger.count_due(moment)
            if limit is not None:
                due = min(due, limit - handled)
            if due <= 0:
                break
            claimed = _drain_round(
                app, editorial, mailer, moment, due, processes, summary, freeze_here
            )
            if not claimed:  # another worker took them first
                break
            handled += claimed
    finally:
        if freeze_here:
            gc.unfreeze()
    log.info("drain finished: %s", summary.line())
    return summary


PROGRESS_ROWS = 10_000  # a progress line each time this many more rows were claimed


def _drain_round(
    app: App,
    editorial: Editorial,
    mailer: Mailer,
    moment: datetime,
    due: int,
    processes: int,
    summary: DrainSummary,
    freeze_here: bool = False,
) -> int:
    """Claim, compose and send ``due`` rows in batches; returns how many were claimed.
    ``freeze_here``: this process freezes what its batches leave alive, as helpers do."""
    ledger = DeliveryStore(app.store)
    people = SubscriberStore(app.store)
    size = app.settings.digest.send_batch
    batches = -(-due // size)
    stop = multiprocessing.Value("b", 0, lock=False)  # set once the backend is fatal
    claimed = 0
    step = _Steps("send queue")
    job = os.getpid()

    def batch_task(task: int) -> tuple[int, DrainSummary]:
        """Claim, compose and send one batch, in whichever process takes it; the rows
        claimed and what became of them."""
        part = DrainSummary()
        if stop.value:
            return 0, part
        # A batch's editions decode into hundreds of thousands of small dicts and lists (no
        # cycles): without the pause they would be promoted and walked by full collections
        # along with the job's story cache, half the cost of reading them. Paused while
        # the batch is claimed and composed, and again while its answers are recorded
        # (``_send_composed``), not while the mailer waits on the network: other jobs of
        # the worker's process need the collector meanwhile.
        with gc_paused():
            rows = ledger.claim(moment, app.worker_name, min(size, due - task * size))
        try:
            with gc_paused():
                composed = compose_batch(app, editorial, ledger, people, rows, part)
                if os.getpid() != job or freeze_here:
                    # What the batches leave alive (emails until sent, new stories, parts)
                    # is not walked by the collector again, which then only walks what
                    # sending makes (0.6-0.8 s of CPU a helper otherwise, 0.5 s in the
                    # job's process, walking each batch's survivors once it ended). A
                    # helper ends with the queue; the job's process unfreezes them when
                    # the drain ends (``drain_queue``).
                    gc.freeze()
        except BaseException:  # nothing of the batch was sent: back to the queue
            for row in rows:
                ledger.mark_retry(
                    row.id, app.worker_name, "not attempted: composing failed", moment
                )
            raise
        if stop.value:  # the backend failed in another process meanwhile: not sent
            for email, row in composed:
                stopped = SendResult(
                    email.delivery_id,
                    SendOutcome.RETRY,
                    error="not attempted: the mail backend refused to work",
                )
                _record(app, ledger, people, row, email, stopped, part)
        elif composed:
            _send_composed(app, ledger, people, mailer, composed, part)
            if part.fatal:
                stop.value = 1
        if os.getpid() != job:  # a helper's connections end with its batch
            mailer.close()
        return len(rows), part

    def tally(_: int, result: tuple[int, DrainSummary]) -> None:
        nonlocal claimed
        count, part = result
        summary.sent += part.sent
        summary.retried += part.retried
        summary.failed += part.failed
        summary.unknown += part.unknown
        summary.suppressed += part.suppressed
        summary.errors += part.errors
        summary.fatal = summary.fatal or part.fatal
        if claimed // PROGRESS_ROWS != (claimed + count) // PROGRESS_ROWS:
            step.done(f"{claimed + count:,} of {due:,} rows claimed, {summary.sent:,} sent")
        claimed += count

    def in_helper() -> None:
        app.store.engine.dispose(close=False)  # a helper opens connections of its own
        after_fork = getattr(mailer, "after_fork", None)  # and so does its mailer
        if after_fork is not None:
            after_fork()

    # The first batch is composed here before the helpers start: they inherit the stories
    # it rendered (most of the day's popular ones) instead of each rendering them again.
    forked.run_tasks(batches, batch_task, tally, processes, on_start=in_helper, first_here=1)
    return claimed


def compose_batch(
    app: App,
    editorial: Editorial,
    ledger: DeliveryStore,
    people: SubscriberStore,
    rows: Sequence[DeliveryRow],
    summary: DrainSummary,
) -> list[tuple[OutgoingEmail, DeliveryRow]]:
    """The emails of a batch of claimed rows; rows whose reader may no longer receive them
    or whose content is gone are recorded (suppressed, failed) and left out."""
    worker = app.worker_name
    # Re-read statuses just before sending: an unsubscribe after the build must win.
    fresh, watchlist_counts = people.for_sending(sorted({row.subscriber_id for row in rows}))
    editions = ledger.get_editions(
        sorted({r.edition_id for r in rows if r.edition_id}), editorial.parts, keep_refs=True
    )
    # The batch's new stories in one render (per reader time zone).
    editorial.assembler.prepare(
        (
            (editions[row.edition_id].content, fresh[row.subscriber_id].timezone)
            for row in rows
            if row.edition_id in editions and row.subscriber_id in fresh
        ),
        editorial.parts,
    )
    out: list[tuple[OutgoingEmail, DeliveryRow]] = []
    for row in rows:
        reader = fresh.get(row.subscriber_id)
        if reader is None or not _may_receive(reader, row):
            reason = reader.status.value if reader else "subscriber deleted"
            ledger.mark_suppressed(row.id, worker, f"not sent: {reason}")
            summary.suppressed += 1
            continue
        email = compose(app, editorial, row, reader, editions, watchlist_counts.get(reader.id, 0))
        if email is None:
            ledger.mark_failed(row.id, worker, "content no longer exists")
            summary.failed += 1
            continue
        out.append((email, row))
    editorial.assembler.release()  # the batch's editions can go with it
    return out


def _send_composed(
    app: App,
    ledger: DeliveryStore,
    people: SubscriberStore,
    mailer: Mailer,
    composed: Sequence[tuple[OutgoingEmail, DeliveryRow]],
    summary: DrainSummary,
) -> None:
    """Hand a composed batch to the mailer and record each answer."""
    emails = [email for email, _ in composed]
    by_id = {email.delivery_id: row for email, row in composed}
    worker = app.worker_name
    results = mailer.send_batch(emails)
    with gc_paused():  # the batch's records: many small objects, no cycles
        accepted = [
            (by_id[r.delivery_id].id, r.provider_message_id)
            for r in results
            if r.outcome is SendOutcome.SENT
        ]
        summary.sent += ledger.mark_sent_many(accepted, worker, app.clock())
        for email, result in zip(emails, results, strict=True):
            if result.outcome is not SendOutcome.SENT:
                _record(app, ledger, people, by_id[email.delivery_id], email, result, summary)


def _may_receive(subscriber: Subscriber, row: DeliveryRow) -> bool:
    """Active readers get everything; a pending one only the confirmation email; a paused
    one only the link that lets them resume."""
    if subscriber.status is SubscriberStatus.ACTIVE:
        return True
    if row.channel == "confirm":
        return subscriber.status is SubscriberStatus.PENDING
    if row.channel == "link":
        return subscriber.status in (SubscriberStatus.PAUSED, SubscriberStatus.PENDING)
    return False


def _record(
    app: App,
    ledger: DeliveryStore,
    people: SubscriberStore,
    row: DeliveryRow,
    email: OutgoingEmail,
    result: SendResult,
    summary: DrainSummary,
) -> None:
    """Record a send that was not accepted (accepted ones are recorded in bulk)."""
    worker = app.worker_name
    now = app.clock()
    if result.outcome is SendOutcome.RETRY:
        delay = timedelta(seconds=result.retry_after) if result.retry_after else RETRY_BACKOFF
        ledger.mark_retry(row.id, worker, result.error or "retry", now + delay)
        summary.retried += 1
    elif result.outcome is SendOutcome.FAILED:
        ledger.mark_failed(row.id, worker, result.error or "rejected")
        summary.failed += 1
        summary.errors.append(f"delivery {row.id}: {result.error}")
        if result.suppress:
            people.set_status(email.to, SubscriberStatus.BOUNCED, now)
    else:
        ledger.mark_unknown(row.id, worker, result.error or "no answer from the provider")
        summary.unknown += 1
    if result.fatal and not summary.fatal:
        summary.fatal = result.error or "the mail backend refused to work"
        log.error("sending stopped: %s", summary.fatal)


def recover(app: App, now: datetime | None = None) -> tuple[int, int]:
    """Reap rows stuck in sending, resend unresolved unknown rows once. (reaped, resent)"""
    now = now or app.clock()
    settings = app.settings.digest
    ledger = DeliveryStore(app.store)
    reaped = ledger.reap(now, timedelta(seconds=settings.send_lease_seconds))
    resent = ledger.requeue_unresolved(now, timedelta(minutes=settings.unknown_resend_minutes))
    if reaped or resent:
        log.warning("delivery recovery: reaped=%d resent_once=%d", reaped, resent)
    return reaped, resent


def preview_digest(
    app: App,
    subscriber: Subscriber | None,
    since: datetime,
    until: datetime,
) -> tuple[Digest, RenderedEmail]:
    """Build and render a digest for any period without storing or sending anything.

    ``subscriber`` None means the public edition (every theme, no watchlists).
    """
    people = [subscriber] if subscriber else []
    editorial = load_editorial(app, people)
    items_in = cache(lambda start, end: app.store.items_between(start, end))
    zone = ZoneInfo(subscriber.timezone if subscriber else app.settings.digest.public_timezone)
    period = Period(start=since, end=until, local_date=until.astimezone(zone).date())
    items = items_in(since, until)
    themes = subscriber.themes if subscriber else tuple(t.id for t in editorial.themes)
    hits = _watch_hits(editorial, subscriber, items) if subscriber else {}
    digest = _build(app, editorial, themes, period, items, hits, items_in)
    base = app.settings.web.base_url
    if subscriber:
        unsubscribe, manage = _links(app, editorial.tokens, subscriber)
        recipient = Recipient(
            reason=_reason(subscriber, app.settings.digest.site_name),
            manage_url=manage,
            unsubscribe_url=unsubscribe,
            timezone=subscriber.timezone,
        )
    else:
        recipient = Recipient(
            reason="The public edition of qasid.",
            manage_url=f"{base}/",
            unsubscribe_url=f"{base}/",
            timezone=app.settings.digest.public_timezone,
        )
    rendered = editorial.renderer.digest(digest_as_dict(digest), recipient, "Digest preview")
    return digest, rendered


def store_digest(
    app: App, subscriber: Subscriber | None, since: datetime, until: datetime
) -> tuple[Digest, int, bool]:
    """Build a digest for a chosen period and store it as a ``custom`` edition (queued for
    the subscriber when it has stories). Scheduled editions are not affected.
    Returns (digest, edition id, created)."""
    digest, _ = preview_digest(app, subscriber, since, until)
    zone = ZoneInfo(subscriber.timezone if subscriber else app.settings.digest.public_timezone)
    edition_id, created = DeliveryStore(app.store).create_edition(
        kind="personal" if subscriber else "public",
        subscriber_id=subscriber.id if subscriber else None,
        frequency="custom",
        period_start=since,
        period_end=until,
        local_date=until.astimezone(zone).date().isoformat(),
        subject=digest.subject,
        item_count=len(digest.item_ids),
        content=digest_as_dict(digest),
        now=app.clock(),
        queue_delivery=subscriber is not None and not digest.empty,
    )
    return digest, edition_id, created
