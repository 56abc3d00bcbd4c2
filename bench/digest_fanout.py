"""Personal digests for many readers (issue 4, "Speed"): select, rank, cluster, render, queue.

    python -m bench.digest_fanout                  # 100,000 readers, 20,000 items, SQLite
    python -m bench.digest_fanout --quick          # 10,000 readers, 4,000 items
    python -m bench.digest_fanout --engine postgres --subscribers 20000
    python -m bench.digest_fanout --send-workers 1  # the send queue on one process
    python -m bench.digest_fanout --children 3 --against /tmp/base  # A/B, one seeding

Workload (fixed seed): the items and the readers' 5 watchlists each come from
``bench.watchlist_fanout.make_workload`` (Zipf-shared terms and queries). Each item is
tagged like the tagger would: 35% relevant, one or two of the configured themes (popular
themes more often), scores, evidence words from its title, US involvement for 30%, one of
60 outlets, published within the day; one item in ten retells an earlier story under
another outlet (clusters with "also"). Readers choose 2 to 5 themes (popular ones more
often) and live in Karachi (17:00), London (12:00) or New York (07:00): all are due for the
same day, which ends at 12:00 UTC, and see times in their own zone.

Measured in a fresh process per engine (so VmHWM is that run's peak), on a migrated
database seeded beforehand by a process of its own that ends before the measured one starts
(``seed_in_child``: the seeding's leftover heap slowed the measured process):

1. **build**: ``delivery.build_due_digests`` (select, rank, cluster, store each edition and
   queue its delivery row), on every core (``[digest] build_workers`` = 0: forked helpers;
   CPU time counts theirs; peak memory is the sampled peak of the job's and its helpers'
   summed PSS, which counts a page they share once);
2. **render**: ``drain_queue`` to a mailer that accepts every email at once (the provider's
   stand-in): claim the queued rows (1,000 a batch), read each batch's editions and readers,
   ``compose`` each email (pieces rendered once per process: ``DigestAssembler``), on every
   core (``[digest] send_workers`` = 0: forked helpers claim, compose and send batches
   too, each to its own copy of the mailer), and record them sent in the ledger;
3. **naive**: ``compose`` with the full path (``EmailRenderer.digest``: Jinja2 render and
   CSS inlining per email) on a sample of the same rows; the same emails are checked equal.
   Its time per email, times the number of emails, is the naive path's render.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import database, machine, median, postgres_available, spread, step, table

ROOT = Path(__file__).resolve().parents[1]
SEED = 20250404
DAY_END = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NOW = DAY_END + timedelta(minutes=5)
ZONES = [("Asia/Karachi", 17), ("Europe/London", 12), ("America/New_York", 7)]
OUTLETS = [f"Outlet {n}" for n in range(60)]


def settings_env(url: str, folder: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "QASID_FEEDS_FILE": str(folder / "no-feeds.toml"),
        "QASID_WORKER_NAME": "bench-worker",
        "QASID_MAIL_POSTAL_ADDRESS": "1 Bench Street, Lahore",
        "QASID_MAIL_FROM_ADDRESS": "qasid <digest@qasid.test>",
        "QASID_MAIL_OUTBOX_DIR": str(folder / "outbox"),
        "QASID_DIGEST_WATCHLIST_CACHE": str(folder / "watchlist-engine.pickle"),
        "QASID_WEB_SECRET_KEY": "bench-secret",
        "QASID_WEB_BASE_URL": "https://qasid.example",
        "QASID_DIGEST_SEND_BATCH": "1000",  # rows claimed and composed a batch
        # --send-workers: the send queue's processes (default: one per core)
        "QASID_DIGEST_SEND_WORKERS": os.environ.get("BENCH_SEND_WORKERS", "0"),
    }


def make_app(url: str, folder: Path) -> Any:
    from pipeline.bootstrap import build_app
    from pipeline.settings import load_settings

    config = folder / "qasid.toml"
    config.write_text("", encoding="utf-8")
    settings = load_settings(config, environ=settings_env(url, folder))
    return build_app(settings, clock=lambda: NOW)


# -- seeding (not measured) ----------------------------------------------------------------


def seed(app: Any, subscribers: int, n_items: int) -> dict[str, Any]:
    from sqlalchemy import insert

    from bench.watchlist_fanout import make_workload
    from pipeline.adapters.schema import feed, item, subscriber, watchlist
    from pipeline.editorial import load_theme_infos

    work = make_workload(subscribers, 5, 50_000, n_items)
    rng = random.Random(SEED)
    themes = [t.id for t in load_theme_infos(ROOT)]
    weights = [1 / (rank + 1) for rank in range(len(themes))]
    started = time.perf_counter()
    with app.store._begin() as conn:
        conn.execute(
            insert(feed),
            [
                {"url": f"https://o{n}.example/feed", "title": name, "created_at": NOW}
                for n, name in enumerate(OUTLETS)
            ],
        )
        rows = []
        for n, title, body in work.items:
            if n and rng.random() < 0.1:  # another outlet retells an earlier story
                _, title, body = work.items[rng.randrange(n)]
            relevant = rng.random() < 0.35
            tagged = sorted(set(rng.choices(themes, weights, k=rng.choice((1, 1, 2)))))
            words = [w for w in title.split() if len(w) > 3] or [title]
            published = DAY_END - timedelta(seconds=rng.randrange(1, 86_400))
            rows.append(
                {
                    "uid": f"{n:032x}",
                    "feed_id": rng.randrange(len(OUTLETS)) + 1,
                    "guid_key": f"g{n}",
                    "link": f"https://news{n % 60}.example/{n}",
                    "title": title,
                    "summary_html": f"<p>{body}</p>",
                    "summary_text": body,
                    "language": "en",
                    "published_at": published,
                    "fetched_at": published,
                    "updated_at": published,
                    "relevant": relevant,
                    "us_link": rng.random() < 0.3,
                    "themes": tagged if relevant else [],
                    "scores": {t: round(rng.uniform(2, 12), 2) for t in tagged},
                    "evidence": {t: rng.sample(words, min(2, len(words))) for t in tagged},
                }
            )
        for start in range(0, len(rows), 2000):
            conn.execute(insert(item), rows[start : start + 2000])
        people = []
        for n in range(subscribers):
            zone, hour = ZONES[n % len(ZONES)]
            chosen = sorted(set(rng.choices(themes, weights, k=rng.randint(2, 5))))
            people.append(
                {
                    "id": n + 1,
                    "email": f"reader{n}@bench.example",
                    "status": "active",
                    "themes": chosen,
                    "frequency": "daily",
                    "hour": hour,
                    "timezone": zone,
                    "created_at": NOW - timedelta(days=30),
                    "updated_at": NOW - timedelta(days=30),
                    "confirmed_at": NOW - timedelta(days=30),
                }
            )
        for start in range(0, len(people), 5000):
            conn.execute(insert(subscriber), people[start : start + 5000])
        lists = [
            {
                "subscriber_id": index // work.per_subscriber + 1,
                "query": query,
                "created_at": NOW - timedelta(days=30),
            }
            for index, query in enumerate(work.queries)
        ]
        # A reader's duplicate query would break the unique index: keep the first.
        seen: set[tuple[int, str]] = set()
        unique = []
        for row in lists:
            key = (row["subscriber_id"], row["query"])
            if key not in seen:
                seen.add(key)
                unique.append(row)
        for start in range(0, len(unique), 10_000):
            conn.execute(insert(watchlist), unique[start : start + 10_000])
    return {
        "items": len(rows),
        "subscribers": subscribers,
        "watchlists": len(unique),
        "workload s": round(work.seconds, 1),
        "seeding s": round(time.perf_counter() - started, 1),
    }


def warm_watchlist_cache(app: Any) -> float:
    """What yesterday's job left: the compiled watchlist engine in the cache file
    (``[digest] watchlist_cache``), built from the seeded watchlists. Not measured; the
    measured build loads it and applies the (here: no) changes. Returns its seconds."""
    from sqlalchemy import select

    from pipeline.adapters import watchlist_cache
    from pipeline.adapters.schema import watchlist
    from pipeline.rules import load_aliases

    started = time.perf_counter()
    with app.store.engine.connect() as conn:
        queries = dict(conn.execute(select(watchlist.c.id, watchlist.c.query)).all())
    aliases_path = ROOT / "config" / "aliases.toml"
    path = app.settings.path(app.settings.digest.watchlist_cache)
    watchlist_cache.load_index(path, queries, load_aliases(aliases_path), aliases_path)
    return round(time.perf_counter() - started, 1)


# -- the measured process ------------------------------------------------------------------


def cpu_seconds() -> float:
    """This process's CPU time and that of its ended children (the build's helpers)."""
    usage = os.times()
    return usage.user + usage.system + usage.children_user + usage.children_system


def status_mib(field: str) -> float:
    """A memory field of this process's /proc status (VmHWM: its peak; VmRSS: now)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


class TreeMemory(threading.Thread):
    """The peak of the memory of this process and its children (the build's forked
    helpers) together, sampled every second (reading a 2 GB process's smaps_rollup costs
    CPU): the sum of their PSS (proportional set size: a page shared by n processes counts
    1/n in each), so pages a helper shares copy-on-write are counted once. Linux only."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mib = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(1.0):
            self.peak_mib = max(self.peak_mib, tree_pss_mib(os.getpid()))

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak_mib


def tree_pss_mib(pid: int) -> float:
    total_kib = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total_kib += int(line.split()[1])
                        break
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    pending += [int(child) for child in handle.read().split()]
        except (OSError, ValueError):  # ended meanwhile
            continue
    return total_kib / 1024


class AcceptingMailer:
    """The provider's stand-in for the send path: accepts every email at once, keeps the
    sizes and the first ``keep`` emails (the naive path renders those again)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.sizes: list[int] = []
        self.picked: list[Any] = []

    def send(self, email: Any) -> Any:
        return self.send_batch([email])[0]

    def send_batch(self, emails: Any) -> list[Any]:
        from pipeline.core.mail import SendOutcome, SendResult

        for email in emails:
            self.sizes.append(len(email.html))
            if len(self.picked) < self.keep:
                self.picked.append(email)
        return [
            SendResult(e.delivery_id, SendOutcome.SENT, f"bench-{e.delivery_id}") for e in emails
        ]

    def tags(self, fresh: dict[str, str]) -> dict[str, str]:
        """The substitution tags of the sent emails (``%%{nonce}{name}%%``, the nonce random
        per job) in place of ``fresh``: the naive path uses them, so its emails compare."""
        sent = next(iter(self.picked[0].substitutions)) if self.picked else ""
        nonce = re.sub(r"^%%([0-9a-f]+?)(reason|manage|unsubscribe|view)%%$", r"\1", sent)
        return {name: f"%%{nonce}{name}%%" for name in fresh}

    def close(self) -> None:
        pass


def child(url: str, folder: Path, naive_sample: int) -> dict[str, Any]:
    import logging

    from sqlalchemy import select

    from pipeline import delivery
    from pipeline.adapters.delivery_store import DeliveryStore, _delivery_row
    from pipeline.adapters.forked import available_cores
    from pipeline.adapters.render import EmailRenderer
    from pipeline.adapters.schema import delivery as delivery_table
    from pipeline.adapters.subscriber_store import SubscriberStore
    from pipeline.core.collector import gc_paused

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    logging.getLogger("pipeline.delivery").setLevel(logging.INFO)  # the build's steps
    app = make_app(url, folder)
    out: dict[str, Any] = {}
    memory = TreeMemory()
    memory.start()
    wall, cpu = time.perf_counter(), cpu_seconds()
    summary = delivery.build_due_digests(app, NOW)
    out["build"] = (time.perf_counter() - wall, cpu_seconds() - cpu)
    out["built"], out["empty"] = summary.built, summary.empty
    out["processes"], out["helper MiB"] = summary.processes, summary.helper_private_mib

    ledger = DeliveryStore(app.store)
    people = SubscriberStore(app.store)
    mailer = AcceptingMailer(naive_sample)
    wall, cpu = time.perf_counter(), cpu_seconds()
    sent = delivery.drain_queue(app, mailer, now=NOW)
    out["render"] = (time.perf_counter() - wall, cpu_seconds() - cpu)
    assert not (sent.failed or sent.suppressed or sent.retried), sent.line()
    out["send processes"] = app.settings.digest.send_workers or available_cores()
    # each process sends its own batches: the sizes are those of the emails this one sent
    # (its first batch and its share of the rest), the count is the ledger's
    rendered, sizes, html_bytes = sent.sent, sorted(mailer.sizes), sum(mailer.sizes)
    # The naive path's inputs for the sampled rows, read after the timing.
    with app.store.engine.connect() as conn:
        ids = [int(email.delivery_id) for email in mailer.picked]
        found = conn.execute(select(delivery_table).where(delivery_table.c.id.in_(ids)))
        rows = {row.id: _delivery_row(row._mapping) for row in found}
    picked = [(rows[int(email.delivery_id)], email) for email in mailer.picked]
    readers = people.by_ids(sorted({row.subscriber_id for row, _ in picked}))
    editions = ledger.get_editions(sorted({row.edition_id for row, _ in picked if row.edition_id}))
    sample = [(row, readers[row.subscriber_id], editions, email) for row, email in picked]
    out["rendered"] = rendered
    out["mean html KB"] = html_bytes / max(len(sizes), 1) / 1024
    out["html KB p50/p99/max"] = [
        round(sizes[int(len(sizes) * q)] / 1024) for q in (0.5, 0.99) if sizes
    ] + [round(sizes[-1] / 1024) if sizes else 0]
    # The whole job's peak (PSS of this process and its helpers, sampled), and an upper
    # bound: this process's own peak plus the most a helper held of its own at its end.
    out["peak MiB"] = memory.stop()
    out["peak bound MiB"] = status_mib("VmHWM") + out["helper MiB"]

    class Naive:  # the full path in place of the assembler
        def __init__(self, renderer: Any) -> None:
            self.digest = renderer.digest

        def prepare(self, *_: Any) -> int:
            return 0

        def release(self) -> None:
            pass

    editorial = delivery.load_editorial(app, ())  # as drain_queue does
    editorial.tags = mailer.tags(editorial.tags)  # the tags the sent emails carry
    editorial.renderer = EmailRenderer(
        ROOT / "templates", editorial.renderer.site, frozenset(editorial.tags.values())
    )
    editorial.assembler = Naive(editorial.renderer)  # type: ignore[assignment]
    wall, cpu = time.perf_counter(), cpu_seconds()
    with gc_paused():  # the same collector setting as the fast path
        naive = [delivery.compose(app, editorial, r, s, e) for r, s, e, _ in sample]
    out["naive"] = (time.perf_counter() - wall, cpu_seconds() - cpu)
    out["naive n"] = len(sample)
    out["equal"] = all(
        a is not None and (a.html, a.text) == (b.html, b.text)
        for a, (_, _, _, b) in zip(naive, sample, strict=True)
    )
    app.close()
    return out


def cluster_only(n_items: int, runs: int) -> list[float]:
    """CPU seconds of clustering the day's items once (``day_stories``), per run."""
    from pipeline.core.digest import day_stories
    from pipeline.delivery import to_candidate
    from pipeline.editorial import load_theme_infos

    themes = [t.id for t in load_theme_infos(ROOT)]
    with database("sqlite") as url, tempfile.TemporaryDirectory() as folder:
        app = make_app(url, Path(folder))
        app.store.upgrade()
        seed(app, 10, n_items)
        items = app.store.items_between(DAY_END - timedelta(days=1), DAY_END)
        app.close()
    candidates = [to_candidate(item) for item in items]
    seconds = []
    for _ in range(runs):
        cpu = cpu_seconds()
        stories = day_stories(candidates, themes, DAY_END - timedelta(days=1), DAY_END)
        seconds.append(cpu_seconds() - cpu)
        step(
            f"day_stories: {len(candidates):,} items -> {len(stories.members):,} stories, "
            f"{seconds[-1]:.1f} s CPU"
        )
    return seconds


# The issue's own figures for a 30-item digest on the machine it was written on: Jinja2
# about 1.2 ms, css-inline about 1.4 ms. The same two steps timed here say how this machine
# compares (these VMs' speed differs up to threefold between sessions).
ISSUE_JINJA_MS, ISSUE_INLINE_MS = 1.2, 1.4


def yardstick(runs: int = 200) -> dict[str, float]:
    """Median ms of a 30-item digest's Jinja2 render (HTML part) and of its CSS inlining."""
    from jinja2 import Environment

    from pipeline.adapters.render import (
        EmailRenderer,
        Recipient,
        SiteInfo,
        _safe_url_text,
        build_environment,
    )
    from pipeline.core.digest import (
        DigestCandidate,
        DigestRequest,
        build_digest,
        digest_as_dict,
    )
    from pipeline.editorial import load_theme_infos

    infos = load_theme_infos(ROOT)
    rng = random.Random(SEED)
    words = "Pakistan IMF loan talks border army court election trade corridor".split()
    candidates = [
        DigestCandidate(
            id=f"y{n}",
            title=" ".join(f"{w}{n}" for w in rng.sample(words, 6)),  # no two alike
            link=f"https://news.example/{n}",
            source=OUTLETS[n % len(OUTLETS)],
            published=DAY_END - timedelta(minutes=30 * n + 1),
            summary_text=" ".join(f"{w}{n}" for w in rng.choices(words, k=45)) + ".",
            themes=(infos[n % 3].id,),
            scores={infos[n % 3].id: 3.0 + n % 5},
            evidence={infos[n % 3].id: [words[n % len(words)]]},
            us_link=n % 3 == 0,
            relevant=True,
        )
        for n in range(30)
    ]
    request = DigestRequest(
        themes=[t.id for t in infos[:3]],
        period_start=DAY_END - timedelta(days=1),
        period_end=DAY_END,
        max_per_section=10,
    )
    digest = digest_as_dict(build_digest(candidates, request, infos))
    shown = len(digest["top"]) + sum(len(s["entries"]) for s in digest["sections"])  # type: ignore[union-attr, misc]
    assert shown == 30, shown
    site = SiteInfo("qasid", "https://qasid.example", "https://qasid.example/archive", "1 St")
    reader = Recipient("why", "https://q.example/m", "https://q.example/u", "https://q.example/v")
    renderer = EmailRenderer(ROOT / "templates", site)
    # Plain Jinja2 as the issue measured it, with the renderer's options and filters: the
    # renderer's own environment reads dict fields faster and remembers checked links
    # (nineteenth session), which would move the yardstick with the code.
    plain = build_environment(ROOT / "templates", environment=Environment)
    plain.filters["safe_url"] = lambda value: (
        _safe_url_text.__wrapped__(value) if isinstance(value, str) else ""
    )
    template = plain.get_template("email/digest.html")
    context = renderer.digest_context(digest, reader, "Daily digest")
    html = template.render(context)
    jinja, inline = [], []
    for _ in range(runs):
        started = time.perf_counter()
        template.render(context)
        jinja.append(time.perf_counter() - started)
        started = time.perf_counter()
        renderer.inliner.inline(html)
        inline.append(time.perf_counter() - started)
    jinja_ms, inline_ms = median(jinja) * 1000, median(inline) * 1000
    return {
        "jinja ms": jinja_ms,
        "inline ms": inline_ms,
        "x issue": (jinja_ms + inline_ms) / (ISSUE_JINJA_MS + ISSUE_INLINE_MS),
    }


def seed_in(url: str, folder: Path, subscribers: int, n_items: int) -> dict[str, Any]:
    app = make_app(url, folder)
    app.store.upgrade()
    notes = seed(app, subscribers, n_items)
    notes["engine cache s"] = warm_watchlist_cache(app)
    app.close()
    return notes


def seed_in_child(url: str, folder: Path, subscribers: int, n_items: int) -> dict[str, Any]:
    """Seed in a process of its own, which ends before the measured one starts. Seeded in
    this process (which then stays alive, about 530 MB resident after building the engine's
    cache file), the measured process's allocations were slower on these VMs for reasons
    not found (the VM's memory, or the page cache writing back the new files): the engine's
    unpickling took 3.6-4.1 s in six runs, against 1.4-1.5 s in four runs seeded this way
    and 1.3 s in a fresh process (eighteenth session, BENCHMARKS.md)."""
    command = [sys.executable, "-m", "bench.digest_fanout", "--seed", url, str(folder)]
    command += [str(subscribers), str(n_items)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"seeding failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_child(url: str, folder: Path, naive_sample: int, tree: Path = ROOT) -> dict[str, Any]:
    """The measured child, with the code of ``tree`` (a checkout of this project: run from
    there, ``python -m`` imports its ``bench`` and ``pipeline`` before any installed)."""
    command = [sys.executable, "-m", "bench.digest_fanout", "--child", url, str(folder)]
    command += ["--naive-sample", str(naive_sample)]
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"measured run failed:\n{done.stderr[-3000:]}")
    for line in done.stderr.splitlines():
        if line.startswith(("digest build:", "send queue:")):
            step(f"  {line}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def sqlite_files(url: str) -> list[Path]:
    """A SQLite database's file, its WAL and its shared-memory index."""
    database = Path(url.removeprefix("sqlite:///"))
    return [database.with_name(database.name + suffix) for suffix in ("", "-wal", "-shm")]


def snapshot(url: str, folder: Path, into: Path) -> None:
    """Copy a seeded SQLite database (with its WAL, if any) and the run's folder (the
    watchlist engine's cache file) into ``into``: every measured child starts from the same
    bytes (``restore``)."""
    for path in sqlite_files(url):
        if path.exists():
            shutil.copy2(path, into / path.name)
    shutil.copytree(folder, into / "folder")


def restore(url: str, folder: Path, saved: Path) -> None:
    for path in sqlite_files(url):
        path.unlink(missing_ok=True)
        if (saved / path.name).exists():
            shutil.copy2(saved / path.name, path)
    shutil.rmtree(folder)
    shutil.copytree(saved / "folder", folder)


# -- the report ----------------------------------------------------------------------------


def run(
    quick: bool = False,
    runs: int | None = None,
    engines: tuple[str, ...] = ("sqlite",),
    subscribers: int | None = None,
    n_items: int | None = None,
    naive_sample: int | None = None,
    children: int = 1,
    against: Path | None = None,
) -> dict[str, Any]:
    """``children``: measured runs per seeded database (SQLite: each on a copy of the same
    seeded bytes); ``against``: another checkout of the project whose measured child runs
    beside each of this one's, on the same copy, the two in turn (this one first in odd
    runs, that one first in even runs), so that a comparison sees the same phases of a
    shared machine."""
    subscribers = subscribers or (10_000 if quick else 100_000)
    n_items = n_items or (4_000 if quick else 20_000)
    runs = runs or 1
    naive_sample = naive_sample or (300 if quick else 1000)
    about = machine()
    # the measured child imports the same modules: compiled by mypyc, or the sources
    about["modules"] = subprocess.run(
        [sys.executable, "-c", "import pipeline; print(pipeline.NATIVE_MODE)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    step(
        f"digest fan-out: {subscribers:,} readers, {n_items:,} items; load {about['load']}; "
        f"modules {about['modules']}"
    )
    sticks = [yardstick()]
    step(f"yardstick before: {_yardstick_line(sticks[-1])}")
    results: dict[str, Any] = {"engines": {}}
    rows_out = []
    for engine in engines:
        if engine == "postgres" and not postgres_available():
            step("postgres: not reachable, skipped")
            continue
        if engine != "sqlite" and (children > 1 or against is not None):
            step(f"{engine}: --children and --against copy a SQLite file; skipped")
            continue
        measured: list[dict[str, Any]] = []
        measured_against: list[dict[str, Any]] = []
        for attempt in range(runs):
            with (
                database(engine) as url,
                tempfile.TemporaryDirectory() as folder,
                tempfile.TemporaryDirectory() as saved,
            ):
                notes = seed_in_child(url, Path(folder), subscribers, n_items)
                notes["harness MiB"] = round(status_mib("VmRSS"))
                step(f"{engine} run {attempt + 1}: seeded {notes}")
                copies = children * (2 if against is not None else 1)
                if copies > 1:
                    snapshot(url, Path(folder), Path(saved))
                trees = [(ROOT, measured)]
                if against is not None:
                    trees.append((against, measured_against))
                for index in range(children):
                    for turn, (tree, into) in enumerate(trees[:: 1 if index % 2 == 0 else -1]):
                        if index or turn:
                            restore(url, Path(folder), Path(saved))
                        figures = run_child(url, Path(folder), naive_sample, tree)
                        label = "" if tree == ROOT else f" ({tree})"
                        step(f"{engine} run {attempt + 1}.{index + 1}{label}: {figures}")
                        into.append(figures)
        results["engines"][engine] = measured
        rows_out.append(summarise(engine, measured))
        if against is not None:
            results["engines"][f"{engine} against"] = measured_against
            rows_out.append(summarise(f"{engine} ({against})", measured_against))
    sticks.append(yardstick())
    step(f"yardstick after: {_yardstick_line(sticks[-1])}")
    about["load after"] = machine()["load"]
    results["machine"] = about
    results["yardstick"] = sticks
    results["table"] = table(
        f"Digest fan-out: {subscribers:,} readers (themes + 5 watchlists), {n_items:,} items; "
        f"load {about['load']} → {about['load after']}; modules {about['modules']}",
        [
            "engine",
            "digests",
            "build wall s (CPU s)",
            "render wall s (CPU s)",
            "total wall s (CPU s)",
            "ms/digest render (CPU)",
            "naive ms/digest (CPU)",
            "render ×",
            "pipeline × (CPU)",
            "peak MiB",
            "same emails",
        ],
        rows_out,
    )
    print(results["table"], flush=True)
    print(
        "\nYardstick, a 30-item digest (the issue measured Jinja2 1.2 ms, css-inline 1.4 ms): "
        + "; ".join(_yardstick_line(stick) for stick in sticks),
        flush=True,
    )
    return results


def _yardstick_line(stick: dict[str, float]) -> str:
    return (
        f"Jinja2 {stick['jinja ms']:.2f} ms, css-inline {stick['inline ms']:.2f} ms "
        f"({stick['x issue']:.2f}× the issue's sum)"
    )


def summarise(engine: str, measured: list[dict[str, Any]]) -> list[object]:
    def col(key: str, index: int) -> list[float]:
        return [m[key][index] for m in measured]

    n = measured[0]["rendered"]
    build_w, build_c = col("build", 0), col("build", 1)
    render_w, render_c = col("render", 0), col("render", 1)
    total_w = [a + b for a, b in zip(build_w, render_w, strict=True)]
    total_c = [a + b for a, b in zip(build_c, render_c, strict=True)]
    fast_ms = median(
        [c / max(m["rendered"], 1) * 1000 for c, m in zip(render_c, measured, strict=True)]
    )
    naive_ms = median([m["naive"][1] / max(m["naive n"], 1) * 1000 for m in measured])
    naive_total = median(build_c) + naive_ms / 1000 * n
    return [
        engine,
        f"{n:,} ({measured[0]['empty']} empty)",
        f"{spread(build_w)} ({median(build_c):.1f})",
        f"{spread(render_w)} ({median(render_c):.1f})",
        f"{spread(total_w)} ({median(total_c):.1f})",
        f"{fast_ms:.3f}",
        f"{naive_ms:.2f}",
        f"{naive_ms / fast_ms:.1f}",
        f"{naive_total / median(total_c):.1f}",
        f"{median([m['peak MiB'] for m in measured]):.0f}",
        "yes" if all(m["equal"] for m in measured) else "NO",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.digest_fanout", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--engine", action="append", choices=("sqlite", "postgres"))
    parser.add_argument("--subscribers", type=int)
    parser.add_argument("--items", type=int)
    parser.add_argument("--naive-sample", type=int)
    parser.add_argument(
        "--send-workers", type=int, help="the send queue's processes (0: one per core)"
    )
    parser.add_argument(
        "--cluster-only", action="store_true", help="time the day's clustering alone"
    )
    parser.add_argument(
        "--children",
        type=int,
        default=1,
        help="measured runs per seeded database (SQLite; each on a copy of the same bytes)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="TREE",
        help="another checkout (compiled alike) measured in turn with this one, same copies",
    )
    parser.add_argument("--child", nargs=2, metavar=("URL", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--seed", nargs=4, metavar=("URL", "FOLDER", "READERS", "ITEMS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.seed:
        url, folder, readers, items = args.seed
        print(json.dumps(seed_in(url, Path(folder), int(readers), int(items))), flush=True)
        return 0
    if args.cluster_only:
        seconds = cluster_only(args.items or (4_000 if args.quick else 20_000), args.runs or 1)
        print(f"day_stories CPU s: {spread(seconds)}", flush=True)
        return 0
    if args.send_workers is not None:  # read by the measured child's settings
        os.environ["BENCH_SEND_WORKERS"] = str(args.send_workers)
    if args.child:
        figures = child(args.child[0], Path(args.child[1]), args.naive_sample or 300)
        print(json.dumps(figures), flush=True)
        return 0
    run(
        quick=args.quick,
        runs=args.runs,
        engines=tuple(args.engine or ("sqlite",)),
        subscribers=args.subscribers,
        n_items=args.items,
        naive_sample=args.naive_sample,
        children=max(args.children, 1),
        against=args.against.resolve() if args.against else None,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
