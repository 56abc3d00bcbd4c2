"""Benchmark 3: the whole ingest's CPU time against feedparser's alone, on the same bytes.

- Ingest: ``pipeline.jobs.poll_feeds`` over N fresh feeds from the local origin (no added
  latency: CPU does not depend on it), into a fresh database: fetch, parse in the pool,
  normalise, tag (items are tagged at poll time since issue 3), store. Measured twice: as
  ``qasid poll`` runs it (with tagging), and as the issue defines the ingest (fetch, parse,
  normalise, store: the same Poller with ``tagger=None``). CPU is the benchmark process and
  its descendants (the parse workers and the forkserver that forks them), not the origin's.
- Alone: ``feedparser.parse`` on the same documents with its defaults (it sanitizes HTML
  and resolves relative URIs itself), one after the other in this process: what parsing
  these bytes with feedparser alone costs. qasid's own parse turns off feedparser's HTML
  sanitizer and its relative-URI resolver (each re-parses every HTML field; nh3 does both
  while normalising, which the ingest includes), so the table also gives feedparser called
  that way, for comparison.
- Target: ingest / alone < 1.25 (everything besides the parse costs under 25% on top).
- Breakdown, single process and sequential, to show where the rest goes: fetch (aiohttp),
  ``parse_feed`` (feedparser plus our conversion), the parse result's pickling round trip
  (what crossing the process boundary costs), ``items_from_feed`` (normalise and sanitize),
  tagging, and the store (``Store.write_polls``: items and poll records, coalesced up to
  FLUSH_ITEMS items as the poller's writer does). ``--profile`` prints a cProfile of the
  in-process stages.

Runs alternate the ingests and the parse alone, so that all see the same machine noise.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pickle
import pstats
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser

from bench import corpus
from bench.common import TreeCPU, database, measure, median, spread, step, table
from bench.feedserver import Origin
from bench.poll import BenchApp, make_app
from pipeline import jobs
from pipeline.adapters.fetch import Fetcher
from pipeline.adapters.parse import parse_feed
from pipeline.adapters.storage import PollWrite
from pipeline.core.models import FeedOutcome, FeedSource, FetchResult
from pipeline.core.normalize import items_from_feed
from pipeline.core.schedule import BackoffPolicy, decide_after_poll
from pipeline.services import FLUSH_ITEMS, Poller, PollSummary, tag_items


def feedparser_alone(bodies: Sequence[bytes], defaults: bool = True) -> float:
    """CPU seconds of feedparser.parse over ``bodies``: with its defaults, or as
    pipeline.adapters.parse calls it (no sanitizing, no resolving URIs inside HTML)."""
    started = time.process_time()
    for body in bodies:
        feedparser.parse(
            io.BytesIO(body),
            response_headers={"content-type": "application/xml", "content-location": "x"},
            sanitize_html=defaults,
            resolve_relative_uris=defaults,
        )
    return time.process_time() - started


def fresh_app(origin: Origin, feeds: int, url: str, folder: Path) -> BenchApp:
    app = make_app(url, folder, concurrency=100)
    app.store.upgrade()
    sources = [FeedSource(url=origin.url(n), title=f"Feed {n}") for n in range(feeds)]
    app.store.sync_sources(sources, "cli", app.clock())
    return app


def ingest(
    origin: Origin, feeds: int, engine: str, cpu: TreeCPU, tagging: bool = True
) -> tuple[float, float, int]:
    """(CPU s, wall s, items) of polling every feed once into a fresh database."""
    with tempfile.TemporaryDirectory(prefix="qasid-bench-") as tmp, database(engine) as url:
        app = fresh_app(origin, feeds, url, Path(tmp))
        assert app.tagger is not None  # loaded (once per process) before the measurement
        with measure(cpu) as span:
            summary = jobs.poll_feeds(app, all_feeds=True) if tagging else untagged_poll(app)
        if summary.outcomes[FeedOutcome.OK] != feeds:
            raise AssertionError(f"ingest outcomes: {dict(summary.outcomes)}")
        items = app.store.count_items()
        app.close()
    return span.cpu, span.wall, items


def untagged_poll(app: BenchApp) -> PollSummary:
    """``jobs.poll_feeds(app, all_feeds=True)`` with the Poller's ``tagger=None``."""
    settings = app.settings
    lease = timedelta(seconds=settings.worker.lease_seconds)
    feeds = app.store.claim_feeds(app.clock(), app.worker_name, lease, due_only=False)

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
                    tagger=None,
                )
                return await poller.poll(feeds)

    return asyncio.run(run())


def breakdown(origin: Origin, feeds: int, engine: str, profile: bool) -> dict[str, float]:
    """CPU seconds per stage, all in this process, one feed after another."""
    stages = dict.fromkeys(("fetch", "parse_feed", "pickle", "normalise", "tag", "store"), 0.0)
    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory(prefix="qasid-bench-") as tmp, database(engine) as url:
        app = fresh_app(origin, feeds, url, Path(tmp))
        states = {s.url: s for s in app.store.list_feeds()}
        policy = BackoffPolicy()
        tagger = app.tagger
        pending: list[PollWrite] = []

        async def fetch_all() -> list[FetchResult]:
            async with Fetcher(app.settings.fetch) as fetcher:
                return [await fetcher.fetch(origin.url(n)) for n in range(feeds)]

        started = time.process_time()
        results = asyncio.run(fetch_all())
        stages["fetch"] = time.process_time() - started
        if profiler:
            profiler.enable()
        for n, result in enumerate(results):
            assert result.body is not None
            state = states[origin.url(n)]
            t0 = time.process_time()
            parsed = parse_feed(result.body, result.final_url, result.headers.get("content-type"))
            t1 = time.process_time()
            parsed = pickle.loads(pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL))
            t2 = time.process_time()
            now = datetime.now(UTC)
            items = items_from_feed(parsed, result.final_url, state.language, now)
            t3 = time.process_time()
            tags = tag_items(tagger, items, state)
            t4 = time.process_time()
            record = decide_after_poll(state, FeedOutcome.OK, now, policy, http_status=200)
            write = PollWrite(
                state.id,
                record,
                body_hash="0" * 64,
                title=parsed.title,
                feed_url=state.url,
                items=items,
                fetched_at=now,
                tags=tags,
            )
            pending.append(write)
            if sum(len(w.items) for w in pending) >= FLUSH_ITEMS or n == len(results) - 1:
                app.store.write_polls(pending)  # coalesced as the poller's writer does
                pending = []
            t5 = time.process_time()
            stages["parse_feed"] += t1 - t0
            stages["pickle"] += t2 - t1
            stages["normalise"] += t3 - t2
            stages["tag"] += t4 - t3
            stages["store"] += t5 - t4
        if profiler:
            profiler.disable()
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
        app.close()
    return stages


def run(
    feeds: int = 60, runs: int = 3, engine: str = "sqlite", profile: bool = False
) -> dict[str, Any]:
    step(f"ingest CPU: {feeds} feeds, {runs} runs, {engine}")
    bodies = [corpus.document(n) for n in range(feeds)]
    megabytes = sum(map(len, bodies)) / 1e6
    tagged_cpu: list[float] = []
    bare_cpu: list[float] = []
    alone_cpu: list[float] = []
    options_cpu: list[float] = []
    tagged_ratios: list[float] = []
    bare_ratios: list[float] = []
    items = 0
    with Origin(feeds, latency=0.0) as origin:
        cpu = TreeCPU(exclude=[origin.pid])
        # A first, unmeasured poll starts the forkserver (it imports the pipeline once per
        # process lifetime, like a long-running `qasid worker`).
        ingest(origin, min(feeds, 4), engine, cpu)
        for rep in range(runs):
            tagged, wall, items = ingest(origin, feeds, engine, cpu, tagging=True)
            bare, _, _ = ingest(origin, feeds, engine, cpu, tagging=False)
            alone = feedparser_alone(bodies)
            options_cpu.append(feedparser_alone(bodies, defaults=False))
            tagged_cpu.append(tagged)
            bare_cpu.append(bare)
            alone_cpu.append(alone)
            tagged_ratios.append(tagged / alone)
            bare_ratios.append(bare / alone)
            step(
                f"ingest CPU #{rep + 1}: {tagged:.2f} s with tagging ({wall:.2f} s wall, "
                f"{items} items), {bare:.2f} s without, feedparser alone {alone:.2f} s; "
                f"ratios {tagged / alone:.3f} and {bare / alone:.3f}"
            )
        stages = breakdown(origin, feeds, engine, profile)
    alone_median = median(alone_cpu)
    rows: list[list[object]] = [
        ["ingest as `qasid poll` runs it (with tagging)", spread(tagged_cpu), "-"],
        ["ingest as the issue defines it (no tagging)", spread(bare_cpu), "-"],
        ["feedparser.parse alone, same bytes (its defaults)", spread(alone_cpu), "1.000"],
        [
            "feedparser.parse as qasid calls it (no sanitizing or resolving)",
            spread(options_cpu),
            f"{median(options_cpu) / alone_median:.3f}",
        ],
        ["ratio, with tagging", "-", spread(tagged_ratios, "{:.3f}")],
        ["ratio, no tagging (target < 1.25)", "-", spread(bare_ratios, "{:.3f}")],
    ]
    for name, seconds in stages.items():
        rows.append(
            [f"breakdown: {name} (one process)", f"{seconds:.2f}", f"{seconds / alone_median:.3f}"]
        )
    summary = table(
        f"Ingest CPU: {feeds} feeds, {items} items, {megabytes:.1f} MB, {engine}",
        ["what", "CPU s", "÷ feedparser alone"],
        rows,
    )
    print(summary, flush=True)
    return {
        "feeds": feeds,
        "megabytes": megabytes,
        "tagged_cpu": tagged_cpu,
        "bare_cpu": bare_cpu,
        "alone_cpu": alone_cpu,
        "options_cpu": options_cpu,
        "tagged_ratios": tagged_ratios,
        "bare_ratios": bare_ratios,
        "stages": stages,
        "table": summary,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    run(args.feeds, args.runs, args.engine, args.profile)


if __name__ == "__main__":
    main()
