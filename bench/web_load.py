"""The web archive under load (issue 5, "Speed"): the archive list, an edition page and a
search at 50 concurrent clients against the production server on 127.0.0.1.

    python -m bench.web_load            # 10,000 editions, 500,000 items, both engines
    python -m bench.web_load --quick    # 1,000 editions, 50,000 items, short runs

What it does, per engine (PostgreSQL on 127.0.0.1:5432 when reachable, and SQLite):

1. seeds a fresh database through the migrations: 40 feeds, N items (about 50 a day, text
   drawn from the words of the bundled demo feeds, so word frequencies look like news) and
   one public daily edition per day, each built by the real digest builder
   (``build_digest`` / ``digest_as_dict``) from that day's items. Items go in with COPY
   (PostgreSQL) or one executemany (SQLite), marked ``archive_pending`` as the store marks
   them, then indexed by the archive's step (``archive_store.index_archive``, migration
   0008), so the archive index is what it would be in production;
2. starts gunicorn (``pipeline.web.wsgi:app``, gthread workers) on 127.0.0.1;
3. runs ``wrk`` (Debian package; the asyncio/aiohttp client below when wrk is absent) with
   50 connections for a fixed time per scenario (``scenarios``): the issue's three
   (``/archive?page=1..100``, the newest 100 editions, ``/archive?q=`` 40 words from common
   to rare), after a short warm-up run, then two cold worst cases with no warm-up (all
   10,000 editions in random order, 20,000 distinct two-word searches), each a page no
   worker has rendered before;
4. prints requests/s, p50/p99 latency, and the CPU the app workers and PostgreSQL spent
   per request, as a Markdown table.

Everything stays on loopback, every run is bounded in time, the database is dropped (or the
temporary directory removed) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from pipeline.editorial import EDITORIAL_ORDER

PROJECT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_DSN = os.environ.get(
    "QASID_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# The newest edition ends here (07:00 in Karachi); each earlier one a day before.
END = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
FEEDS = 40
CONNECTIONS = 50
TARGET_P99_MS = 100.0
_STARTED = time.perf_counter()


def step(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", flush=True)


# -- the corpus -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    words: list[str]
    weights: list[float]  # cumulative, for random.choices


def vocabulary() -> Vocabulary:
    """Words of the bundled demo feeds (real titles and summaries), with their counts."""
    import feedparser

    counts: Counter[str] = Counter()
    folder = resources.files("pipeline.demo_data") / "feeds"
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if not path.name.endswith((".rss", ".atom")):
            continue
        for entry in feedparser.parse(path.read_bytes()).entries:
            text = f"{entry.get('title', '')} {entry.get('summary', '')}"
            text = re.sub(r"<[^>]+>", " ", html.unescape(text))
            counts.update(w for w in re.findall(r"[^\W_]+(?:['’][^\W_]+)?", text) if len(w) > 1)
    words = [w for w, _ in counts.most_common()]
    total = 0.0
    cumulative = []
    for w in words:
        total += counts[w]
        cumulative.append(total)
    return Vocabulary(words, cumulative)


def search_words(vocab: Vocabulary, rng: random.Random) -> list[str]:
    """Search terms from common to rare: ranks 10-50, 100-500, 1000-3000 and beyond."""
    words = [w for w in vocab.words if len(w) > 3 and w.isalpha() and w.isascii()]
    bands = [words[10:50], words[100:500], words[1000:3000], words[3000:]]
    picked: list[str] = []
    for band in bands:
        picked += rng.sample(band, min(10, len(band)))
    return picked


def search_pairs(vocab: Vocabulary, rng: random.Random, count: int) -> list[str]:
    """Distinct two-word queries (words of ranks 100-3000), nearly all with few or no
    matches: every one is new to the page cache, and each costs a full search."""
    words = [w for w in vocab.words[100:3000] if len(w) > 3 and w.isalpha() and w.isascii()]
    pairs: set[str] = set()
    while len(pairs) < count:
        a, b = rng.sample(words, 2)
        pairs.add(f"{a}+{b}")
    return sorted(pairs, key=lambda _: rng.random())


THEMES = EDITORIAL_ORDER  # weighted below, in this order
THEME_WEIGHTS = (9, 3, 3, 8, 6, 6, 7, 5, 10, 3, 3, 6, 3, 2)


@dataclass
class Day:
    index: int
    start: datetime
    end: datetime
    items: list[tuple[Any, ...]]  # rows in ITEM_COLUMNS order
    candidates: list[Any]  # DigestCandidate


ITEM_COLUMNS = (
    "uid",
    "feed_id",
    "guid_key",
    "link",
    "title",
    "summary_html",
    "summary_text",
    "author",
    "language",
    "published_at",
    "published_missing",
    "fetched_at",
    "updated_at",
    "content_hash",
    "relevant",
    "us_link",
    "themes",
    "scores",
    "evidence",
)


def make_day(index: int, per_day: int, vocab: Vocabulary, feed_names: Sequence[str]) -> Day:
    """One day of items (``index`` days before END) as rows and as digest candidates."""
    from pipeline.core.digest import DigestCandidate

    rng = random.Random(index)
    end = END - timedelta(days=index)
    start = end - timedelta(days=1)
    rows: list[tuple[Any, ...]] = []
    candidates = []
    titles = rng.choices(vocab.words, cum_weights=vocab.weights, k=per_day * 10)
    bodies = rng.choices(vocab.words, cum_weights=vocab.weights, k=per_day * 45)
    for n in range(per_day):
        serial = index * per_day + n
        uid = f"{serial:020x}"
        feed_id = 1 + serial % FEEDS
        published = start + timedelta(seconds=rng.randrange(86_400))
        words = titles[n * 10 : n * 10 + rng.randint(6, 10)]
        title = " ".join(words).capitalize()
        summary = " ".join(bodies[n * 45 : n * 45 + rng.randint(25, 45)]) + "."
        relevant = rng.random() < 0.85
        themes = (
            sorted(set(rng.choices(THEMES, weights=THEME_WEIGHTS, k=rng.randint(1, 2))))
            if relevant
            else []
        )
        scores = {t: round(rng.uniform(1.0, 4.0), 2) for t in themes}
        evidence = {t: rng.sample(words, min(2, len(words))) for t in themes}
        us_link = relevant and rng.random() < 0.3
        link = f"https://news{feed_id}.example.com/{start:%Y/%m/%d}/{uid}"
        fetched = published + timedelta(minutes=rng.randint(1, 30))
        rows.append(
            (
                uid,
                feed_id,
                link,
                link,
                title,
                f"<p>{summary}</p>",
                summary,
                "Staff Reporter",
                "en",
                published,
                False,
                fetched,
                fetched,
                uid,
                relevant,
                us_link,
                themes,
                scores,
                evidence,
            )
        )
        candidates.append(
            DigestCandidate(
                id=uid,
                title=title,
                link=link,
                source=feed_names[feed_id - 1],
                published=published,
                summary_text=summary,
                themes=tuple(themes),
                scores=scores,
                evidence=evidence,
                us_link=us_link,
                relevant=relevant,
            )
        )
    return Day(index, start, end, rows, candidates)


def edition_row(day: Day, theme_infos: Sequence[Any], previous: dict[str, int]) -> dict[str, Any]:
    from pipeline.core.digest import DigestRequest, build_digest, digest_as_dict

    request = DigestRequest(
        themes=[t.id for t in theme_infos],
        period_start=day.start,
        period_end=day.end,
        title="qasid daily edition",
        label_date=(day.end + timedelta(hours=5)).date(),
        previous_counts=previous,
    )
    digest = build_digest(day.candidates, request, theme_infos)
    previous.clear()
    previous.update(digest.theme_counts)
    return {
        "kind": "public",
        "subscriber_id": None,
        "frequency": "daily",
        "period_start": day.start,
        "period_end": day.end,
        "local_date": (day.end + timedelta(hours=5)).date().isoformat(),
        "subject": digest.subject,
        "item_count": len(digest.item_ids),
        "content": digest_as_dict(digest),
        "created_at": day.end,
    }


# -- databases ------------------------------------------------------------------------------


@contextmanager
def postgres_database() -> Iterator[str]:
    import psycopg

    name = f"qasid_bench_web_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sqlite_database() -> Iterator[str]:
    folder = Path(tempfile.mkdtemp(prefix="qasid-bench-web-"))
    try:
        yield f"sqlite:///{folder / 'qasid.db'}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN_DSN, connect_timeout=3):
            return True
    except Exception:
        return False


def make_chunk(first: int, last: int, per_day: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """Days ``first`` down to ``last`` (oldest first): their item rows and public editions.
    Runs in a worker process (the digest builder is the slow part of seeding)."""
    from pipeline.editorial import load_theme_infos

    vocab = _vocabulary_cached()
    theme_infos = load_theme_infos(PROJECT)
    feed_names = [f"Outlet {n}" for n in range(1, FEEDS + 1)]
    days = [make_day(i, per_day, vocab, feed_names) for i in range(first, last - 1, -1)]
    previous: dict[str, int] = {}
    editions = [edition_row(day, theme_infos, previous) for day in days]
    return [row for day in days for row in day.items], editions


_VOCABULARY: Vocabulary | None = None


def _vocabulary_cached() -> Vocabulary:
    global _VOCABULARY
    if _VOCABULARY is None:
        _VOCABULARY = vocabulary()
    return _VOCABULARY


def seed(url: str, editions: int, items: int, processes: int = 2) -> dict[str, Any]:
    """Migrate and fill the database; returns what the load phase needs."""
    from concurrent.futures import Future, ProcessPoolExecutor

    from sqlalchemy import text

    from pipeline.adapters.schema import edition, feed
    from pipeline.adapters.storage import Store

    store = Store(url)
    store.upgrade()
    per_day = max(1, items // editions)
    with store.engine.begin() as conn:
        conn.execute(
            feed.insert(),
            [
                {
                    "url": f"https://news{n}.example.com/feed.xml",
                    "title": f"Outlet {n}",
                    "created_at": END - timedelta(days=editions + 1),
                    "status": "ok",
                    "last_checked_at": END,
                }
                for n in range(1, FEEDS + 1)
            ],
        )
    started = time.perf_counter()
    item_seconds = edition_seconds = 0.0
    chunk_days = 100
    chunks = [
        (first, max(0, first - chunk_days + 1))
        for first in range(editions - 1, -1, -chunk_days)  # oldest first, as time passes
    ]
    done = 0
    with ProcessPoolExecutor(processes) as pool:
        pending: list[Future[tuple[list[Any], list[dict[str, Any]]]]] = []
        for n in range(len(chunks) + processes):
            if n < len(chunks):  # keep at most `processes` chunks in flight
                pending.append(pool.submit(make_chunk, *chunks[n], per_day))
            if len(pending) <= processes and n < len(chunks):
                continue
            if not pending:
                break
            item_rows, edition_rows = pending.pop(0).result()
            t0 = time.perf_counter()
            _insert_items(store, item_rows)
            t1 = time.perf_counter()
            with store.engine.begin() as conn:
                conn.execute(edition.insert(), edition_rows)
            t2 = time.perf_counter()
            item_seconds += t1 - t0
            edition_seconds += t2 - t1
            done += len(edition_rows)
            if done % 2000 < chunk_days:
                step(f"  seeded {done:,} days")
    with store.engine.connect() as conn:
        if store.is_sqlite:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
        else:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        size = (
            Path(url[len("sqlite:///") :]).stat().st_size
            if store.is_sqlite
            else conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        )
        ids = conn.execute(text("SELECT min(id), max(id) FROM edition WHERE kind = 'public'")).one()
    store.close()
    return {
        "seconds": time.perf_counter() - started,
        "item_insert_seconds": item_seconds,
        "edition_insert_seconds": edition_seconds,
        "size_mb": size / 2**20,
        "edition_ids": (int(ids[0]), int(ids[1])),
        "words": search_words(_vocabulary_cached(), random.Random(7)),
        "pairs": search_pairs(_vocabulary_cached(), random.Random(8), 20_000),
    }


def _insert_items(store: Any, rows: list[tuple[Any, ...]]) -> None:
    from pipeline.adapters.archive_store import index_archive

    if store.is_sqlite:
        encoded = [
            (
                *row[:9],
                _sqlite_time(row[9]),
                int(row[10]),
                _sqlite_time(row[11]),
                _sqlite_time(row[12]),
                row[13],
                int(row[14]),
                int(row[15]),
                json.dumps(row[16]),
                json.dumps(row[17]),
                json.dumps(row[18]),
            )
            for row in rows
        ]
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                f"INSERT INTO item ({', '.join(ITEM_COLUMNS)}, archive_pending)"
                f" VALUES ({', '.join('?' for _ in ITEM_COLUMNS)}, 1)",
                encoded,
            )
        index_archive(store)  # the archive's step (migration 0008), as after a poll run
        return
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        with cursor.copy(f"COPY item ({', '.join(ITEM_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(
                    (*row[:16], json.dumps(row[16]), json.dumps(row[17]), json.dumps(row[18]))
                )
        raw.commit()
    finally:
        raw.close()
    index_archive(store)  # archive_pending defaults to true on PostgreSQL (migration 0008)


def _sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", timespec="microseconds")


# -- the server -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gunicorn(url: str, workers: int, threads: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        QASID_WEB_SECRET_KEY="bench-secret",
        QASID_WEB_BASE_URL=f"http://127.0.0.1:{port}",
        QASID_MAIL_POSTAL_ADDRESS="1 Bench Street, Lahore",
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "pipeline.web.wsgi:app",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, cwd=PROJECT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        yield base, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /healthz within 30 s")


# -- the load -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    paths: list[str]
    target: bool = True  # part of the target (p99 < 100 ms)


@dataclass
class Result:
    scenario: str
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    client: str
    target: bool = True
    app_cpu_ms: float = 0.0  # CPU of the gunicorn workers per request
    db_cpu_ms: float = 0.0  # CPU of the PostgreSQL server per request (0 on SQLite)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def scenarios(
    edition_ids: tuple[int, int], words: Sequence[str], pairs: Sequence[str]
) -> list[Scenario]:
    """What is measured. The first three are the issue's target: the archive list, an edition
    page (the newest hundred, what readers open from the day's email and the feed) and a
    search (forty words, common to rare). The last two are worst cases: every request a
    page no worker has rendered yet."""
    low, high = edition_ids
    rng = random.Random(11)
    every_edition = list(range(low, high + 1))
    rng.shuffle(every_edition)
    return [
        Scenario("archive list (?page=1..100)", [f"/archive?page={n}" for n in range(1, 101)]),
        Scenario(
            "edition page (newest 100)",
            [f"/editions/{n}" for n in range(max(low, high - 99), high + 1)],
        ),
        Scenario("search (40 words, common to rare)", [f"/archive?q={w}" for w in words]),
        Scenario(
            f"cold: edition pages, all {len(every_edition):,} in random order",
            [f"/editions/{n}" for n in every_edition],
            target=False,
        ),
        Scenario(
            f"cold: searches, {len(pairs):,} distinct two-word queries",
            [f"/archive?q={q}" for q in pairs],
            target=False,
        ),
    ]


_WRK_SCRIPT = """
local paths = {%s}
local made = 0
function setup(thread)
  thread:set("offset", made * 104729)
  made = made + 1
end
function init(args)
  counter = offset or 0
end
function request()
  counter = counter + 1
  return wrk.format("GET", paths[(counter * 7919) %% #paths + 1])
end
function done(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%d %%d %%.1f %%.1f\\n", summary.requests,
    summary.duration, summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, summary.errors.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(base: str, scenario: Scenario, seconds: int, connections: int) -> Result:
    paths = ", ".join(json.dumps(p) for p in scenario.paths)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(_WRK_SCRIPT % paths)
        script = handle.name
    try:
        output = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "5s",
                "-s",
                script,
                base,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    line = next(x for x in output.splitlines() if x.startswith("RESULT "))
    requests, micros, errors, _status, p50, p99 = line.split()[1:]
    return Result(
        scenario.name,
        int(requests),
        int(micros) / 1e6,
        int(errors),
        float(p50) / 1000,
        float(p99) / 1000,
        "wrk",
    )


def run_aiohttp(base: str, scenario: Scenario, seconds: int, connections: int) -> Result:
    """The fallback client: ``connections`` asyncio tasks, each one request at a time."""
    import aiohttp

    async def main() -> Result:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def client(n: int) -> None:
                nonlocal errors
                i = n
                while time.perf_counter() < deadline:
                    path = scenario.paths[(i * 7919) % len(scenario.paths)]
                    i += 1
                    t0 = time.perf_counter()
                    try:
                        async with session.get(base + path) as response:
                            await response.read()
                            if response.status >= 400:
                                errors += 1
                    except aiohttp.ClientError:
                        errors += 1
                    latencies.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*(client(n) for n in range(connections)))
            elapsed = time.perf_counter() - t0
        latencies.sort()
        return Result(
            scenario.name,
            len(latencies),
            elapsed,
            errors,
            statistics.median(latencies) * 1000,
            latencies[int(len(latencies) * 0.99) - 1] * 1000,
            "aiohttp",
        )

    return asyncio.run(main())


def warm(base: str, scenario: Scenario, limit: int = 200) -> None:
    """A few sequential requests first (imports, template compilation, connection pool)."""
    import urllib.request

    for path in scenario.paths[:limit]:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}")
            response.read()


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children (gunicorn's workers)."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


def postgres_cpu(database: str) -> float:
    """CPU seconds of the PostgreSQL backends serving ``database`` (their process titles
    name it), so other databases on the server are not counted."""
    import psutil

    if not database:
        return 0.0
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or [])
            if proc.info["name"] == "postgres" and f" {database} " in f"{title} ":
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


# -- report ---------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        for text_line in Path("/proc/cpuinfo").read_text().splitlines():
            if text_line.startswith("model name"):
                model = text_line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{os.cpu_count()} CPUs ({model}){memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def table(rows: Sequence[tuple[str, Result]]) -> str:
    lines = [
        "| engine | scenario | requests | req/s | p50 ms | p99 ms | errors"
        " | app CPU ms/req | PostgreSQL CPU ms/req | p99 < 100 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for engine, r in rows:
        verdict = "yes" if r.p99_ms < TARGET_P99_MS and not r.errors else "no"
        lines.append(
            f"| {engine} | {r.scenario} | {r.requests:,} | {r.rps:,.0f} | {r.p50_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.errors} | {r.app_cpu_ms:.2f} "
            f"| {r.db_cpu_ms:.2f} | {verdict if r.target else f'({verdict}, worst case)'} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 editions, 50,000 items")
    parser.add_argument("--engine", choices=("both", "postgres", "sqlite"), default="both")
    parser.add_argument("--seconds", type=int, default=None, help="per scenario (default 20)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--client", choices=("auto", "wrk", "aiohttp"), default="auto")
    args = parser.parse_args(argv)
    editions, items = (1_000, 50_000) if args.quick else (10_000, 500_000)
    seconds = args.seconds or (5 if args.quick else 20)
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "aiohttp"
    run = run_wrk if client == "wrk" else run_aiohttp
    engines = ["postgres", "sqlite"] if args.engine == "both" else [args.engine]
    if "postgres" in engines and not postgres_available():
        step(f"PostgreSQL not reachable at {POSTGRES_ADMIN_DSN}: skipped")
        engines.remove("postgres")
    step(f"machine: {machine()}")
    results: list[tuple[str, Result]] = []
    seeding: dict[str, dict[str, Any]] = {}
    for engine in engines:
        database = postgres_database() if engine == "postgres" else sqlite_database()
        with database as url:
            step(f"{engine}: seeding {editions:,} editions and {items:,} items")
            info = seed(url, editions, items)
            seeding[engine] = info
            step(
                f"{engine}: seeded in {info['seconds']:.0f} s (inserting items "
                f"{info['item_insert_seconds']:.0f} s, editions "
                f"{info['edition_insert_seconds']:.0f} s), {info['size_mb']:.0f} MB"
            )
            database_name = url.rsplit("/", 1)[-1] if engine == "postgres" else ""
            with gunicorn(url, args.workers, args.threads) as (base, pid):
                for scenario in scenarios(info["edition_ids"], info["words"], info["pairs"]):
                    warm(base, scenario, 3)  # the pages answer 200 (else stop here)
                    if scenario.target:  # a short run first: every worker has its pages
                        run(base, scenario, max(2, seconds // 5), args.connections)
                    cpu0, db0 = tree_cpu(pid), postgres_cpu(database_name)
                    result = run(base, scenario, seconds, args.connections)
                    requests = max(1, result.requests)
                    result.app_cpu_ms = (tree_cpu(pid) - cpu0) * 1000 / requests
                    result.db_cpu_ms = (postgres_cpu(database_name) - db0) * 1000 / requests
                    result.target = scenario.target
                    step(
                        f"{engine}: {result.scenario}: {result.rps:,.0f} req/s, p50 "
                        f"{result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
                        f"{result.errors} errors, {result.app_cpu_ms:.2f} + "
                        f"{result.db_cpu_ms:.2f} ms CPU per request; load "
                        f"{os.getloadavg()[0]:.1f}"
                    )
                    results.append((engine, result))
    print()
    print(
        f"{editions:,} public editions, {items:,} items; gunicorn {args.workers} workers x "
        f"{args.threads} threads (gthread); {client}, {args.connections} connections, "
        f"{seconds} s per scenario; {machine()}"
    )
    print()
    print(table(results))
    met = all(r.p99_ms < TARGET_P99_MS and r.errors == 0 for _, r in results if r.target)
    print()
    print(f"target p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
