"""L-01: a bounded load on loopback that stops by itself."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline import jobs
from tests.support.app import FakeClock, add_feeds, make_app
from tests.support.feedserver import FeedServer

FEEDS = 200
ENTRIES = 50


def feed_document(feed: int) -> bytes:
    items = "".join(
        f"<item><title>Feed {feed} story {n}: Islamabad and Washington talk trade</title>"
        f"<link>https://load.example/{feed}/{n}</link><guid>{feed}-{n}</guid>"
        f"<pubDate>Sat, 28 Nov 2026 {n % 24:02d}:{n % 60:02d}:00 GMT</pubDate>"
        f"<description>&lt;p&gt;Paragraph {n} of a story about the IMF programme, "
        f"energy tariffs and the budget.&lt;/p&gt;</description></item>"
        for n in range(ENTRIES)
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>Load {feed}</title>'
        f"{items}</channel></rss>"
    ).encode()


def tree_rss(process: psutil.Process) -> int:
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total


@pytest.mark.slow
def test_two_hundred_feeds_are_polled_once_within_memory_and_time(
    sqlite_url: str, tmp_path: Path, feed_server: FeedServer
) -> None:
    for feed in range(FEEDS):
        feed_server.route(f"/load/{feed}.xml", body=feed_document(feed))
    app = make_app(sqlite_url, tmp_path, FakeClock(), concurrency=8, per_host=8, parse_workers=2)
    add_feeds(app, *(feed_server.url(f"/load/{feed}.xml") for feed in range(FEEDS)))

    me = psutil.Process()
    peak = tree_rss(me)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(me))
            done.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        summary = jobs.poll_feeds(app, all_feeds=True)
    finally:
        done.set()
        sampler.join()
    elapsed = time.monotonic() - started

    assert len(summary.reports) == FEEDS
    assert all(feed_server.hits(f"/load/{feed}.xml") == 1 for feed in range(FEEDS))
    assert not summary.failed
    assert summary.new == FEEDS * ENTRIES == app.store.count_items()
    assert peak < 400 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB"
    assert elapsed < 60, f"took {elapsed:.1f} s"
    app.close()
