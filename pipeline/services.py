"""Use cases that orchestrate adapters. Decisions live in pipeline.core; I/O in adapters."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.adapters.fetch import Fetcher
from pipeline.adapters.parse import EntryHashes, ParsePool
from pipeline.adapters.storage import PollWrite, Store
from pipeline.core.errors import FeedError
from pipeline.core.models import FeedOutcome, FeedState, Item, StoreCounts
from pipeline.core.normalize import items_from_feed_since
from pipeline.core.schedule import BackoffPolicy, PollRecord, decide_after_poll
from pipeline.core.tagger import Tagger, TagInput, TagResult

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def tag_items(tagger: Tagger, items: Sequence[Item], state: FeedState) -> dict[str, TagResult]:
    """The tagger's verdict per item (by guid_key), the feed standing in as the source."""
    return {
        it.guid_key: tagger.tag(
            TagInput(
                id=it.guid_key,
                title=it.title,
                summary=it.summary_text,
                link=it.link,
                published=it.published.isoformat(),
                source=it.source or state.title,
                feed_url=state.url,
            )
        )
        for it in items
    }


@dataclass(frozen=True)
class FeedPollReport:
    """What one poll of one feed did."""

    url: str
    outcome: FeedOutcome
    message: str | None = None
    new: int = 0
    updated: int = 0
    duplicates: int = 0
    elapsed: float = 0.0


@dataclass
class PollSummary:
    """A whole poll run: per-feed reports and totals."""

    reports: list[FeedPollReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def outcomes(self) -> Counter[FeedOutcome]:
        return Counter(report.outcome for report in self.reports)

    @property
    def failed(self) -> list[FeedPollReport]:
        return [report for report in self.reports if report.outcome.is_failure]

    @property
    def new(self) -> int:
        return sum(report.new for report in self.reports)

    @property
    def updated(self) -> int:
        return sum(report.updated for report in self.reports)

    def line(self) -> str:
        """A one-line summary for logs and the end of `qasid poll`."""
        counts = self.outcomes
        ok = counts[FeedOutcome.OK] + counts[FeedOutcome.MALFORMED]
        return (
            f"{len(self.reports)} feeds: {ok} ok ({counts[FeedOutcome.MALFORMED]} with warnings), "
            f"{counts[FeedOutcome.NOT_MODIFIED]} not modified, {len(self.failed)} failed; "
            f"{self.new} new items, {self.updated} updated; {self.seconds:.1f} s"
        )


class LazyTags(Mapping[str, TagResult]):
    """``tag_items`` computed on demand: the store asks only for the items it inserts or
    updates, so the unchanged entries of a changed feed (most of them) are never tagged."""

    def __init__(self, tagger: Tagger, items: Sequence[Item], state: FeedState) -> None:
        self._tagger = tagger
        self._state = state
        self._items = {it.guid_key: it for it in reversed(items)}  # first one wins
        self._done: dict[str, TagResult] = {}

    def __getitem__(self, key: str) -> TagResult:
        result = self._done.get(key)
        if result is None:
            it = self._items[key]
            result = tag_items(self._tagger, [it], self._state)[key]
            self._done[key] = result
        return result

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


# Writes are coalesced up to these sizes; a flush takes whatever is waiting, and waits at most
# FLUSH_WINDOW for more once it has something, so a lone write is never held up for long.
FLUSH_ITEMS = 2_000
FLUSH_WRITES = 500
FLUSH_WINDOW = 0.005  # seconds


@dataclass
class _Pending:
    """One feed's write: ``prepare`` builds it in the writer thread (normalising and
    tagging there, off the event loop); ``future`` gets the feed's item counts."""

    prepare: Callable[[], PollWrite]
    future: asyncio.Future[StoreCounts]
    write: PollWrite | None = None


class _Writer:
    """The poller's single writer thread (SQLite allows one writer). Every feed's poll goes
    through it, and all the writes waiting when it is free go to the store together
    (``Store.write_polls``: one transaction for many feeds' items and poll records). If such
    a transaction fails, each write is retried on its own, so one bad feed fails alone."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="qasid-store", daemon=True)
        self._thread.start()

    def submit(self, prepare: Callable[[], PollWrite]) -> asyncio.Future[StoreCounts]:
        future: asyncio.Future[StoreCounts] = self._loop.create_future()
        self._queue.put(_Pending(prepare, future))
        return future

    def close(self) -> None:
        """Write everything submitted so far, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = self._gather(first)
            self._flush(batch)
            if stopping:
                return

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        """The writes to flush together: ``first`` and whatever else is waiting or arrives
        within FLUSH_WINDOW, up to FLUSH_WRITES writes or FLUSH_ITEMS items, each prepared
        as it is taken. The flag says the writer was asked to stop."""
        batch: list[_Pending] = []
        items = 0
        deadline = time.monotonic() + FLUSH_WINDOW
        pending: _Pending | None = first
        while pending is not None:
            if self._prepare(pending) and pending.write is not None:
                batch.append(pending)
                items += len(pending.write.items)
            if len(batch) >= FLUSH_WRITES or items >= FLUSH_ITEMS:
                return batch, False
            wait = deadline - time.monotonic()
            try:
                pending = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _prepare(self, pending: _Pending) -> bool:
        if pending.write is not None:
            return True
        try:
            pending.write = pending.prepare()
        except BaseException as error:  # a bug in normalising one feed fails that feed only
            self._settle(pending, error=error)
            return False
        return True

    def _flush(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        try:
            counts = self._store.write_polls([p.write for p in batch if p.write is not None])
        except BaseException as error:
            if len(batch) == 1:
                self._settle(batch[0], error=error)
                return
            log.warning(
                "batched write of %d polls failed, writing one by one: %s", len(batch), error
            )
            for pending in batch:
                self._flush([pending])
            return
        for pending, count in zip(batch, counts, strict=True):
            self._settle(pending, result=count)

    def _settle(
        self,
        pending: _Pending,
        *,
        result: StoreCounts | None = None,
        error: BaseException | None = None,
    ) -> None:
        def settle() -> None:
            if pending.future.done():
                return
            if error is not None:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(result or StoreCounts())

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self._loop.call_soon_threadsafe(settle)


class EntryMemory:
    """What each feed's last stored document held, for the polls of one process: its
    entries' bytes (``EntryHashes``, so a parse worker gives feedparser only the entries that
    changed) and the fingerprints of the entries normalised (``items_from_feed_since``, so
    an entry parsed again is not normalised again when it did not change). Both are
    remembered only once the poll's items are stored, and forgotten together when a write
    fails. Bounded: the feeds polled least recently are forgotten first (they are parsed
    and normalised in full next time, which is always correct)."""

    def __init__(self, max_feeds: int = 10_000) -> None:
        self.max_feeds = max_feeds
        # per feed: entry fingerprints, entry hashes, the feed language they were stored under
        self._seen: OrderedDict[
            int, tuple[Mapping[int, int | None], EntryHashes | None, str | None]
        ] = OrderedDict()
        self._lock = threading.Lock()  # read in the writer thread, written in the loop's

    def recall(self, feed_id: int) -> Mapping[int, int | None]:
        """The entry fingerprints for ``items_from_feed_since``."""
        with self._lock:
            remembered = self._seen.get(feed_id)
        return remembered[0] if remembered is not None else {}

    def recall_hashes(self, feed_id: int, language: str | None = None) -> EntryHashes | None:
        """The entry hashes for ``parse_feed_since``; None when the feed's items were stored
        under another configured language (an entry left unparsed is not normalised
        again, so its item would keep the old one)."""
        with self._lock:
            remembered = self._seen.get(feed_id)
        if remembered is None or remembered[2] != language:
            return None
        return remembered[1]

    def remember(
        self,
        feed_id: int,
        seen: Mapping[int, int | None],
        hashes: EntryHashes | None = None,
        language: str | None = None,
    ) -> None:
        with self._lock:
            self._seen[feed_id] = (seen, hashes, language)
            self._seen.move_to_end(feed_id)
            while len(self._seen) > self.max_feeds:
                self._seen.popitem(last=False)

    def forget(self, feed_id: int) -> None:
        with self._lock:
            self._seen.pop(feed_id, None)


@dataclass
class Poller:
    """Polls claimed feeds concurrently: fetch, skip unchanged, parse off-process, then
    normalise, tag and store in one writer thread that coalesces many feeds per transaction."""

    store: Store
    fetcher: Fetcher
    parser: ParsePool
    clock: Clock
    policy: BackoffPolicy
    concurrency: int = 64
    on_report: Callable[[FeedPollReport], None] | None = None
    tagger: Tagger | None = None  # when set, items are tagged as they are stored
    entries: EntryMemory | None = None  # when set, unchanged entries are not normalised again

    async def poll(self, feeds: Sequence[FeedState]) -> PollSummary:
        started = time.perf_counter()
        summary = PollSummary()
        gate = asyncio.Semaphore(self.concurrency)
        writer = _Writer(self.store, asyncio.get_running_loop())
        try:

            async def one(state: FeedState) -> None:
                async with gate:
                    report = await self._poll_one(state, writer)
                summary.reports.append(report)
                if self.on_report:
                    self.on_report(report)

            await asyncio.gather(*(one(state) for state in feeds))
        finally:
            await asyncio.to_thread(writer.close)
        summary.seconds = time.perf_counter() - started
        return summary

    async def _poll_one(self, state: FeedState, writer: _Writer) -> FeedPollReport:
        started = time.perf_counter()

        def decide(
            outcome: FeedOutcome,
            message: str | None = None,
            *,
            http_status: int | None = None,
            retry_after: float | None = None,
        ) -> PollRecord:
            record = decide_after_poll(
                state,
                outcome,
                self.clock(),
                self.policy,
                message=message,
                http_status=http_status,
                retry_after=retry_after,
            )
            if record.status is FeedOutcome.GONE:
                log.warning("feed disabled: feed=%s reason=%s", state.url, record.message)
            elif outcome.is_failure:
                log.info("feed failed: feed=%s outcome=%s reason=%s", state.url, outcome, message)
            return record

        async def write(
            record: PollRecord, prepare: Callable[[], PollWrite] | None = None
        ) -> FeedPollReport:
            counts = await writer.submit(prepare or (lambda: PollWrite(state.id, record)))
            return FeedPollReport(
                url=state.url,
                outcome=record.status,
                message=record.message,
                new=counts.new,
                updated=counts.updated,
                duplicates=counts.duplicates,
                elapsed=time.perf_counter() - started,
            )

        result = await self.fetcher.fetch(
            state.url, etag=state.etag, last_modified=state.last_modified
        )
        if result.outcome.is_failure:
            record = decide(
                result.outcome,
                result.error,
                http_status=result.http_status,
                retry_after=result.retry_after,
            )
            return await write(record)

        etag, last_modified = result.etag, result.last_modified
        moved = result.permanent_redirect
        if result.not_modified or result.body is None:
            record = decide(FeedOutcome.NOT_MODIFIED, http_status=result.http_status)
            return await write(
                record,
                lambda: PollWrite(
                    state.id, record, etag=etag, last_modified=last_modified, new_url=moved
                ),
            )

        body_hash = hashlib.sha256(result.body).hexdigest()
        if body_hash == state.body_hash:
            # The server ignores conditional GET but sent the same bytes: never re-parse.
            record = decide(FeedOutcome.NOT_MODIFIED, "body unchanged", http_status=200)
            return await write(
                record,
                lambda: PollWrite(
                    state.id,
                    record,
                    etag=etag,
                    last_modified=last_modified,
                    body_hash=body_hash,
                    new_url=moved,
                ),
            )

        memory = self.entries
        hashes: EntryHashes | None = None
        try:
            if memory is None:
                parsed = await self.parser.parse(
                    result.body, result.final_url, result.headers.get("content-type")
                )
            else:
                # Only the entries whose bytes changed since the last stored poll are parsed.
                partial = await self.parser.parse_since(
                    result.body,
                    result.final_url,
                    result.headers.get("content-type"),
                    memory.recall_hashes(state.id, state.language),
                )
                parsed, hashes = partial.feed, partial.hashes
        except FeedError as error:
            try:
                outcome = FeedOutcome(error.outcome)
            except ValueError:
                outcome = FeedOutcome.PARSE_ERROR
            record = decide(outcome, error.message, http_status=result.http_status)
            return await write(record)

        if parsed.bozo:
            outcome, message = FeedOutcome.MALFORMED, f"malformed but usable: {parsed.bozo_reason}"
        else:
            outcome, message = FeedOutcome.OK, None
        fetched_at = self.clock()
        record = decide(outcome, message, http_status=result.http_status)
        final_url = result.final_url

        noted: list[Mapping[int, int | None]] = []

        def prepare() -> PollWrite:
            # In the writer thread: normalising and tagging never block the event loop.
            previous = memory.recall(state.id) if memory is not None else {}
            batch = items_from_feed_since(
                parsed, final_url, state.language or "en", fetched_at, previous
            )
            noted.append(batch.seen)
            items = batch.items
            tags = LazyTags(self.tagger, items, state) if self.tagger else None
            return PollWrite(
                state.id,
                record,
                etag=etag,
                last_modified=last_modified,
                body_hash=body_hash,
                new_url=moved,
                title=parsed.title,
                feed_url=state.url,
                items=items,
                fetched_at=fetched_at,
                tags=tags,
            )

        if memory is None:
            return await write(record, prepare)
        try:
            report = await write(record, prepare)
        except BaseException:
            # Nothing is known to be stored: parse and normalise every entry next time.
            memory.forget(state.id)
            raise
        if noted:
            memory.remember(state.id, noted[-1], hashes, state.language)
        else:
            memory.forget(state.id)
        return report
