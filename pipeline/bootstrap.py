"""The only place adapters are built from settings."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from pipeline.adapters.fetch import Fetcher
from pipeline.adapters.mail import build_mailer
from pipeline.adapters.parse import ParsePool
from pipeline.adapters.storage import Store
from pipeline.core.mail import Mailer
from pipeline.core.models import FeedSource
from pipeline.core.schedule import BackoffPolicy
from pipeline.core.tagger import Tagger
from pipeline.rules import load_tagger
from pipeline.services import EntryMemory
from pipeline.settings import Settings
from pipeline.sources import load_feed_sources
from pipeline.tokens import Tokens, load_or_create_secret


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class App:
    """Settings plus the long-lived adapters every job needs."""

    settings: Settings
    store: Store
    clock: Callable[[], datetime] = utc_now
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")

    def close(self) -> None:
        self.store.close()

    def fetcher(self) -> Fetcher:
        return Fetcher(self.settings.fetch)

    def parse_pool(self) -> ParsePool:
        return ParsePool.from_settings(self.settings.fetch)

    @cached_property
    def entry_memory(self) -> EntryMemory:
        """Entry fingerprints of the feeds this process polled (a worker polls many times)."""
        return EntryMemory()

    @cached_property
    def tagger(self) -> Tagger:
        """The theme tagger, built once from config/themes.toml, aliases and feeds."""
        return load_tagger(Path(self.settings.root), self.settings.path(self.settings.feeds.file))

    @cached_property
    def tokens(self) -> Tokens:
        """Signs and checks the links in emails ([web] secret_key, else var/secret.key)."""
        web = self.settings.web
        secret = web.secret_key or load_or_create_secret(self.settings.path("var/secret.key"))
        return Tokens([secret, *web.old_secret_keys])

    def mailer(self) -> Mailer:
        return build_mailer(self.settings)

    def backoff_policy(self) -> BackoffPolicy:
        fetch = self.settings.fetch
        return BackoffPolicy(
            base_minutes=fetch.backoff_base_minutes,
            max_minutes=fetch.backoff_max_minutes,
            gone_after=fetch.gone_after,
        )

    def configured_sources(self) -> list[FeedSource]:
        """The feeds listed in config/feeds.toml (or the OPML file configured instead)."""
        return load_feed_sources(
            self.settings.path(self.settings.feeds.file),
            self.settings.feeds.default_interval_minutes,
        )


def build_app(settings: Settings, clock: Callable[[], datetime] | None = None) -> App:
    store = Store(settings.database.url, echo=settings.database.echo)
    app = App(settings=settings, store=store, clock=clock or utc_now)
    if settings.worker.name:
        app.worker_name = settings.worker.name
    return app
