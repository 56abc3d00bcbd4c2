"""Use cases that orchestrate adapters. Decisions live in pipeline.core; I/O in adapters."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.adapters.fetch import Fetcher
from pipeline.adapters.parse import ParsePool
from pipeline.adapters.storage import Store
from pipeline.core.errors import FeedError
from pipeline.core.models import FeedOutcome, FeedState, Item, StoreCounts
from pipeline.core.normalize import items_from_feed
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
                source=state.title,
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


@dataclass
class Poller:
    """Polls claimed feeds concurrently: fetch, skip unchanged, parse off-process, store."""

    store: Store
    fetcher: Fetcher
    parser: ParsePool
    clock: Clock
    policy: BackoffPolicy
    concurrency: int = 64
    on_report: Callable[[FeedPollReport], None] | None = None
    tagger: Tagger | None = None  # when set, items are tagged as they are stored

    async def poll(self, feeds: Sequence[FeedState]) -> PollSummary:
        started = time.perf_counter()
        summary = PollSummary()
        gate = asyncio.Semaphore(self.concurrency)
        # SQLite allows one writer: funnel store calls through one thread, off the event loop.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qasid-store") as writer:

            async def one(state: FeedState) -> None:
                async with gate:
                    report = await self._poll_one(state, writer)
                summary.reports.append(report)
                if self.on_report:
                    self.on_report(report)

            await asyncio.gather(*(one(state) for state in feeds))
        summary.seconds = time.perf_counter() - started
        return summary

    def _store_tagged(
        self, state: FeedState, items: Sequence[Item], fetched_at: datetime
    ) -> StoreCounts:
        """Tag (off the event loop, in the writer thread) and store one feed's items."""
        tags = tag_items(self.tagger, items, state) if self.tagger else None
        return self.store.store_items(state.id, state.url, items, fetched_at, tags)

    async def _poll_one(self, state: FeedState, writer: ThreadPoolExecutor) -> FeedPollReport:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()

        async def run(fn: Callable[..., object], *args: object, **kwargs: object) -> object:
            return await loop.run_in_executor(writer, lambda: fn(*args, **kwargs))

        def finish(
            outcome: FeedOutcome,
            message: str | None = None,
            *,
            http_status: int | None = None,
            retry_after: float | None = None,
            counts: StoreCounts | None = None,
        ) -> tuple[PollRecord, FeedPollReport]:
            record = decide_after_poll(
                state,
                outcome,
                self.clock(),
                self.policy,
                message=message,
                http_status=http_status,
                retry_after=retry_after,
            )
            counts = counts or StoreCounts()
            report = FeedPollReport(
                url=state.url,
                outcome=record.status,
                message=record.message,
                new=counts.new,
                updated=counts.updated,
                duplicates=counts.duplicates,
                elapsed=time.perf_counter() - started,
            )
            if record.status is FeedOutcome.GONE:
                log.warning("feed disabled: feed=%s reason=%s", state.url, record.message)
            elif outcome.is_failure:
                log.info("feed failed: feed=%s outcome=%s reason=%s", state.url, outcome, message)
            return record, report

        result = await self.fetcher.fetch(
            state.url, etag=state.etag, last_modified=state.last_modified
        )
        if result.outcome.is_failure:
            record, report = finish(
                result.outcome,
                result.error,
                http_status=result.http_status,
                retry_after=result.retry_after,
            )
            await run(self.store.record_poll, state.id, record)
            return report

        validators = {"etag": result.etag, "last_modified": result.last_modified}
        moved = result.permanent_redirect
        if result.not_modified or result.body is None:
            record, report = finish(FeedOutcome.NOT_MODIFIED, http_status=result.http_status)
            await run(self.store.record_poll, state.id, record, new_url=moved, **validators)
            return report

        body_hash = hashlib.sha256(result.body).hexdigest()
        if body_hash == state.body_hash:
            # The server ignores conditional GET but sent the same bytes: never re-parse.
            record, report = finish(FeedOutcome.NOT_MODIFIED, "body unchanged", http_status=200)
            await run(
                self.store.record_poll,
                state.id,
                record,
                body_hash=body_hash,
                new_url=moved,
                **validators,
            )
            return report

        try:
            parsed = await self.parser.parse(
                result.body, result.final_url, result.headers.get("content-type")
            )
        except FeedError as error:
            try:
                outcome = FeedOutcome(error.outcome)
            except ValueError:
                outcome = FeedOutcome.PARSE_ERROR
            record, report = finish(outcome, error.message, http_status=result.http_status)
            await run(self.store.record_poll, state.id, record)
            return report

        fetched_at = self.clock()
        items = items_from_feed(parsed, result.final_url, state.language or "en", fetched_at)
        counts = await run(self._store_tagged, state, items, fetched_at)
        assert isinstance(counts, StoreCounts)
        if parsed.bozo:
            outcome, message = FeedOutcome.MALFORMED, f"malformed but usable: {parsed.bozo_reason}"
        else:
            outcome, message = FeedOutcome.OK, None
        record, report = finish(outcome, message, http_status=result.http_status, counts=counts)
        await run(
            self.store.record_poll,
            state.id,
            record,
            body_hash=body_hash,
            new_url=moved,
            title=parsed.title,
            **validators,
        )
        return report
