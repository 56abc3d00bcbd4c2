"""The worker: ticks are database-driven, safe to run twice and from two processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline import jobs
from pipeline.bootstrap import App
from pipeline.scheduler import poll_tick, run_worker
from tests.support.app import FakeClock, add_feeds, make_app
from tests.support.feedserver import FeedServer
from tests.support.fixtures_http import FEED_SERVER_ALLOW

RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
    b"<item><title>Islamabad talks</title><guid>g1</guid>"
    b"<link>https://news.example/{n}</link></item></channel></rss>"
)


def feed_body(n: int) -> bytes:
    return RSS.replace(b"{n}", str(n).encode())


def test_a_tick_run_twice_at_the_same_moment_polls_each_due_feed_once(
    store_url: str, tmp_path: Path, feed_server: FeedServer
) -> None:
    clock = FakeClock()
    app = make_app(store_url, tmp_path, clock)
    for n in range(3):
        feed_server.route(f"/f{n}.xml", body=feed_body(n))
    add_feeds(app, *(feed_server.url(f"/f{n}.xml") for n in range(3)))
    first = jobs.poll_feeds(app)
    second = jobs.poll_feeds(app)
    assert len(first.reports) == 3 and second.reports == []
    assert feed_server.hits() == 3
    app.close()


def test_feeds_missed_while_the_worker_was_down_are_polled_on_the_first_tick(
    store_url: str, tmp_path: Path, feed_server: FeedServer
) -> None:
    clock = FakeClock()
    app = make_app(store_url, tmp_path, clock)
    feed_server.route("/f.xml", body=feed_body(1))
    add_feeds(app, feed_server.url("/f.xml"))
    jobs.poll_feeds(app)
    clock.advance(hours=6)  # twelve 30-minute intervals missed: one poll, not twelve
    assert len(jobs.poll_feeds(app).reports) == 1
    assert jobs.poll_feeds(app).reports == []
    app.close()


@pytest.mark.postgres
def test_two_workers_on_one_postgres_never_poll_the_same_feed(
    postgres_url: str, tmp_path: Path, feed_server: FeedServer
) -> None:
    count = 12
    for n in range(count):
        feed_server.route(f"/f{n}.xml", body=feed_body(n), delay=0.2)
    clock = FakeClock()
    apps = [make_app(postgres_url, tmp_path / f"w{i}", clock) for i in range(2)]
    for i, app in enumerate(apps):
        app.worker_name = f"worker-{i}"
    add_feeds(apps[0], *(feed_server.url(f"/f{n}.xml") for n in range(count)))

    barrier = threading.Barrier(2)

    def work(app_index: int) -> int:
        barrier.wait()
        return len(jobs.poll_feeds(apps[app_index]).reports)

    with ThreadPoolExecutor(2) as pool:
        polled = list(pool.map(work, range(2)))
    assert sum(polled) == count
    assert all(feed_server.hits(f"/f{n}.xml") == 1 for n in range(count))
    assert apps[0].store.count_items() == count
    for app in apps:
        app.close()


def app_with_one_configured_feed(database_url: str, tmp_path: Path, server: FeedServer) -> App:
    """An app whose config/feeds.toml lists one feed served by ``server``."""
    feeds_file = tmp_path / "feeds.toml"
    feeds_file.write_text(f'[[feed]]\nurl = "{server.url("/f.xml")}"\ntitle = "F"\n')
    server.route("/f.xml", body=feed_body(1))
    app = make_app(database_url, tmp_path, FakeClock())
    app.settings = app.settings.model_copy(
        update={"feeds": app.settings.feeds.model_copy(update={"file": str(feeds_file)})}
    )
    return app


def test_worker_polls_on_start_and_stops_when_asked(
    sqlite_url: str, tmp_path: Path, feed_server: FeedServer
) -> None:
    app = app_with_one_configured_feed(sqlite_url, tmp_path, feed_server)
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(app, stop))
    thread.start()
    deadline = time.monotonic() + 20
    while feed_server.hits("/f.xml") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the worker's first tick, not for time to pass
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert feed_server.hits("/f.xml") == 1
    assert app.store.count_items() == 1
    app.close()


def test_poll_tick_syncs_configured_feeds_before_polling(
    sqlite_url: str, tmp_path: Path, feed_server: FeedServer
) -> None:
    app = app_with_one_configured_feed(sqlite_url, tmp_path, feed_server)
    poll_tick(app)
    [feed] = app.store.list_feeds()
    assert (feed.title, feed.status, feed.items) == ("F", "ok", 1)
    app.close()


@pytest.mark.timeout(200)
def test_worker_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    feeds_file = tmp_path / "feeds.toml"
    feeds_file.write_text("# no feeds\n")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "QASID_FEEDS_FILE": str(feeds_file),
        "QASID_FETCH_ALLOW_HOSTS": ",".join(FEED_SERVER_ALLOW),
        "QASID_MAIL_POSTAL_ADDRESS": "1 Test Street, Lahore",
        "QASID_MAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
        "QASID_WEB_SECRET_KEY": "test-secret",
    }
    subprocess.run([sys.executable, "-m", "pipeline", "db", "upgrade"], env=env, check=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    started = ""
    deadline = time.monotonic() + 20
    while "worker started" not in started and time.monotonic() < deadline:
        started += process.stderr.readline()
    process.send_signal(signal.SIGTERM)
    # The first tick's jobs are running and are let finish: on two shared cores under the
    # rest of the suite that has taken over 20 s, so this is a hang guard, not a speed test.
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 0, started + rest
    assert "worker stopped" in rest


def test_worker_refuses_to_start_without_a_postal_address(tmp_path: Path) -> None:
    feeds_file = tmp_path / "feeds.toml"
    feeds_file.write_text("# no feeds\n")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}",
        "QASID_FEEDS_FILE": str(feeds_file),
        "QASID_MAIL_POSTAL_ADDRESS": "",
    }
    subprocess.run([sys.executable, "-m", "pipeline", "db", "upgrade"], env=env, check=True)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "mail.postal_address" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
