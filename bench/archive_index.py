"""What the archive's search index costs a new item, engine side only (issue 2, migration
0007): the inserts of ``bench/store.py`` without the client, so the designs of the index can
be compared by what the database itself does.

A database migrated by Alembic and prefilled with 20,000 benchmark items (bench.store); then
2,000-item transactions of new items (rows copied from the prefill with new keys), the
variants alternating within each run:

- SQLite (sqlite3 directly, the store's pragmas): "per-row trigger" (0005's insert trigger,
  as before 0007), "per batch" (0007: the store's two statements after the executemany,
  ``storage.index_sqlite_archive``), "no index" (neither); wall and CPU of the executemany
  plus indexing, and of the commit, per item.
- PostgreSQL (``INSERT ... SELECT`` from a staging table: the transaction's wall time and
  the CPU of the backends serving the database, the insert's commit included): "as migrated"
  (the stored generated tsvector column and its GIN index, fastupdate on, 4 MB pending
  list), and the same table with ``fastupdate=off``; with a 64 MB pending list; an
  expression GIN index instead of the stored column; the vector in a side table filled per
  batch; no search index. Each variant is a copy of ``item`` (``LIKE item INCLUDING ALL``)
  holding the same rows (triggers are not copied: 0005's item_theme trigger, one statement
  per INSERT, is left out of every variant). Plus ``to_tsvector`` alone over the prefill's
  texts.

    .venv/bin/python -m bench.archive_index [--runs 5] [--engine sqlite|postgres]
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import store as store_bench
from bench.common import database, postgres_available, spread, step, table
from pipeline.adapters import storage
from pipeline.adapters.storage import Store

BATCH = 2000
COLUMNS = ", ".join(storage._INSERT_COLUMNS)
VECTOR = "to_tsvector('english'::regconfig, title || ' ' || summary_text)"


def prefilled(url: str) -> Store:
    store = Store(url)
    store.upgrade()
    sources = [
        store_bench.FeedSource(url=store_bench.feed_url(n), title=f"F{n}") for n in range(1, 101)
    ]
    store.sync_sources(sources, "cli", store_bench.NOW)
    batches = store_bench.make_batches(range(1, 101), store_bench.templates())
    for start in range(0, len(batches), 10):
        store.store_batches(batches[start : start + 10], store_bench.NOW)
    return store


def _copy_select(key: int) -> str:
    """The prefill's first BATCH rows again, under new keys (uid, guid, link)."""
    return (
        f"SELECT '{key}:' || uid, feed_id, guid_key || ':{key}',"
        f" CASE WHEN link = '' THEN '' ELSE link || '#{key}' END,"
        + ", ".join(storage._INSERT_COLUMNS[4:])
        + f" FROM stage ORDER BY id LIMIT {BATCH}"
    )


def bench_sqlite(runs: int) -> list[list[object]]:
    modes = ("per-row trigger", "per batch", "no index")
    results: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in modes}
    with database("sqlite") as url:
        store = prefilled(url)
        store.close()
        db = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        storage._sqlite_pragmas(db, None)
        db.execute(f"PRAGMA cache_size=-{storage.SQLITE_WRITE_CACHE_KIB}")
        db.execute(f"CREATE TEMP TABLE stage AS SELECT id, {COLUMNS} FROM item")
        db.execute("ANALYZE")
        trigger = store_bench._sqlite_0005_triggers()["item_archive_insert"]
        key = 0
        for rep in range(runs):
            for mode in modes:
                key += 1
                db.execute("DROP TRIGGER IF EXISTS item_archive_insert")
                if mode == "per-row trigger":
                    db.execute(trigger)
                rows = db.execute(_copy_select(key)).fetchall()
                wall0, cpu0 = time.perf_counter(), time.process_time()
                db.execute("BEGIN")
                last = db.execute(storage._SQLITE_LAST_ID).fetchone()[0]
                db.executemany(storage._SQLITE_INSERT, rows)
                if mode == "per batch":
                    for statement in storage._SQLITE_ARCHIVE_INSERTS:
                        db.execute(statement, (last,))
                wall1, cpu1 = time.perf_counter(), time.process_time()
                db.execute("COMMIT")
                wall2, cpu2 = time.perf_counter(), time.process_time()
                n = len(rows) / 1e6
                results[mode].append(
                    ((wall1 - wall0) / n, (cpu1 - cpu0) / n, (wall2 - wall1) / n, (cpu2 - cpu1) / n)
                )
            step(f"archive index sqlite #{rep + 1}")
        db.close()
    rows_out: list[list[object]] = []
    for mode in modes:
        r = results[mode]
        total = [a + c for a, _, c, _ in r]
        cpu = [b + d for _, b, _, d in r]
        rows_out.append(
            [
                "sqlite",
                mode,
                spread([x[0] for x in r], "{:.0f}"),
                spread([x[1] for x in r], "{:.0f}"),
                spread([x[2] for x in r], "{:.0f}"),
                spread([x[3] for x in r], "{:.0f}"),
                spread(total, "{:.0f}"),
                spread(cpu, "{:.0f}"),
            ]
        )
    return rows_out


def bench_postgres(runs: int) -> list[list[object]]:
    variants: dict[str, tuple[list[str], Callable[[str], list[str]]]] = {
        "as migrated (stored column + GIN)": ([], lambda t: []),
        "GIN fastupdate=off": (
            ["ALTER INDEX {t}_search_vector_idx SET (fastupdate = off)"],
            lambda t: [],
        ),
        "GIN pending list 64 MB": (
            ["ALTER INDEX {t}_search_vector_idx SET (gin_pending_list_limit = 65536)"],
            lambda t: [],
        ),
        "expression GIN index": (
            [
                "ALTER TABLE {t} DROP COLUMN search_vector",
                f"CREATE INDEX ON {{t}} USING gin ({VECTOR})",
            ],
            lambda t: [],
        ),
        "side table filled per batch": (
            [
                "ALTER TABLE {t} DROP COLUMN search_vector",
                "CREATE TABLE {t}_sv (item_id integer PRIMARY KEY, v tsvector NOT NULL)",
                "CREATE INDEX ON {t}_sv USING gin (v)",
                f"INSERT INTO {{t}}_sv SELECT id, {VECTOR} FROM {{t}}",
            ],
            lambda t: [f"INSERT INTO {t}_sv SELECT id, {VECTOR} FROM {t} WHERE id > %(last)s"],
        ),
        "no search index": (["ALTER TABLE {t} DROP COLUMN search_vector"], lambda t: []),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    server: dict[str, list[float]] = {name: [] for name in variants}
    tsvector_alone: list[float] = []
    with database("postgres") as url:
        store = prefilled(url)
        raw = store.engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            conn.autocommit = True
            conn.execute(f"CREATE UNLOGGED TABLE stage AS SELECT id, {COLUMNS} FROM item")
            tables = {}
            for n, (name, (setup, _)) in enumerate(variants.items()):
                t = f"item_v{n}"
                tables[name] = t
                conn.execute(f"CREATE TABLE {t} (LIKE item INCLUDING ALL)")
                conn.execute(f"INSERT INTO {t} ({COLUMNS}) SELECT {COLUMNS} FROM item")
                for statement in setup:
                    conn.execute(statement.format(t=t))
            conn.execute("VACUUM ANALYZE")
            key = 0
            for rep in range(runs):
                for name, (_, after) in variants.items():
                    t = tables[name]
                    key += 1
                    cpu0 = store_bench.server_cpu(store)
                    with conn.transaction():
                        started = time.perf_counter()
                        last = conn.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0]
                        insert = f"INSERT INTO {t} ({COLUMNS}) {_copy_select(key)}"
                        conn.execute(insert + " ON CONFLICT DO NOTHING")
                        for statement in after(t):
                            conn.execute(statement, {"last": last})
                    results[name].append((time.perf_counter() - started) / BATCH * 1e6)
                    server[name].append((store_bench.server_cpu(store) - cpu0) / BATCH * 1e6)
                started = time.perf_counter()
                conn.execute(f"SELECT sum(length({VECTOR})) FROM stage").fetchone()
                count = conn.execute("SELECT count(*) FROM stage").fetchone()[0]
                tsvector_alone.append((time.perf_counter() - started) / count * 1e6)
                step(f"archive index postgres #{rep + 1}")
        finally:
            raw.close()
            store.close()
    rows_out: list[list[object]] = [
        ["postgres", name, "", "", "", "", spread(values, "{:.0f}"), spread(server[name], "{:.0f}")]
        for name, values in results.items()
    ]
    rows_out.append(
        [
            "postgres",
            "to_tsvector alone (SELECT)",
            "",
            "",
            "",
            "",
            spread(tsvector_alone, "{:.0f}"),
            "",
        ]
    )
    return rows_out


def run(runs: int = 5, engines: Sequence[str] = ("sqlite", "postgres")) -> str:
    rows: list[list[object]] = []
    for engine in engines:
        if engine == "postgres":
            if not postgres_available():
                step("archive index: PostgreSQL not reachable; skipped")
                continue
            rows += bench_postgres(runs)
        else:
            rows += bench_sqlite(runs)
    summary = table(
        f"Archive index: µs per new item, {BATCH}-item transactions, engine side only",
        [
            "engine",
            "variant",
            "insert + index wall",
            "insert + index CPU",
            "commit wall",
            "commit CPU",
            "total wall",
            "total CPU",
        ],
        rows,
    )
    print(summary, flush=True)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--engine", choices=["sqlite", "postgres"], action="append")
    args = parser.parse_args(argv)
    run(args.runs, args.engine or ("sqlite", "postgres"))


if __name__ == "__main__":
    main()
