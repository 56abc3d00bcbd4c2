"""Build a real App for integration tests: real store, real fetcher, a controllable clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.bootstrap import App, build_app
from pipeline.core.models import FeedSource
from pipeline.settings import Settings, load_settings
from tests.support.fixtures_http import FEED_SERVER_ALLOW


@dataclass
class FakeClock:
    """A clock the test moves by hand. Nothing sleeps to wait for time to pass."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 29, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def environment_for_tests(database_url: str, tmp_path: Path, **fetch: object) -> dict[str, str]:
    """The environment of `settings_for_tests`, for running `qasid` in a child process."""
    env = {
        "DATABASE_URL": database_url,
        "QASID_FETCH_ALLOW_HOSTS": ",".join(FEED_SERVER_ALLOW),
        "QASID_FETCH_DEADLINE": "8",  # generous: CI shares two cores; slow drips still time out
        "QASID_FETCH_CONNECT_TIMEOUT": "2",
        "QASID_FETCH_READ_TIMEOUT": "4",
        "QASID_FETCH_MAX_BYTES": str(1024 * 1024),
        "QASID_FETCH_PARSE_WORKERS": "1",
        "QASID_FETCH_PARSE_TIMEOUT": "5",
        "QASID_FEEDS_FILE": str(tmp_path / "no-feeds.toml"),
        "QASID_WORKER_NAME": "test-worker",
        "QASID_MAIL_POSTAL_ADDRESS": "1 Test Street, Lahore",
        "QASID_MAIL_FROM_ADDRESS": "qasid <digest@qasid.test>",
        "QASID_MAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
        "QASID_DIGEST_WATCHLIST_CACHE": str(tmp_path / "watchlist-engine.pickle"),
        "QASID_WEB_SECRET_KEY": "test-secret",
    }
    env.update({f"QASID_FETCH_{key.upper()}": str(value) for key, value in fetch.items()})
    return env


def settings_for_tests(database_url: str, tmp_path: Path, **fetch: object) -> Settings:
    """Settings for tests: only the feed server's address is allowed, short limits."""
    env = environment_for_tests(database_url, tmp_path, **fetch)
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "qasid.toml"
    config.write_text("", encoding="utf-8")
    return load_settings(config, environ=env)


def make_app(database_url: str, tmp_path: Path, clock: FakeClock, **fetch: object) -> App:
    app = build_app(settings_for_tests(database_url, tmp_path, **fetch), clock=clock)
    app.store.upgrade()
    return app


def add_feeds(app: App, *urls: str) -> None:
    for url in urls:
        app.store.add_feed(FeedSource(url=url, title=""), "cli", app.clock())
