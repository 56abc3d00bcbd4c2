"""Benchmark 2: item upserts per second into SQLite and PostgreSQL.

Items are real normalised items (bench.corpus documents through parse and normalise: about
1.2 KB of sanitized HTML and 1 KB of text each), re-keyed per feed; 1 in 25 links is a
story that several feeds carry. Each feed's batch is 200 items (the poller's max_entries).

Scenarios, each timed as wall seconds of the store calls alone:
- insert: every item new (a cold start);
- unchanged: the same batches again;
- update: the same again with 10% of the items changed at the source;
- poll mix: 10% of the items new stories, the rest unchanged (a feed that changed since the
  last poll: what the poller stores in a warm pass).

Paths, measured in the same run, alternating, on the same database:
- baseline: the per-feed ``store_items`` as it was before the batch path
  (bench/store_baseline.py), one transaction per feed;
- per-feed: today's ``Store.store_items``, one transaction per feed;
- batched: ``Store.store_batches`` with 10 feeds (2,000 items) per transaction, as the
  poller's writer coalesces them.

CPU is the client process plus, on PostgreSQL, the backends serving the benchmark database;
items per CPU-second is what a quiet machine could reach if the store were CPU-bound.

Schemas: "as migrated" has every migration, including issue 5's 0005, which maintains the
archive's full-text search (an FTS5 table on SQLite; a stored tsvector column with a GIN
index on PostgreSQL) and theme index on every item insert and update, and 0007, after which
SQLite's store indexes each batch's new and changed items itself instead of 0005's per-row
insert and text triggers (the baseline path runs with those triggers put back, as it was
before); "no archive index" drops the triggers, the FTS5 table and the column after
migrating, to show the store's own cost.

Setup: a database migrated by Alembic, prefilled with 20,000 items of other feeds, then
``ANALYZE`` (both engines) so the planners have statistics. Targets: 50,000 upserts/s on
SQLite, 25,000 on PostgreSQL.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from bench import corpus, store_baseline
from bench.common import database, median, postgres_available, spread, step, table
from pipeline.adapters.parse import parse_feed
from pipeline.adapters.storage import FeedItems, Store
from pipeline.core.models import FeedSource, Item, StoreCounts
from pipeline.core.normalize import items_from_feed

PER_FEED = 200
# (name, version, every n-th item changed at the source, every n-th item a new story)
SCENARIOS = (
    ("insert", 0, 0, 0),
    ("unchanged", 0, 0, 0),
    ("poll mix", 2, 0, 10),
    ("update", 1, 10, 0),
)
GROUP = 10  # feeds per store_batches call
TARGETS = {"sqlite": 50_000, "postgres": 25_000}
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)

Batch = tuple[int, str, list[Item]]


def templates(documents: int = 12) -> list[Item]:
    items: list[Item] = []
    for feed in range(documents):
        url = f"https://news.example/{feed}/feed.xml"
        parsed = parse_feed(corpus.document(feed), url, "application/rss+xml")
        items += items_from_feed(parsed, url, None, NOW)
    return items


def make_batches(
    feed_ids: Sequence[int],
    base: list[Item],
    version: int = 0,
    changed_every: int = 0,
    fresh_every: int = 0,
) -> list[Batch]:
    batches: list[Batch] = []
    for feed_id in feed_ids:
        items = []
        for k in range(PER_FEED):
            template = base[(feed_id * 7 + k) % len(base)]
            shared = k % 25 == 3
            link = f"https://wire.example/{k}" if shared else f"https://n.example/{feed_id}/{k}"
            item = replace(
                template,
                guid_key=f"{feed_id}:{k}",
                link=link,
                content_hash=f"{feed_id}:{k}:0",
                published=NOW - timedelta(minutes=k),
            )
            if fresh_every and k % fresh_every == 1:  # a new story in place of an old one
                item = replace(
                    item,
                    guid_key=f"{feed_id}:{k}:v{version}",
                    link=f"https://n.example/{feed_id}/{k}/v{version}",
                )
            if changed_every and k % changed_every == 0:
                item = replace(
                    item,
                    title=item.title + f" (update {version})",
                    content_hash=f"{feed_id}:{k}:{version}",
                )
            items.append(item)
        batches.append((feed_id, f"https://feeds.example/{feed_id}", items))
    return batches


def feed_url(feed_id: int) -> str:
    return f"https://feeds.example/{feed_id}"


def server_cpu(store: Store) -> float:
    """CPU seconds of the PostgreSQL backends serving this database (0 for SQLite, whose
    work is in the client). Background processes (WAL writer, checkpointer) not included."""
    if store.is_sqlite:
        return 0.0
    database = store.engine.url.database or ""
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or ())
            if cmdline.startswith("postgres:") and f" {database} " in f"{cmdline} ":
                times = proc.cpu_times()
                total += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_path(
    store: Store, path: str, batches: list[Batch], when: datetime
) -> tuple[float, float, list[StoreCounts]]:
    """(wall s, CPU s of client and server, counts) of storing ``batches`` by ``path``."""
    counts: list[StoreCounts] = []
    wall, cpu = time.perf_counter(), time.process_time() + server_cpu(store)
    if path == "baseline":
        for feed_id, url, items in batches:
            counts.append(store_baseline.store_items(store, feed_id, url, items, when))
    elif path == "per-feed":
        for feed_id, url, items in batches:
            counts.append(store.store_items(feed_id, url, items, when))
    else:
        for start in range(0, len(batches), GROUP):
            group = [FeedItems(*b) for b in batches[start : start + GROUP]]
            counts += store.store_batches(group, when)
    wall = time.perf_counter() - wall
    return wall, time.process_time() + server_cpu(store) - cpu, counts


def analyze(store: Store) -> None:
    with store.engine.connect() as conn:
        if store.is_sqlite:
            conn.exec_driver_sql("ANALYZE")
        else:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        conn.commit()


# What issue 5's migration 0005 maintains on every item insert and update (the archive's
# full-text search and theme index), dropped for the "without archive index" variant.
ARCHIVE_INDEX = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS item_archive_insert",
        "DROP TRIGGER IF EXISTS item_archive_text",
        "DROP TRIGGER IF EXISTS item_archive_themes",
        "DROP TRIGGER IF EXISTS item_archive_delete",
        "DROP TABLE IF EXISTS item_fts",  # so the store has nothing to index (migration 0007)
    ],
    "postgres": [
        "DROP TRIGGER IF EXISTS item_theme_insert ON item",
        "DROP TRIGGER IF EXISTS item_theme_update ON item",
        "ALTER TABLE item DROP COLUMN IF EXISTS search_vector",
    ],
}


# The baseline is the store as it was before migration 0007 too: on SQLite, 0005's insert
# and text triggers indexed every new and changed item (0007 dropped them; the store
# indexes per batch since). They are put back for the baseline path, outside the timing.
def _sqlite_0005_triggers() -> dict[str, str]:
    path = (
        Path(__file__).resolve().parent.parent
        / "pipeline/adapters/migrations/versions/0007_archive_bulk_index.py"
    )
    spec = importlib.util.spec_from_file_location("qasid_migration_0007", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module._SQLITE_TRIGGERS)


def baseline_schema(store: Store, path: str, archive_index: bool, on: bool) -> None:
    """0005's SQLite insert and text triggers, on for the baseline path, off after it."""
    if path != "baseline" or not store.is_sqlite or not archive_index:
        return
    with store.engine.begin() as conn:
        for name, statement in _sqlite_0005_triggers().items():
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
            if on:
                conn.exec_driver_sql(statement)


def bench_engine(
    engine: str, feeds: int, runs: int, paths: Sequence[str], archive_index: bool = True
) -> dict[str, Any]:
    base = templates()
    results: dict[str, dict[str, list[float]]] = {
        path: {name: [] for name in (*(s[0] for s in SCENARIOS), "cpu_us")} for path in paths
    }
    with database(engine) as url:
        store = Store(url)
        store.upgrade()
        if not archive_index:
            with store.engine.begin() as conn:
                for statement in ARCHIVE_INDEX[engine]:
                    conn.exec_driver_sql(statement)
        total_feeds = 100 + runs * len(paths) * feeds
        sources = [FeedSource(url=feed_url(n), title=f"F{n}") for n in range(1, total_feeds + 1)]
        store.sync_sources(sources, "cli", NOW)
        prefill = make_batches(range(1, 101), base)
        for start in range(0, len(prefill), GROUP):
            store.store_batches(prefill[start : start + GROUP], NOW)
        analyze(store)
        variant = "" if archive_index else " (archive index dropped)"
        step(f"store {engine}{variant}: prefilled {store.count_items()} items, ANALYZE done")
        next_feed = 101
        for rep in range(runs):
            for path in paths:
                feed_ids = list(range(next_feed, next_feed + feeds))
                next_feed += feeds
                n = feeds * PER_FEED
                line = []
                cpu_total = 0.0
                for scenario, version, changed_every, fresh_every in SCENARIOS:
                    batches = make_batches(feed_ids, base, version, changed_every, fresh_every)
                    baseline_schema(store, path, archive_index, True)
                    wall, cpu, counts = run_path(store, path, batches, NOW + timedelta(hours=rep))
                    baseline_schema(store, path, archive_index, False)
                    _check_counts(scenario, counts)
                    results[path][scenario].append(n / wall)
                    cpu_total += cpu
                    line.append(f"{scenario} {n / wall:,.0f}/s")
                results[path]["cpu_us"].append(cpu_total / (len(SCENARIOS) * n) * 1e6)
                step(f"store {engine}{variant} #{rep + 1} {path}: " + ", ".join(line))
        store.close()
    return results


def _check_counts(scenario: str, counts: list[StoreCounts]) -> None:
    total = sum(c.new + c.updated + c.unchanged + c.duplicates for c in counts)
    if total != len(counts) * PER_FEED:
        raise AssertionError(f"{scenario}: counts add up to {total}")
    if scenario == "insert" and any(c.updated or c.unchanged for c in counts):
        raise AssertionError(f"insert: {counts[:2]}")
    if scenario == "unchanged" and any(c.new or c.updated for c in counts):
        raise AssertionError(f"unchanged: {counts[:2]}")
    if scenario == "update" and sum(c.updated for c in counts) == 0:
        raise AssertionError("update: nothing updated")
    if scenario == "poll mix" and sum(c.new for c in counts) != len(counts) * PER_FEED // 10:
        raise AssertionError(f"poll mix: {counts[:2]}")


def run(
    feeds: int = 40,
    runs: int = 3,
    engines: Sequence[str] = ("sqlite", "postgres"),
    paths: Sequence[str] = ("baseline", "per-feed", "batched"),
    archive_variant: bool = True,
) -> dict[str, Any]:
    step(f"store: {feeds} feeds × {PER_FEED} items per scenario, {runs} runs, paths {paths}")
    out: dict[str, Any] = {}
    rows: list[list[object]] = []
    for engine in engines:
        if engine == "postgres" and not postgres_available():
            step("store: PostgreSQL not reachable; skipped")
            continue
        variants = [("as migrated", True, paths)]
        if archive_variant:
            kept = tuple(p for p in paths if p != "per-feed")
            variants.append(("no archive index", False, kept))
        for schema, archive_index, variant_paths in variants:
            results = bench_engine(engine, feeds, runs, variant_paths, archive_index)
            out[f"{engine}, {schema}"] = results
            baseline = results.get("baseline")
            for path in variant_paths:
                r = results[path]
                cells: list[object] = [engine, schema, path]
                for scenario in (s[0] for s in SCENARIOS):
                    ratio = ""
                    if baseline and path != "baseline":
                        ratio = f" ×{median(r[scenario]) / median(baseline[scenario]):.1f}"
                    cells.append(spread(r[scenario], "{:,.0f}") + ratio)
                cells.append(spread(r["cpu_us"], "{:.1f}"))
                cells.append(f"{1e6 / median(r['cpu_us']):,.0f}")
                met = [s[0] for s in SCENARIOS if median(r[s[0]]) >= TARGETS[engine]]
                cells.append(", ".join(met) or "none")
                rows.append(cells)
    summary = table(
        f"Store: item upserts/s (wall), {PER_FEED}-item feed batches, "
        f"batched = {GROUP} feeds per transaction",
        [
            "engine",
            "schema",
            "path",
            "insert/s",
            "unchanged/s",
            "poll mix/s",
            "update 10%/s",
            "CPU µs/item (client + server)",
            "items per CPU-second",
            f"target met (SQLite {TARGETS['sqlite']:,}/s, PG {TARGETS['postgres']:,}/s)",
        ],
        rows,
    )
    print(summary, flush=True)
    out["table"] = summary
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], action="append")
    args = parser.parse_args(argv)
    run(args.feeds, args.runs, args.engine or ("sqlite", "postgres"))


if __name__ == "__main__":
    main()
