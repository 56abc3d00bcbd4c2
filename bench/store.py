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

Schemas, one database each, the paths alternating between them within each run:
- "0007: index in the write" (the baseline path): a SQLite database with 4 KB pages (before
  storage.SQLITE_PAGE_SIZE), at migration 0007, where
  issue 5's archive index (an FTS5 table on SQLite, a stored generated tsvector column with
  a GIN index on PostgreSQL, and item_theme) is written in the ingest transaction (on
  SQLite by 0005's per-row insert and text triggers, put back for the baseline path as it
  was before 0007);
- "0008: index by the step" (per-feed and batched): every migration; the store writes
  items only, marked ``archive_pending``, and ``archive_store.index_archive`` indexes them
  after the writes. The step runs (timed, separately) after each path's scenario, as the
  poll run does; its own throughput is reported (items indexed per wall second, CPU per
  item), and "batched + step" is the store and the step together, so the index's cost is
  shown, not hidden.

Setup: each database migrated by Alembic, prefilled with 20,000 indexed items of other
feeds (at head, then down to 0007 for the baseline's), then ``ANALYZE`` (both engines) so
the planners have statistics. Targets: 50,000 upserts/s on SQLite, 25,000 on PostgreSQL.
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
from pipeline.adapters import storage
from pipeline.adapters.archive_store import index_archive
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
TARGET_COLUMN = f"target met (SQLite {TARGETS['sqlite']:,}/s, PG {TARGETS['postgres']:,}/s)"
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


def baseline_schema(store: Store, path: str, on: bool) -> None:
    """0005's SQLite insert and text triggers, on for the baseline path, off after it."""
    if path != "baseline" or not store.is_sqlite:
        return
    with store.engine.begin() as conn:
        for name, statement in _sqlite_0005_triggers().items():
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
            if on:
                conn.exec_driver_sql(statement)


def run_step(store: Store) -> tuple[float, float, int]:
    """(wall s, CPU s of client and server, items indexed) of ``index_archive``."""
    wall, cpu = time.perf_counter(), time.process_time() + server_cpu(store)
    done = index_archive(store)
    wall = time.perf_counter() - wall
    return wall, time.process_time() + server_cpu(store) - cpu, done


def _migrate_down(store: Store, revision: str) -> None:
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("pipeline.adapters") / "migrations")
    )
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def _prepare(url: str, base: list[Item], sources: list[FeedSource], revision: str) -> Store:
    store = Store(url)
    if revision != "head":  # the baseline's SQLite database as it was: 4 KB pages
        page_size, storage.SQLITE_PAGE_SIZE = storage.SQLITE_PAGE_SIZE, 4096
        try:
            store.upgrade()  # creates the file
        finally:
            storage.SQLITE_PAGE_SIZE = page_size
    store.upgrade()
    store.sync_sources(sources, "cli", NOW)
    prefill = make_batches(range(1, 101), base)
    for start in range(0, len(prefill), GROUP):
        store.store_batches(prefill[start : start + GROUP], NOW)
    index_archive(store)
    if revision != "head":
        _migrate_down(store, revision)
    analyze(store)
    return store


STEP = "index step"
COMBINED = "batched + step"


def bench_engine(engine: str, feeds: int, runs: int, paths: Sequence[str]) -> dict[str, Any]:
    """Paths alternate within each run: the baseline on a database at 0007, the others on
    one at head (each followed by the index step)."""
    base = templates()
    names = [*(s[0] for s in SCENARIOS), "cpu_us"]
    keys = [*paths, STEP, COMBINED] if "batched" in paths else list(paths)
    results: dict[str, dict[str, list[float]]] = {key: {n: [] for n in names} for key in keys}
    results[STEP]["items"] = []
    total_feeds = 100 + runs * len(paths) * feeds
    sources = [FeedSource(url=feed_url(n), title=f"F{n}") for n in range(1, total_feeds + 1)]
    with database(engine) as url_0007, database(engine) as url_head:
        stores = {
            "0007": _prepare(url_0007, base, sources, "0007") if "baseline" in paths else None,
            "head": _prepare(url_head, base, sources, "head"),
        }
        step(f"store {engine}: prefilled 20,000 items per database, ANALYZE done")
        next_feed = 101
        for rep in range(runs):
            for path in paths:
                store = stores["0007" if path == "baseline" else "head"]
                assert store is not None
                feed_ids = list(range(next_feed, next_feed + feeds))
                next_feed += feeds
                n = feeds * PER_FEED
                line = []
                cpu_total = step_cpu = step_items = combined_cpu = 0.0
                for scenario, version, changed_every, fresh_every in SCENARIOS:
                    batches = make_batches(feed_ids, base, version, changed_every, fresh_every)
                    baseline_schema(store, path, True)
                    wall, cpu, counts = run_path(store, path, batches, NOW + timedelta(hours=rep))
                    baseline_schema(store, path, False)
                    _check_counts(scenario, counts)
                    results[path][scenario].append(n / wall)
                    cpu_total += cpu
                    line.append(f"{scenario} {n / wall:,.0f}/s")
                    if path == "baseline":
                        continue
                    s_wall, s_cpu, done = run_step(store)
                    expected = sum(c.new + c.updated for c in counts)
                    if done != expected:
                        raise AssertionError(f"{scenario}: step indexed {done} of {expected}")
                    if path == "batched":
                        if done:
                            results[STEP][scenario].append(done / s_wall)
                        results[COMBINED][scenario].append(n / (wall + s_wall))
                        step_cpu += s_cpu
                        step_items += done
                        combined_cpu += cpu + s_cpu
                        line.append(f"step {done} in {s_wall * 1e3:,.0f} ms")
                results[path]["cpu_us"].append(cpu_total / (len(SCENARIOS) * n) * 1e6)
                if path == "batched":
                    results[STEP]["cpu_us"].append(step_cpu / max(step_items, 1) * 1e6)
                    results[STEP]["items"].append(step_items)
                    results[COMBINED]["cpu_us"].append(combined_cpu / (len(SCENARIOS) * n) * 1e6)
                step(f"store {engine} #{rep + 1} {path}: " + ", ".join(line))
        for store in stores.values():
            if store is not None:
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


SCHEMA = {"baseline": "0007: index in the write", STEP: "0008", COMBINED: "0008"}


def run(
    feeds: int = 40,
    runs: int = 3,
    engines: Sequence[str] = ("sqlite", "postgres"),
    paths: Sequence[str] = ("baseline", "per-feed", "batched"),
) -> dict[str, Any]:
    step(f"store: {feeds} feeds × {PER_FEED} items per scenario, {runs} runs, paths {paths}")
    out: dict[str, Any] = {}
    rows: list[list[object]] = []
    for engine in engines:
        if engine == "postgres" and not postgres_available():
            step("store: PostgreSQL not reachable; skipped")
            continue
        results = bench_engine(engine, feeds, runs, paths)
        out[engine] = results
        baseline = results.get("baseline")
        for path, r in results.items():
            cells: list[object] = [engine, SCHEMA.get(path, "0008: index by the step"), path]
            for scenario in (s[0] for s in SCENARIOS):
                if not r[scenario]:
                    cells.append("(nothing to index)")
                    continue
                ratio = ""
                if baseline and path not in ("baseline", STEP):
                    ratio = f" ×{median(r[scenario]) / median(baseline[scenario]):.1f}"
                cells.append(spread(r[scenario], "{:,.0f}") + ratio)
            cells.append(spread(r["cpu_us"], "{:.1f}"))
            cells.append(f"{1e6 / median(r['cpu_us']):,.0f}")
            met = [s[0] for s in SCENARIOS if r[s[0]] and median(r[s[0]]) >= TARGETS[engine]]
            cells.append("" if path == STEP else ", ".join(met) or "none")
            rows.append(cells)
    summary = table(
        f"Store: item upserts/s (wall), {PER_FEED}-item feed batches, "
        f"batched = {GROUP} feeds per transaction; index step: items indexed/s",
        [
            "engine",
            "schema",
            "path",
            "insert/s",
            "unchanged/s",
            "poll mix/s",
            "update 10%/s",
            "CPU µs/item (client + server; step: per item indexed)",
            "items per CPU-second",
            TARGET_COLUMN,
        ],
        rows,
    )
    return _report(out, summary)


def _report(out: dict[str, Any], summary: str) -> dict[str, Any]:
    print(summary, flush=True)
    out["table"] = summary
    return out


SUSTAINED_PATHS = ("per-feed", "batched")


def sustained(
    feeds: int = 200, runs: int = 3, engines: Sequence[str] = ("sqlite", "postgres")
) -> dict[str, Any]:
    """New items only, many transactions in a row: ``feeds`` × 200 new items stored onto a
    fresh prefilled database (20,000 items, ANALYZE) by each path, each run and path on a
    database of its own, the paths' order alternating between runs. Nothing else runs
    between the transactions (the main mode runs the other scenarios, the index step and
    the baseline's database beside them), so this is what the writer sustains for a cold
    start; the per-feed path (one transaction per feed) is the same-run baseline."""
    base = templates()
    n = feeds * PER_FEED
    out: dict[str, Any] = {}
    rows: list[list[object]] = []
    sources = [FeedSource(url=feed_url(k), title=f"F{k}") for k in range(1, 101 + feeds)]
    batches = make_batches(range(101, 101 + feeds), base)
    for engine in engines:
        if engine == "postgres" and not postgres_available():
            step("store --sustained: PostgreSQL not reachable; skipped")
            continue
        rates: dict[str, list[float]] = {path: [] for path in SUSTAINED_PATHS}
        cpus: dict[str, list[float]] = {path: [] for path in SUSTAINED_PATHS}
        for rep in range(runs):
            order = SUSTAINED_PATHS if rep % 2 == 0 else SUSTAINED_PATHS[::-1]
            for path in order:
                with database(engine) as url:
                    store = _prepare(url, base, sources, "head")
                    wall, cpu, counts = run_path(store, path, batches, NOW)
                    store.close()
                _check_counts("insert", counts)
                rates[path].append(n / wall)
                cpus[path].append(cpu / n * 1e6)
                step(f"store --sustained {engine} #{rep + 1} {path}: {n / wall:,.0f} new items/s")
        out[engine] = {"rates": rates, "cpu_us": cpus}
        for path in SUSTAINED_PATHS:
            ratio = median(rates[path]) / median(rates["per-feed"])
            met = median(rates[path]) >= TARGETS[engine]
            rows.append(
                [
                    engine,
                    path,
                    spread(rates[path], "{:,.0f}")
                    + (f" ×{ratio:.1f}" if path != "per-feed" else ""),
                    spread(cpus[path], "{:.1f}"),
                    f"{1e6 / median(cpus[path]):,.0f}",
                    "yes" if met else "no",
                ]
            )
    summary = table(
        f"Store, sustained: {n:,} new items onto 20,000, {PER_FEED}-item feed batches, "
        f"batched = {GROUP} feeds per transaction, a fresh database per run and path",
        [
            "engine",
            "path",
            "new items/s (wall)",
            "CPU µs/item (client + server)",
            "items per CPU-second",
            TARGET_COLUMN,
        ],
        rows,
    )
    return _report(out, summary)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], action="append")
    parser.add_argument(
        "--sustained",
        action="store_true",
        help="new items only, --feeds × 200 of them per run in a fresh database (try --feeds 200)",
    )
    args = parser.parse_args(argv)
    engines = args.engine or ("sqlite", "postgres")
    if args.sustained:
        sustained(args.feeds, args.runs, engines)
    else:
        run(args.feeds, args.runs, engines)


if __name__ == "__main__":
    main()
