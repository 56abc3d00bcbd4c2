"""Table definitions (SQLAlchemy Core). Alembic migrations are written against these."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both engines (SQLite keeps no zone: store naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        # Rows written together repeat their time stamps too (a build's 100,000 editions
        # and delivery rows: five each, from a few periods and one build time).
        convert = super().bind_processor(dialect)
        if convert is None:
            return None
        return lru_cache(maxsize=256)(convert)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        # Rows read together repeat their time stamps (a batch's editions share the period
        # and the build time): convert each distinct stored value once. Datetimes are
        # immutable, so sharing the result is safe.
        convert = super().result_processor(dialect, coltype)
        if convert is None:
            return None
        return lru_cache(maxsize=256)(convert)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

feed = Table(
    "feed",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("url", Text, nullable=False, unique=True),
    Column("title", Text, nullable=False, server_default=""),
    Column("site_url", Text, nullable=False, server_default=""),
    Column("language", String(16), nullable=False, server_default="en"),
    Column("country", String(8), nullable=False, server_default=""),
    Column("kind", String(32), nullable=False, server_default=""),
    Column("interval_minutes", Integer, nullable=False, server_default="30"),
    Column("origin", String(16), nullable=False, server_default="cli"),  # config, opml, cli
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    # conditional GET and change detection
    Column("etag", Text),
    Column("last_modified", Text),
    Column("body_hash", String(64)),
    # last outcome and back-off
    Column("status", String(32), nullable=False, server_default="never"),
    Column("last_error", Text),
    Column("http_status", Integer),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("gone_count", Integer, nullable=False, server_default="0"),
    Column("error_total", Integer, nullable=False, server_default="0"),
    Column("last_checked_at", UTCDateTime()),
    Column("last_success_at", UTCDateTime()),
    Column("next_poll_at", UTCDateTime()),
    # a poll lease, so two workers never poll one feed at once
    Column("lease_until", UTCDateTime()),
    Column("leased_by", String(128)),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_feed_due", "enabled", "next_poll_at"),
)

# The archive's search index and item_theme (migrations 0005 and 0008, not described here)
# follow item through archive_pending: the store sets it on the items it inserts or changes,
# and archive_store.index_archive, a step run after the writes, indexes those and clears it.
# Deletes leave the index by themselves (a trigger, cascades).
item = Table(
    "item",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uid", String(32), nullable=False, unique=True),  # the public, stable id
    Column("feed_id", Integer, ForeignKey("feed.id", ondelete="CASCADE"), nullable=False),
    Column("guid_key", Text, nullable=False),
    Column("link", Text, nullable=False, server_default=""),
    Column("title", Text, nullable=False, server_default=""),
    Column("summary_html", Text, nullable=False, server_default=""),
    Column("summary_text", Text, nullable=False, server_default=""),
    Column("author", Text, nullable=False, server_default=""),
    # the outlet an aggregator (a news-search feed) credits the item to
    Column("source_name", Text, nullable=False, server_default=""),
    Column("language", String(16), nullable=False, server_default="en"),
    Column("published_at", UTCDateTime(), nullable=False),
    Column("published_missing", Boolean, nullable=False, server_default=text("false")),
    Column("fetched_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("content_hash", String(64), nullable=False, server_default=""),
    # filled by the tagger; null until tagged
    Column("relevant", Boolean),
    Column("us_link", Boolean),
    Column("themes", JSON),
    Column("scores", JSON),
    Column("evidence", JSON),
    # true: the archive's entries (search, item_theme) are to be (re)built; NULL: up to date
    Column("archive_pending", Boolean),
    Index("uq_item_feed_id_guid_key", "feed_id", "guid_key", unique=True),
    # one row per story URL across feeds; items without a safe link are exempt
    Index(
        "uq_item_link",
        "link",
        unique=True,
        sqlite_where=text("link <> ''"),
        postgresql_where=text("link <> ''"),
    ),
    Index("ix_item_published_at", "published_at"),
    Index(
        "ix_item_archive_pending",
        "id",
        sqlite_where=text("archive_pending"),
        postgresql_where=text("archive_pending"),
    ),
)

subscriber = Table(
    "subscriber",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),  # normalised (lower-cased domain)
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("themes", JSON, nullable=False),
    Column("frequency", String(16), nullable=False, server_default="daily"),
    Column("hour", Integer, nullable=False, server_default="7"),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("confirmed_at", UTCDateTime()),  # double opt-in completed
)

watchlist = Table(
    "watchlist",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "subscriber_id", Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False
    ),
    Column("query", Text, nullable=False),
    Column("instant", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("uq_watchlist_subscriber_id_query", "subscriber_id", "query", unique=True),
    # a reader's instant watchlists alone (the send queue's reads; migration 0011)
    Index(
        "ix_watchlist_instant",
        "subscriber_id",
        "id",
        sqlite_where=text("instant IS 1"),
        postgresql_where=text("instant IS true"),
    ),
)

edition = Table(
    "edition",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # personal or public
    # personal editions belong to one subscriber; public ones to nobody (NULL)
    Column("subscriber_id", Integer, ForeignKey("subscriber.id", ondelete="CASCADE")),
    Column("frequency", String(16), nullable=False),  # daily or weekly
    Column("period_start", UTCDateTime(), nullable=False),
    Column("period_end", UTCDateTime(), nullable=False),
    Column("local_date", String(10), nullable=False),  # the reader's date, YYYY-MM-DD
    Column("subject", Text, nullable=False, server_default=""),
    Column("item_count", Integer, nullable=False, server_default="0"),
    Column("content", JSON, nullable=False),  # the built digest, for rendering and the archive
    Column("created_at", UTCDateTime(), nullable=False),
    # one edition per subscriber and period; one public edition per frequency and period
    Index("uq_edition_personal", "subscriber_id", "frequency", "period_end", unique=True),
    Index(
        "uq_edition_public",
        "kind",
        "frequency",
        "period_end",
        unique=True,
        sqlite_where=text("kind = 'public'"),
        postgresql_where=text("kind = 'public'"),
    ),
    Index("ix_edition_kind_period_end", "kind", "period_end"),
)

# The parts personal editions share (issue 4, "Speed"): a story as many readers' digests
# show it (its item's fields and the other outlets) and a theme's heading and context,
# each stored once under a hash of its JSON text (``DigestJSON.compact``). A part holds
# feed and editorial text only: what is a reader's own (their watchlist queries, the
# reasons naming them, the rank) stays in their edition, and goes with it.
edition_part = Table(
    "edition_part",
    metadata,
    Column("key", String(32), primary_key=True),
    Column("content", Text, nullable=False),  # JSON text
)

delivery = Table(
    "delivery",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "subscriber_id", Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False
    ),
    Column("edition_id", Integer, ForeignKey("edition.id", ondelete="CASCADE")),
    Column("alert_item_id", Integer, ForeignKey("item.id", ondelete="CASCADE")),
    Column("channel", String(16), nullable=False),  # digest, alert, confirm
    # queued → sending → sent | failed | unknown | suppressed; unknown → sent | failed
    Column("status", String(16), nullable=False, server_default="queued"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("not_before", UTCDateTime(), nullable=False),
    Column("claimed_by", String(128)),
    Column("claimed_at", UTCDateTime()),
    Column("sent_at", UTCDateTime()),
    Column("provider_message_id", String(255)),
    Column("last_error", Text),
    Column("resent", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("uq_delivery_subscriber_id_edition_id", "subscriber_id", "edition_id", unique=True),
    Index("uq_delivery_subscriber_id_alert_item_id", "subscriber_id", "alert_item_id", unique=True),
    Index("ix_delivery_status_not_before", "status", "not_before"),
)

# -- the web app: consent, suppression, one-time links, provider events ---------------------

consent = Table(
    "consent",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "subscriber_id", Integer, ForeignKey("subscriber.id", ondelete="CASCADE"), nullable=False
    ),
    Column("action", String(32), nullable=False),  # signup, confirm, unsubscribe, resubscribe
    Column("at", UTCDateTime(), nullable=False),
    Column("ip", String(64), nullable=False, server_default=""),
    Column("user_agent", Text, nullable=False, server_default=""),
    Column("text_version", String(32), nullable=False, server_default=""),
    Column("source", String(32), nullable=False, server_default=""),  # web, cli, one-click
    Index("ix_consent_subscriber_id", "subscriber_id"),
)

# Addresses that must never be mailed again, kept as hashes so erasing a subscriber's data
# does not erase the fact that they left (M-08).
suppression = Table(
    "suppression",
    metadata,
    Column("email_hash", String(64), primary_key=True),
    Column("reason", String(32), nullable=False),  # erased, bounced, complained, unsubscribed
    Column("created_at", UTCDateTime(), nullable=False),
)

# Magic links that may be used once (A-02: a reused link is rejected).
used_token = Table(
    "used_token",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("purpose", String(32), nullable=False),
    Column("used_at", UTCDateTime(), nullable=False),
)

# SendGrid Event Webhook: every event applied once (SendGrid retries and duplicates).
webhook_event = Table(
    "webhook_event",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_key", String(64), nullable=False, unique=True),  # hash of the event's content
    Column("sg_event_id", String(128)),
    Column("event_type", String(32), nullable=False),
    Column("email_hash", String(64)),
    Column("delivery_id", Integer),
    Column("sg_message_id", String(255)),
    Column("occurred_at", UTCDateTime()),
    Column("payload", JSON, nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Index("ix_webhook_event_delivery_id", "delivery_id"),
)

webhook_quarantine = Table(
    "webhook_quarantine",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("body", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
)
