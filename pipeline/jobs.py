"""Plain job functions. The CLI and the scheduler call these same functions; so do tests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pipeline.adapters.archive_store import index_archive
from pipeline.adapters.event_store import EventStore, PurgeCounts
from pipeline.bootstrap import App
from pipeline.core.errors import StorageError
from pipeline.core.tagger import TagInput
from pipeline.services import FeedPollReport, Poller, PollSummary

__all__ = [
    "FeedPollReport",
    "PollSummary",
    "index_item_archive",
    "poll_feeds",
    "purge_webhook_events",
    "retag_items",
    "sync_configured_feeds",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


def sync_configured_feeds(app: App) -> tuple[int, int]:
    """Make the store hold every feed in the configured feed list. Returns (added, known)."""
    added, known = app.store.sync_sources(app.configured_sources(), "config", app.clock())
    if added:
        log.info("feeds synced from config: added=%d known=%d", added, known)
    return added, known


def run_event_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop's event loop where it is installed (Linux and macOS): an
    unchanged feed's request costs about a fifth less CPU there than on asyncio's own loop
    (BENCHMARKS.md), and the poll does little else per feed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency wherever it builds
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def poll_feeds(
    app: App,
    *,
    urls: Sequence[str] | None = None,
    all_feeds: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_report: Callable[[FeedPollReport], None] | None = None,
) -> PollSummary:
    """Poll the feeds that are due (or all, or the given URLs) once, and record every outcome.

    Feeds are leased first, so a second worker running the same job polls other feeds.
    At the end the archive's item index catches up with what was stored
    (``index_item_archive``), whether or not this run polled anything.
    """
    settings = app.settings
    feeds = app.store.claim_feeds(
        app.clock(),
        app.worker_name,
        timedelta(seconds=settings.worker.lease_seconds),
        urls=urls,
        due_only=not all_feeds,
    )
    if on_start:
        on_start(len(feeds))
    if not feeds:
        index_item_archive(app)
        return PollSummary()

    async def run() -> PollSummary:
        async with app.fetcher() as fetcher:
            with app.parse_pool() as parser:
                poller = Poller(
                    store=app.store,
                    fetcher=fetcher,
                    parser=parser,
                    clock=app.clock,
                    policy=app.backoff_policy(),
                    concurrency=settings.fetch.concurrency,
                    on_report=on_report,
                    tagger=app.tagger,
                    entries=app.entry_memory,
                )
                return await poller.poll(feeds)

    summary = run_event_loop(run())
    log.info("poll finished: %s", summary.line())
    index_item_archive(app)
    return summary


def index_item_archive(app: App) -> int:
    """Index the items stored or changed since the last run for the archive's search and
    theme pages (``archive_store.index_archive``, migration 0008). A failure is logged, not
    raised: the writes it follows are done, and the next run indexes what this one did not."""
    try:
        return index_archive(app.store)
    except StorageError as error:
        log.warning("archive index failed (the next run catches up): %s", error)
        return 0


def retag_items(app: App, since: datetime | None = None, batch: int = 1000) -> int:
    """Tag stored items again with the current rules (after an editor changed them), then
    bring the archive's theme index up to date (``index_item_archive``)."""
    tagger = app.tagger
    items = app.store.items_fetched_since(since)
    done = 0
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        tagged = [
            (
                stored.row_id,
                tagger.tag(
                    TagInput(
                        id=stored.id,
                        title=stored.title,
                        summary=stored.summary_text,
                        link=stored.link,
                        published=stored.published.isoformat(),
                        source=stored.source,
                        feed_url=stored.feed,
                    )
                ),
            )
            for stored in chunk
        ]
        done += app.store.set_tags(tagged)
    index_item_archive(app)  # the theme pages follow the new tags
    log.info("retag finished: items=%d since=%s", done, since.isoformat() if since else "all")
    return done


def purge_webhook_events(app: App) -> PurgeCounts:
    """Delete provider events and quarantined webhook bodies received more than
    ``[sendgrid] webhook_retention_days`` ago (the worker runs this once a day)."""
    days = app.settings.sendgrid.webhook_retention_days
    counts = EventStore(app.store).purge(app.clock() - timedelta(days=days))
    if counts.events or counts.quarantined:
        log.info(
            "webhook retention: events=%d quarantined=%d older_than_days=%d",
            counts.events,
            counts.quarantined,
            days,
        )
    return counts
