"""The store: the only module with SQL. SQLite (default, WAL) or PostgreSQL.

The ingest path uses SQLAlchemy Core with one transaction per batch. Claims use
``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite a single UPDATE ... RETURNING is atomic,
and SQLite is for one worker only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from pipeline.adapters.schema import feed, item, metadata
from pipeline.core.errors import StorageError
from pipeline.core.models import FeedSource, FeedState, Item, StoreCounts
from pipeline.core.schedule import PollRecord

log = logging.getLogger(__name__)

_CHUNK = 500  # rows per IN (...) lookup; well under both engines' parameter limits


def item_uid(feed_url: str, it: Item) -> str:
    """The public id of an item: its story URL when it has one, else its feed and guid."""
    basis = it.link or f"{feed_url}\n{it.guid_key}"
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:20]


def _chunks(values: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass(frozen=True)
class StoredItem:
    """An item as listed for people and scripts."""

    id: str
    feed: str
    title: str
    link: str
    published: datetime
    summary: str
    summary_text: str
    language: str
    relevant: bool | None
    us_link: bool | None
    themes: list[str]
    scores: dict[str, float]
    evidence: dict[str, list[str]]


class Store:
    """Feeds and items in one database. Thread-safe through SQLAlchemy's pool."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(url, echo=echo, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as error:
            raise StorageError(f"cannot open database {self.safe_url}: {error}") from error
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        try:
            return self.engine.url.render_as_string(hide_password=True)
        except AttributeError:
            return self.url

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as error:
            raise StorageError(f"database error on {self.safe_url}: {error}") from error

    # -- schema ---------------------------------------------------------------------------

    def upgrade(self) -> None:
        """Apply every Alembic migration not yet applied (idempotent)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option(
            "script_location", str(resources.files("pipeline.adapters") / "migrations")
        )
        try:
            with self.engine.begin() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
        except SQLAlchemyError as error:
            raise StorageError(f"migration failed on {self.safe_url}: {error}") from error

    def require_schema(self) -> None:
        """Raise a StorageError telling the user to migrate when the tables are missing."""
        try:
            tables = set(inspect(self.engine).get_table_names())
        except SQLAlchemyError as error:
            raise StorageError(f"cannot reach database {self.safe_url}: {error}") from error
        missing = {t.name for t in metadata.sorted_tables} - tables
        if missing:
            raise StorageError(
                f"database {self.safe_url} has no {', '.join(sorted(missing))} table: "
                "run `qasid db upgrade` (or `qasid init`)"
            )

    # -- feeds ----------------------------------------------------------------------------

    def add_feed(self, source: FeedSource, origin: str, now: datetime) -> tuple[int, bool]:
        """Insert a feed, or refresh its metadata if the URL is known. Returns (id, created)."""
        with self._begin() as conn:
            return self._upsert_feed(conn, source, origin, now)

    def sync_sources(
        self, sources: Iterable[FeedSource], origin: str, now: datetime
    ) -> tuple[int, int]:
        """Make the store hold every configured feed. Returns (added, already known)."""
        added = known = 0
        with self._begin() as conn:
            for source in sources:
                _, created = self._upsert_feed(conn, source, origin, now)
                added += created
                known += not created
        return added, known

    def _upsert_feed(
        self, conn: Connection, source: FeedSource, origin: str, now: datetime
    ) -> tuple[int, bool]:
        existing = conn.execute(select(feed.c.id).where(feed.c.url == source.url)).scalar()
        values = {
            "title": source.title,
            "site_url": source.site_url,
            "language": source.language,
            "country": source.country,
            "kind": source.kind,
            "interval_minutes": source.interval_minutes,
        }
        if existing is not None:
            conn.execute(update(feed).where(feed.c.id == existing).values(**values))
            return int(existing), False
        new_id = conn.execute(
            feed.insert()
            .values(url=source.url, origin=origin, created_at=now, enabled=True, **values)
            .returning(feed.c.id)
        ).scalar_one()
        return int(new_id), True

    def remove_feed(self, url: str) -> bool:
        """Delete a feed and the items first seen in it. False when the URL is unknown."""
        with self._begin() as conn:
            return bool(conn.execute(delete(feed).where(feed.c.url == url)).rowcount)

    def set_feed_enabled(self, url: str, enabled: bool, now: datetime) -> bool:
        values: dict[str, Any] = {"enabled": enabled}
        if enabled:
            values.update(gone_count=0, failures=0, next_poll_at=now)
        with self._begin() as conn:
            return bool(
                conn.execute(update(feed).where(feed.c.url == url).values(**values)).rowcount
            )

    def list_feeds(self) -> list[FeedState]:
        """Every feed with its last outcome and how many items it brought in."""
        counts = select(item.c.feed_id, func.count().label("n")).group_by(item.c.feed_id).subquery()
        query = (
            select(feed, func.coalesce(counts.c.n, 0).label("items"))
            .select_from(feed.outerjoin(counts, counts.c.feed_id == feed.c.id))
            .order_by(feed.c.id)
        )
        with self._begin() as conn:
            return [_feed_state(row._mapping) for row in conn.execute(query)]

    def get_feed(self, url: str) -> FeedState | None:
        with self._begin() as conn:
            row = conn.execute(select(feed).where(feed.c.url == url)).first()
        return _feed_state(row._mapping) if row else None

    def claim_feeds(
        self,
        now: datetime,
        worker: str,
        lease: timedelta,
        *,
        urls: Sequence[str] | None = None,
        due_only: bool = True,
        limit: int | None = None,
    ) -> list[FeedState]:
        """Lease the feeds to poll now, so no other worker polls them at the same time.

        ``due_only`` picks enabled feeds whose next poll time has come; ``urls`` restricts
        to those feeds (enabled or not: an editor asked). Feeds leased by a live worker are
        skipped. The lease ends with ``record_poll`` or when it expires.
        """
        candidates = select(feed.c.id).where(
            (feed.c.lease_until.is_(None)) | (feed.c.lease_until < now)
        )
        if urls is not None:
            candidates = candidates.where(feed.c.url.in_(list(urls)))
        else:
            candidates = candidates.where(feed.c.enabled.is_(True))
        if due_only and urls is None:
            candidates = candidates.where(
                (feed.c.next_poll_at.is_(None)) | (feed.c.next_poll_at <= now)
            )
        candidates = candidates.order_by(feed.c.next_poll_at.is_not(None), feed.c.next_poll_at)
        if limit is not None:
            candidates = candidates.limit(limit)
        if not self.is_sqlite:
            candidates = candidates.with_for_update(skip_locked=True)
        statement = (
            update(feed)
            .where(feed.c.id.in_(candidates.scalar_subquery()))
            .values(lease_until=now + lease, leased_by=worker)
            .returning(*feed.c)
        )
        with self._begin() as conn:
            rows = conn.execute(statement).all()
        return sorted((_feed_state(row._mapping) for row in rows), key=lambda s: s.id)

    def record_poll(
        self,
        feed_id: int,
        record: PollRecord,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        body_hash: str | None = None,
        new_url: str | None = None,
        title: str | None = None,
    ) -> None:
        """Write a poll's outcome and release the lease. Validators change only on success."""
        values: dict[str, Any] = {
            "status": record.status.value,
            "last_error": record.message if not record.succeeded else None,
            "http_status": record.http_status,
            "failures": record.failures,
            "gone_count": record.gone_count,
            "enabled": record.enabled,
            "last_checked_at": record.checked_at,
            "next_poll_at": record.next_poll_at,
            "lease_until": None,
            "leased_by": None,
        }
        if record.succeeded:
            values["last_success_at"] = record.checked_at
            if record.message:  # a warning (malformed but usable)
                values["last_error"] = record.message
            if etag is not None or last_modified is not None or body_hash is not None:
                values.update(etag=etag, last_modified=last_modified)
            if body_hash is not None:
                values["body_hash"] = body_hash
        else:
            values["error_total"] = feed.c.error_total + 1
        with self._begin() as conn:
            if title:
                # Fill a missing title from the feed itself; an editor's title wins.
                conn.execute(
                    update(feed)
                    .where(feed.c.id == feed_id, feed.c.title == "")
                    .values(title=title[:300])
                )
            if new_url:
                taken = conn.execute(select(feed.c.id).where(feed.c.url == new_url)).scalar()
                if taken is None:
                    values["url"] = new_url
                else:
                    log.warning("feed %s moved to %s, which is already a feed", feed_id, new_url)
            conn.execute(update(feed).where(feed.c.id == feed_id).values(**values))

    # -- items ----------------------------------------------------------------------------

    def store_items(
        self, feed_id: int, feed_url: str, items: Sequence[Item], fetched_at: datetime
    ) -> StoreCounts:
        """Insert new items, update changed ones, skip stories already stored from any feed.

        One transaction for the batch. Identity within a feed is ``guid_key``; across feeds
        it is the canonical link (a unique index), so the same story URL is stored once.
        """
        if not items:
            return StoreCounts()
        by_key: dict[str, Item] = {}
        for it in items:
            by_key.setdefault(it.guid_key, it)
        with self._begin() as conn:
            known: dict[str, tuple[int, str]] = {}
            for keys in _chunks(list(by_key)):
                rows = conn.execute(
                    select(item.c.guid_key, item.c.id, item.c.content_hash).where(
                        item.c.feed_id == feed_id, item.c.guid_key.in_(keys)
                    )
                )
                known.update({r.guid_key: (r.id, r.content_hash) for r in rows})
            fresh = [it for key, it in by_key.items() if key not in known]
            links = sorted({it.link for it in fresh if it.link})
            elsewhere: set[str] = set()
            for chunk in _chunks(links):
                # `link <> ''` lets both engines use the partial unique index on link.
                rows = conn.execute(
                    select(item.c.link).where(item.c.link != "", item.c.link.in_(chunk))
                )
                elsewhere.update(r.link for r in rows)
            to_insert: list[dict[str, Any]] = []
            seen_links: set[str] = set()
            duplicates = 0
            for it in fresh:
                if it.link and (it.link in elsewhere or it.link in seen_links):
                    duplicates += 1
                    continue
                if it.link:
                    seen_links.add(it.link)
                to_insert.append(_item_row(feed_id, feed_url, it, fetched_at))
            inserted = 0
            if to_insert:
                # A concurrent worker may store the same story first: skip, never fail.
                insert = postgresql.insert if not self.is_sqlite else sqlite.insert
                result = conn.execute(insert(item).on_conflict_do_nothing(), to_insert)
                inserted = max(result.rowcount, 0) if result.rowcount is not None else 0
                if result.rowcount is None or result.rowcount < 0:
                    inserted = len(to_insert)
            changed = [
                (known[key][0], it)
                for key, it in by_key.items()
                if key in known and known[key][1] != it.content_hash
            ]
            if changed:
                conn.execute(
                    update(item)
                    .where(item.c.id == bindparam("b_id"))
                    .values(
                        title=bindparam("b_title"),
                        summary_html=bindparam("b_summary_html"),
                        summary_text=bindparam("b_summary_text"),
                        author=bindparam("b_author"),
                        content_hash=bindparam("b_content_hash"),
                        updated_at=bindparam("b_updated_at"),
                    ),
                    [
                        {
                            "b_id": item_id,
                            "b_title": it.title,
                            "b_summary_html": it.summary_html,
                            "b_summary_text": it.summary_text,
                            "b_author": it.author,
                            "b_content_hash": it.content_hash,
                            "b_updated_at": fetched_at,
                        }
                        for item_id, it in changed
                    ],
                )
        unchanged = len(by_key) - len(fresh) - len(changed)
        return StoreCounts(
            new=inserted,
            updated=len(changed),
            unchanged=unchanged,
            duplicates=duplicates + (len(to_insert) - inserted),
        )

    def list_items(self, limit: int = 50, offset: int = 0) -> list[StoredItem]:
        """Newest first."""
        query = (
            select(item, feed.c.url.label("feed_url"))
            .select_from(item.join(feed, feed.c.id == item.c.feed_id))
            .order_by(item.c.published_at.desc(), item.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._begin() as conn:
            return [_stored_item(row._mapping) for row in conn.execute(query)]

    def count_items(self) -> int:
        with self._begin() as conn:
            return int(conn.execute(select(func.count()).select_from(item)).scalar_one())


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _item_row(feed_id: int, feed_url: str, it: Item, fetched_at: datetime) -> dict[str, Any]:
    return {
        "uid": item_uid(feed_url, it),
        "feed_id": feed_id,
        "guid_key": it.guid_key,
        "link": it.link,
        "title": it.title,
        "summary_html": it.summary_html,
        "summary_text": it.summary_text,
        "author": it.author,
        "language": it.language,
        "published_at": it.published,
        "published_missing": it.published_missing,
        "fetched_at": fetched_at,
        "updated_at": fetched_at,
        "content_hash": it.content_hash,
    }


def _feed_state(row: Any) -> FeedState:
    return FeedState(
        id=row["id"],
        url=row["url"],
        title=row["title"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        body_hash=row["body_hash"],
        interval_minutes=row["interval_minutes"],
        failures=row["failures"],
        gone_count=row["gone_count"],
        enabled=bool(row["enabled"]),
        status=row["status"],
        last_checked_at=row["last_checked_at"],
        next_poll_at=row["next_poll_at"],
        language=row["language"],
        country=row["country"],
        kind=row["kind"],
        site_url=row["site_url"],
        origin=row["origin"],
        last_error=row["last_error"],
        http_status=row["http_status"],
        error_total=row["error_total"],
        last_success_at=row["last_success_at"],
        items=int(row["items"]) if "items" in row else 0,
    )


def _stored_item(row: Any) -> StoredItem:
    return StoredItem(
        id=row["uid"],
        feed=row["feed_url"],
        title=row["title"],
        link=row["link"],
        published=row["published_at"],
        summary=row["summary_html"],
        summary_text=row["summary_text"],
        language=row["language"],
        relevant=row["relevant"],
        us_link=row["us_link"],
        themes=list(row["themes"] or []),
        scores=dict(row["scores"] or {}),
        evidence=dict(row["evidence"] or {}),
    )
