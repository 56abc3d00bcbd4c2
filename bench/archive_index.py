"""What the archive's search index costs a new item, engine side only (issue 2, migrations
0007 and 0008): the inserts of ``bench/store.py`` without the client, so the designs of the
index can be compared by what the database itself does.

A database migrated by Alembic and prefilled with 20,000 benchmark items (bench.store); then
2,000-item transactions of new items (rows copied from the prefill with new keys), the
variants alternating within each run; µs per new item:

- SQLite (sqlite3 directly, the store's pragmas; the database's FTS5 table is 0008's, with
  its own copy of the text, for every variant): "per-row trigger" (0005's insert trigger,
  as before 0007), "per batch in the write" (0007's two statements after the executemany),
  "write only" (0008: no index work in the write), and "0008 step" (the index step's
  statements over the batch just written, ``archive_store.index_archive``, in its own
  transaction after the write, commit included); wall and CPU of the executemany plus
  indexing, and of the commit.
- PostgreSQL (``INSERT ... SELECT`` from a staging table: the transaction's wall time and
  the CPU of the backends serving the database, the commit included), each variant a copy
  of ``item`` (``LIKE item INCLUDING ALL``, 0008's toast_tuple_target; triggers and foreign
  keys are not copied): "0007: stored generated column + GIN" (the index in the write);
  "0008: write only" (the plain column, its GIN index and the pending index: no index work
  in the write); "0008 step: UPDATE column" (the step's UPDATE of the vector and the flag
  over the batch just written, its own transaction); "side table by the step" (the vector
  in a table of its own, filled after the write, plus clearing the flag); "no search
  index". Plus ``to_tsvector`` alone over the prefill's texts.

    .venv/bin/python -m bench.archive_index [--runs 5] [--engine sqlite|postgres]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import store as store_bench
from bench.common import database, postgres_available, spread, step, table
from pipeline.adapters import archive_store, storage
from pipeline.adapters.storage import Store

BATCH = 2000
PG_TOAST_TUPLE_TARGET = 8160  # migration 0008
COLUMNS = ", ".join(storage._INSERT_COLUMNS)
VECTOR = "to_tsvector('english'::regconfig, title || ' ' || summary_text)"
# Migration 0007's per-batch index statements (the store's, in the write, before 0008).
SQLITE_0007 = (
    "INSERT INTO item_fts (rowid, title, summary_text)"
    " SELECT id, title, summary_text FROM item WHERE id > ?",
    "INSERT OR IGNORE INTO item_theme (item_id, theme, published_at)"
    " SELECT item.id, t.value, item.published_at FROM item, json_each(CASE WHEN"
    " json_type(item.themes) = 'array' THEN item.themes ELSE '[]' END) AS t WHERE item.id > ?",
)


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
        + ", ".join(
            "true" if name == "archive_pending" else name for name in storage._INSERT_COLUMNS[4:]
        )
        + f" FROM stage ORDER BY id LIMIT {BATCH}"
    )


def bench_sqlite(runs: int) -> list[list[object]]:
    modes = ("per-row trigger", "per batch in the write", "write only", "0008 step")
    results: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in modes}
    with database("sqlite") as url:
        store = prefilled(url)
        archive_store.index_archive(store)
        store.close()
        db = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        storage._sqlite_pragmas(db, None)
        db.execute(f"PRAGMA cache_size=-{storage.SQLITE_WRITE_CACHE_KIB}")
        db.execute(f"CREATE TEMP TABLE stage AS SELECT id, {COLUMNS} FROM item")
        db.execute("ANALYZE")
        trigger = store_bench._sqlite_0005_triggers()["item_archive_insert"]
        key = 0

        def timed(work: Callable[[], None]) -> tuple[float, float, float, float]:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            db.execute("BEGIN")
            work()
            wall1, cpu1 = time.perf_counter(), time.process_time()
            db.execute("COMMIT")
            wall2, cpu2 = time.perf_counter(), time.process_time()
            n = BATCH / 1e6
            return (wall1 - wall0) / n, (cpu1 - cpu0) / n, (wall2 - wall1) / n, (cpu2 - cpu1) / n

        for rep in range(runs):
            for mode in modes[:3]:
                key += 1
                db.execute("DROP TRIGGER IF EXISTS item_archive_insert")
                if mode == "per-row trigger":
                    db.execute(trigger)
                rows = db.execute(_copy_select(key)).fetchall()
                last = db.execute("SELECT coalesce(max(id), 0) FROM item").fetchone()[0]

                def write(rows: list[Any] = rows, mode: str = mode, last: int = last) -> None:
                    db.executemany(storage._SQLITE_INSERT, rows)
                    if mode == "per batch in the write":
                        for statement in SQLITE_0007:
                            db.execute(statement, (last,))

                results[mode].append(timed(write))
                db.execute("DROP TRIGGER IF EXISTS item_archive_insert")
                if mode != "write only":  # indexed already: not pending
                    db.execute("UPDATE item SET archive_pending = NULL WHERE id > ?", (last,))
                    continue

                def index() -> None:
                    ids = [r[0] for r in db.execute(archive_store._SQLITE_PENDING, (BATCH,))]
                    db.executemany(archive_store._SQLITE_UNINDEX, [(i,) for i in ids])
                    param = (json.dumps(ids),)
                    for statement in archive_store._SQLITE_INDEX:
                        db.execute(statement, param)

                results["0008 step"].append(timed(index))
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
    target = f"ALTER TABLE {{t}} SET (toast_tuple_target = {PG_TOAST_TUPLE_TARGET})"
    # name: (setup, statements after the write in its transaction, the step's statements)
    variants: dict[str, tuple[list[str], list[str], list[str]]] = {
        "0007: stored generated column + GIN": (
            [
                "DROP INDEX {t}_id_idx",  # 0008's pending index
                "ALTER TABLE {t} DROP COLUMN archive_pending",
                "ALTER TABLE {t} DROP COLUMN search_vector",
                f"ALTER TABLE {{t}} ADD COLUMN search_vector tsvector"
                f" GENERATED ALWAYS AS ({VECTOR}) STORED",
                "CREATE INDEX ON {t} USING gin (search_vector)",
            ],
            [],
            [],
        ),
        "0008: write only, then the step's UPDATE": (
            [target],
            [],
            [
                f"UPDATE {{t}} SET archive_pending = NULL, search_vector = {VECTOR}"
                " WHERE archive_pending"
            ],
        ),
        "side table filled by the step": (
            [
                target,
                "ALTER TABLE {t} DROP COLUMN search_vector",
                "CREATE TABLE {t}_sv (item_id integer PRIMARY KEY, v tsvector NOT NULL)",
                "CREATE INDEX ON {t}_sv USING gin (v)",
                f"INSERT INTO {{t}}_sv SELECT id, {VECTOR} FROM {{t}}",
            ],
            [],
            [
                f"INSERT INTO {{t}}_sv SELECT id, {VECTOR} FROM {{t}} WHERE archive_pending",
                "UPDATE {t} SET archive_pending = NULL WHERE archive_pending",
            ],
        ),
        "no search index": ([target, "ALTER TABLE {t} DROP COLUMN search_vector"], [], []),
    }
    write: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    index: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    tsvector_alone: list[float] = []
    with database("postgres") as url:
        store = prefilled(url)
        archive_store.index_archive(store)
        raw = store.engine.raw_connection()
        try:
            conn: Any = raw.driver_connection
            conn.autocommit = True
            conn.execute(f"CREATE UNLOGGED TABLE stage AS SELECT id, {COLUMNS} FROM item")
            tables = {}
            for n, (name, (setup, _, _)) in enumerate(variants.items()):
                t = f"item_v{n}"
                tables[name] = t
                conn.execute(f"CREATE TABLE {t} (LIKE item INCLUDING ALL)")
                for statement in setup:
                    conn.execute(statement.format(t=t))
                columns = COLUMNS.replace(", archive_pending", "") if n == 0 else COLUMNS
                conn.execute(f"INSERT INTO {t} ({columns}) SELECT {columns} FROM item")
            conn.execute("VACUUM ANALYZE")

            def timed(statements: list[str]) -> tuple[float, float]:
                cpu0 = store_bench.server_cpu(store)
                started = time.perf_counter()
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement)
                return (
                    (time.perf_counter() - started) / BATCH * 1e6,
                    (store_bench.server_cpu(store) - cpu0) / BATCH * 1e6,
                )

            key = 0
            for rep in range(runs):
                for n, (name, (_, after, step_statements)) in enumerate(variants.items()):
                    t = tables[name]
                    key += 1
                    select = _copy_select(key)
                    columns = COLUMNS
                    if n == 0:  # 0007 has no archive_pending
                        columns = COLUMNS.replace(", archive_pending", "")
                        select = select.replace(", true FROM stage", " FROM stage")
                    insert = f"INSERT INTO {t} ({columns}) {select} ON CONFLICT DO NOTHING"
                    write[name].append(timed([insert, *(s.format(t=t) for s in after)]))
                    if step_statements:
                        index[name].append(timed([s.format(t=t) for s in step_statements]))
                started = time.perf_counter()
                conn.execute(f"SELECT sum(length({VECTOR})) FROM stage").fetchone()
                count = conn.execute("SELECT count(*) FROM stage").fetchone()[0]
                tsvector_alone.append((time.perf_counter() - started) / count * 1e6)
                step(f"archive index postgres #{rep + 1}")
        finally:
            raw.close()
            store.close()
    rows_out: list[list[object]] = []
    for name in variants:
        parts = [(" (write)" if index[name] else "", write[name])]
        if index[name]:
            parts.append((" (step)", index[name]))
        for suffix, runs in parts:
            rows_out.append(
                [
                    "postgres",
                    name + suffix,
                    "",
                    "",
                    "",
                    "",
                    spread([x[0] for x in runs], "{:.0f}"),
                    spread([x[1] for x in runs], "{:.0f}"),
                ]
            )
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
