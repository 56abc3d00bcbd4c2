"""Benchmarks 1 and 4: poll N feeds (about 50 entries, about 100 KB each) from a local origin
that adds a fixed latency to every response.

- Cold pass: every feed and item is new. Items/s end to end (fetch, parse, normalise, store).
- Warm passes, with the origin answering 304 to a matching If-None-Match ("304"), or
  ignoring conditional GET and sending the same bytes again ("identical"):
  * with nothing changed: client CPU per unchanged feed (target < 0.5 ms);
  * with 10% of the feeds changed (five new stories each): wall time against the latency
    floor ⌈feeds / concurrency⌉ × latency (target ≤ 1.5 × floor + the changed feeds' parse
    time spread over both cores).
- Every pass asserts that exactly the changed feeds were parsed (benchmark 4): an
  unchanged feed is never parsed, whether the origin says 304 or resends identical bytes.
- The summary gives each pass's client CPU and ``max(floor, CPU ÷ 2 cores)``: what the
  pass would take on two otherwise idle cores if it were CPU-bound (the machine is shared).
- The Fetcher's connector with ``force_close=True`` (no keep-alive: a server lying about
  Content-Length cannot poison a reused connection) against the default keep-alive pool.

Everything runs through ``pipeline.jobs.poll_feeds``, the code path of ``qasid poll``; the
only difference is a ParsePool subclass that counts parses. The client's CPU is the benchmark
process plus its descendants (parse workers, the forkserver), never the origin's.
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import feedparser

from bench import corpus
from bench.common import TreeCPU, database, measure, median, spread, step, table
from bench.feedserver import Origin
from pipeline import jobs
from pipeline.adapters.parse import ParsePool
from pipeline.adapters.storage import Store
from pipeline.bootstrap import App
from pipeline.core.models import FeedSource
from pipeline.settings import Settings, load_settings

LATENCY = 0.2
CHANGED_SHARE = 0.10


class CountingParsePool(ParsePool):
    """A ParsePool that records the URL of every document handed to it (whole, or to be
    parsed only in its changed entries)."""

    def __init__(self, *args: Any, log: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log

    async def parse(self, body: bytes, url: str, content_type: str | None = None) -> Any:
        self.log.append(url)
        return await super().parse(body, url, content_type)

    async def parse_since(
        self, body: bytes, url: str, content_type: str | None = None, previous: Any = None
    ) -> Any:
        # The poller's path when it remembers entries: a changed feed still goes to the
        # parser (which gives feedparser only its new entries); it counts as parsed.
        self.log.append(url)
        return await super().parse_since(body, url, content_type, previous)


@dataclass
class BenchApp(App):
    parsed: list[str] = field(default_factory=list)

    def parse_pool(self) -> ParsePool:
        fetch = self.settings.fetch
        return CountingParsePool(
            fetch.parse_workers, fetch.parse_timeout, fetch.max_entries, log=self.parsed
        )


def bench_settings(database_url: str, folder: Path, concurrency: int) -> Settings:
    """Production defaults except: the origin's address is allowed, the concurrency, and
    per_host raised to the concurrency (every benchmark feed is on one host; the settings
    validator caps per_host at 100, so it is raised on the validated settings object)."""
    config = folder / "qasid.toml"
    config.write_text("", encoding="utf-8")
    env = {
        "DATABASE_URL": database_url,
        "QASID_FETCH_ALLOW_HOSTS": "127.0.0.2/32",
        "QASID_FETCH_CONCURRENCY": str(concurrency),
        "QASID_FETCH_PARSE_WORKERS": "2",
        "QASID_FEEDS_FILE": str(folder / "no-feeds.toml"),
        "QASID_WORKER_NAME": "bench",
    }
    settings = load_settings(config, environ=env)
    fetch = settings.fetch.model_copy(update={"per_host": concurrency})
    return settings.model_copy(update={"fetch": fetch})


def make_app(database_url: str, folder: Path, concurrency: int) -> BenchApp:
    settings = bench_settings(database_url, folder, concurrency)
    return BenchApp(settings=settings, store=Store(settings.database.url))


@dataclass
class PassResult:
    name: str
    feeds: int
    wall: float
    cpu: float
    outcomes: Counter[str]
    new: int
    updated: int
    parsed: int
    server: dict[str, int]


def poll_pass(app: BenchApp, origin: Origin, cpu: TreeCPU, name: str) -> PassResult:
    app.parsed.clear()
    origin.control(reset=True)
    with measure(cpu) as span:
        summary = jobs.poll_feeds(app, all_feeds=True)
    outcomes = Counter(str(r.outcome) for r in summary.reports)
    return PassResult(
        name=name,
        feeds=len(summary.reports),
        wall=span.wall,
        cpu=span.cpu,
        outcomes=outcomes,
        new=summary.new,
        updated=summary.updated,
        parsed=len(app.parsed),
        server=origin.control(),
    )


@contextmanager
def force_close() -> Iterator[None]:
    """Make the Fetcher's TCPConnector close every connection after its response."""
    real = aiohttp.TCPConnector
    aiohttp.TCPConnector = functools.partial(real, force_close=True)  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        aiohttp.TCPConnector = real  # type: ignore[misc]


def feedparser_ms_per_doc(feeds: Sequence[int], version: int = 0) -> float:
    """Median CPU ms of feedparser.parse alone (its defaults) on these documents."""
    times = []
    for feed in feeds:
        body = corpus.document(feed, version)
        started = time.process_time()
        feedparser.parse(
            io.BytesIO(body),
            response_headers={"content-type": "application/xml", "content-location": "x"},
            sanitize_html=True,
            resolve_relative_uris=True,
        )
        times.append(time.process_time() - started)
    return median(times) * 1000


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def run(
    feeds: int = 2000,
    concurrency: int = 200,
    warm_runs: int = 3,
    engine: str = "sqlite",
    sweep: Sequence[int] = (),
    force_close_runs: int = 3,
) -> dict[str, Any]:
    step(f"poll: {feeds} feeds, latency {LATENCY * 1000:.0f} ms, concurrency {concurrency}")
    results: dict[str, Any] = {"feeds": feeds, "concurrency": concurrency, "engine": engine}
    floor = math.ceil(feeds / concurrency) * LATENCY
    changed_count = round(feeds * CHANGED_SHARE)
    sample = list(range(0, feeds, max(1, feeds // 20)))[:20]
    parse_ms = feedparser_ms_per_doc(sample)
    step(f"poll: feedparser alone {parse_ms:.1f} ms per document (median of {len(sample)})")
    with (
        tempfile.TemporaryDirectory(prefix="qasid-bench-") as tmp,
        database(engine) as url,
        Origin(feeds, LATENCY) as origin,
    ):
        folder = Path(tmp)
        cpu = TreeCPU(exclude=[origin.pid])
        app = make_app(url, folder, concurrency)
        app.store.upgrade()
        sources = [FeedSource(url=origin.url(n), title=f"Feed {n}") for n in range(feeds)]
        app.store.sync_sources(sources, "cli", app.clock())
        step(f"poll: origin at {origin.base} (pid {origin.pid}), {engine} store ready")

        cold = poll_pass(app, origin, cpu, "cold")
        _check(cold.outcomes["ok"] == feeds, f"cold pass outcomes {dict(cold.outcomes)}")
        _check(cold.parsed == feeds, f"cold pass parsed {cold.parsed} of {feeds}")
        items = app.store.count_items()
        step(
            f"poll: cold pass {cold.wall:.1f} s wall, {cold.cpu:.1f} s CPU, {items} items "
            f"({items / cold.wall:,.0f} items/s), {cold.new} new"
        )
        results["cold"] = {
            "wall": cold.wall,
            "cpu": cold.cpu,
            "items": items,
            "items_per_s": items / cold.wall,
            "cpu_ms_per_feed": cold.cpu / feeds * 1000,
            "feedparser_ms_per_doc": parse_ms,
        }

        rng = random.Random(2)
        rows: list[list[object]] = []

        def warm(
            app: BenchApp, mode: str, changed: int, label: str, *, close: bool = False
        ) -> PassResult:
            bumped = sorted(rng.sample(range(feeds), changed)) if changed else []
            origin.control(mode=mode, bump=bumped)
            if close:
                with force_close():
                    result = poll_pass(app, origin, cpu, label)
            else:
                result = poll_pass(app, origin, cpu, label)
            parsed = sorted(int(u.rsplit("/", 1)[-1].split(".")[0]) for u in app.parsed)
            _check(parsed == bumped, f"{label}: parsed {len(parsed)} feeds, changed {changed}")
            _check(result.feeds == feeds, f"{label}: {result.feeds} reports of {feeds}")
            bad = {k: v for k, v in result.outcomes.items() if k not in ("ok", "not_modified")}
            _check(not bad, f"{label}: outcomes {dict(result.outcomes)}")
            _check(result.outcomes["ok"] == changed, f"{label}: {dict(result.outcomes)}")
            if mode == "304":
                _check(result.server.get("304", 0) == feeds - changed, f"{label}: {result.server}")
            step(
                f"poll: {label}: {result.wall:.2f} s wall ({result.wall / floor:.2f}× floor), "
                f"{result.cpu:.2f} s CPU, parsed {result.parsed}, "
                f"{result.new} new, {result.updated} updated, origin {result.server}"
            )
            return result

        def row(label: str, passes: Sequence[PassResult], pass_floor: float) -> list[object]:
            walls = [r.wall for r in passes]
            cpus = [r.cpu for r in passes]
            cpu_bound = max(pass_floor, median(cpus) / 2)
            return [
                label,
                spread(walls),
                f"{median(walls) / pass_floor:.2f}",
                spread(cpus),
                f"{cpu_bound:.1f} ({cpu_bound / pass_floor:.2f}×)",
                spread([c / feeds * 1000 for c in cpus]),
            ]

        for concurrency_level in sweep:
            sweep_app = make_app(url, folder, concurrency_level)
            sweep_floor = math.ceil(feeds / concurrency_level) * LATENCY
            result = warm(sweep_app, "304", 0, f"sweep c={concurrency_level}")
            sweep_app.close()
            rows.append(
                row(
                    f"304, nothing changed, concurrency {concurrency_level} "
                    f"(floor {sweep_floor:.1f} s)",
                    [result],
                    sweep_floor,
                )
            )
            results.setdefault("sweep", {})[concurrency_level] = {
                "wall": result.wall,
                "cpu": result.cpu,
                "floor": sweep_floor,
            }

        target_changed = 1.5 * floor + changed_count * parse_ms / 1000 / 2
        results["target_changed_wall"] = target_changed
        results["floor"] = floor
        for mode in ("304", "identical"):
            still: list[PassResult] = []
            closed: list[PassResult] = []
            changed: list[PassResult] = []
            for rep in range(warm_runs):
                still.append(warm(app, mode, 0, f"{mode} unchanged #{rep + 1}"))
                if mode == "304" and rep < force_close_runs:
                    closed.append(
                        warm(app, mode, 0, f"{mode} unchanged force_close #{rep + 1}", close=True)
                    )
                changed.append(warm(app, mode, changed_count, f"{mode} 10% changed #{rep + 1}"))
            results[mode] = {
                "unchanged_wall": [r.wall for r in still],
                "unchanged_cpu": [r.cpu for r in still],
                "changed_wall": [r.wall for r in changed],
                "changed_cpu": [r.cpu for r in changed],
                "force_close_wall": [r.wall for r in closed],
                "force_close_cpu": [r.cpu for r in closed],
            }
            rows.append(row(f"{mode}, nothing changed", still, floor))
            if closed:
                rows.append(row(f"{mode}, nothing changed, force_close", closed, floor))
            rows.append(
                row(
                    f"{mode}, {changed_count} changed (target ≤ {target_changed:.1f} s)",
                    changed,
                    floor,
                )
            )
        app.close()

    cold_row = results["cold"]
    summary = table(
        f"Poll: {feeds} feeds × ~50 entries (~{_doc_kb(sample):.0f} KB), "
        f"{LATENCY * 1000:.0f} ms latency, concurrency {concurrency}, {engine}; "
        f"floor {floor:.1f} s",
        [
            "pass",
            "wall s",
            "× floor",
            "client CPU s",
            "max(floor, CPU ÷ 2 cores) s",
            "client CPU ms per feed polled",
        ],
        [
            [
                f"cold ({cold_row['items']} items, {cold_row['items_per_s']:,.0f} items/s "
                f"wall, {cold_row['items'] / (cold_row['cpu'] / 2):,.0f} per CPU ÷ 2 s)",
                f"{cold_row['wall']:.1f}",
                f"{cold_row['wall'] / floor:.1f}",
                f"{cold_row['cpu']:.1f}",
                f"{max(floor, cold_row['cpu'] / 2):.1f}",
                f"{cold_row['cpu_ms_per_feed']:.1f}",
            ],
            *rows,
        ],
    )
    results["table"] = summary
    print(summary, flush=True)
    return results


def _doc_kb(sample: Sequence[int]) -> float:
    return median([len(corpus.document(n)) for n in sample]) / 1000


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sweep", type=int, nargs="*", default=[])
    args = parser.parse_args(argv)
    run(args.feeds, args.concurrency, args.runs, args.engine, args.sweep)


if __name__ == "__main__":
    main()
