"""The store: the only module with SQL. SQLite (default, WAL) or PostgreSQL.

The ingest path uses SQLAlchemy Core with one transaction per batch (on PostgreSQL new
items go in by binary COPY through the Core connection's psycopg connection, see
``_pg_copy_items``). It writes items only: the archive's search index follows in a step
after the writes (``archive_store.index_archive``, migration 0008). On SQLite the WAL is
checkpointed by a thread of the store (``sqlite_checkpoint``), not by the writer's commits;
on PostgreSQL item batches commit asynchronously and check their feeds once (0009). Claims use
``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite a single UPDATE ... RETURNING is atomic,
and SQLite is for one worker only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    JSON,
    Boolean,
    Connection,
    Dialect,
    Engine,
    Integer,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from pipeline.adapters import fork_gate
from pipeline.adapters.schema import UTCDateTime, feed, item, metadata
from pipeline.adapters.sqlite_checkpoint import WalCheckpointer
from pipeline.core.errors import StorageError
from pipeline.core.models import FeedSource, FeedState, Item, StoreCounts
from pipeline.core.schedule import PollRecord

log = logging.getLogger(__name__)


UID_LENGTH = 20


def item_uid(feed_url: str, it: Item) -> str:
    """The public id of an item: its story URL when it has one, else its feed and guid."""
    basis = it.link or f"{feed_url}\n{it.guid_key}"
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:UID_LENGTH]


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
    source: str = ""  # the feed's title
    row_id: int = 0  # the database key (alerts and deliveries refer to it)
    # the feed gave no usable date: ``published`` is when the item was first fetched
    published_missing: bool = False


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
        self._checkpointer: WalCheckpointer | None = None
        self._checkpointer_lock = threading.Lock()
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def insert_ignoring(self, table: Table, *keys: str) -> Any:
        """``INSERT ... ON CONFLICT (keys) DO NOTHING`` on either engine."""
        dialect = sqlite if self.is_sqlite else postgresql
        return dialect.insert(table).on_conflict_do_nothing(index_elements=list(keys))

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        try:
            return self.engine.url.render_as_string(hide_password=True)
        except AttributeError:
            return self.url

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        self.engine.dispose()

    def _wrote_items(self, counts: Sequence[StoreCounts]) -> None:
        """After a commit of item batches: on a SQLite file, count the items towards the
        next WAL checkpoint, which runs on the checkpointer's thread (sqlite_checkpoint)."""
        database = self.engine.url.database
        if not self.is_sqlite or not database or database == ":memory:":
            return
        written = sum(c.new + c.updated for c in counts)
        if not written:
            return
        if self._checkpointer is None:
            with self._checkpointer_lock:
                if self._checkpointer is None:
                    self._checkpointer = WalCheckpointer(database, SQLITE_CHECKPOINT_ITEMS)
        self._checkpointer.wrote(written)

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        # SQLite: inside the fork gate, so that no fork copies this thread mid-call
        gate = fork_gate.GATE.inside() if self.is_sqlite else nullcontext()
        try:
            with gate, self.engine.begin() as conn:
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
        write = PollWrite(
            feed_id,
            record,
            etag=etag,
            last_modified=last_modified,
            body_hash=body_hash,
            new_url=new_url,
            title=title,
        )
        with self._begin() as conn:
            self._record_polls(conn, [write])

    def write_polls(self, writes: Sequence[PollWrite]) -> list[StoreCounts]:
        """``store_items`` then ``record_poll`` for each write, all in one transaction, with
        one set of statements for all of them: the poller's writer flushes many feeds at
        once this way. Returns each write's item counts, in order."""
        if not writes:
            return []
        batches = [
            _Batch(w.feed_id, w.feed_url, w.items, w.fetched_at or w.record.checked_at, w.tags)
            for w in writes
        ]
        with self._begin() as conn:
            counts = self._store_batches(conn, batches)
            self._record_polls(conn, writes)
        self._wrote_items(counts)
        return counts

    def _record_polls(self, conn: Connection, writes: Sequence[PollWrite]) -> None:
        """The feed updates of ``record_poll`` for many polls: one executemany per shape of
        update. A feed that moved (``new_url``) is written on its own, in order, since
        whether it may take its new URL depends on the feeds written before it."""
        titles: list[dict[str, Any]] = []
        groups: dict[tuple[bool, tuple[str, ...]], list[dict[str, Any]]] = {}
        moved: list[PollWrite] = []
        for write in writes:
            if write.new_url:
                moved.append(write)
                continue
            if write.title:
                titles.append({"b_id": write.feed_id, "b_title": write.title[:300]})
            values = _poll_values(write)
            params = {f"b_{key}": value for key, value in values.items()}
            params["b_id"] = write.feed_id
            groups.setdefault((write.record.succeeded, tuple(values)), []).append(params)
        if titles:
            # Fill a missing title from the feed itself; an editor's title wins.
            conn.execute(_FILL_TITLE, titles)
        for (succeeded, keys), rows in groups.items():
            statement = update(feed).where(feed.c.id == bindparam("b_id"))
            statement = statement.values({key: bindparam(f"b_{key}") for key in keys})
            if not succeeded:
                statement = statement.values(error_total=feed.c.error_total + 1)
            conn.execute(statement, rows)
        for write in moved:
            values = _poll_values(write)
            if not write.record.succeeded:
                values["error_total"] = feed.c.error_total + 1
            if write.title:
                conn.execute(_FILL_TITLE, {"b_id": write.feed_id, "b_title": write.title[:300]})
            taken = conn.execute(select(feed.c.id).where(feed.c.url == write.new_url)).scalar()
            if taken is None:
                values["url"] = write.new_url
            else:
                log.warning(
                    "feed %s moved to %s, which is already a feed", write.feed_id, write.new_url
                )
            conn.execute(update(feed).where(feed.c.id == write.feed_id).values(**values))

    # -- items ----------------------------------------------------------------------------

    def store_items(
        self,
        feed_id: int,
        feed_url: str,
        items: Sequence[Item],
        fetched_at: datetime,
        tags: Mapping[str, Tags] | None = None,
    ) -> StoreCounts:
        """Insert new items, update changed ones, skip stories already stored from any feed.

        ``tags`` (by guid_key) are stored with new and changed items, so items are tagged
        at poll time.

        One transaction for the batch. Identity within a feed is ``guid_key``; across feeds
        it is the canonical link (a unique index), so the same story URL is stored once.
        """
        return self.store_batches([FeedItems(feed_id, feed_url, items, tags)], fetched_at)[0]

    def store_batches(
        self,
        batches: Sequence[FeedItems | tuple[int, str, Sequence[Item]]],
        fetched_at: datetime,
    ) -> list[StoreCounts]:
        """``store_items`` for several feeds' batches, ``(feed_id, feed_url, items)`` or
        FeedItems (with tags), in one transaction. The result is what storing them one after
        the other would give, per batch and in order; the work is one lookup, one insert and
        one update for all of them."""
        work = [_Batch(b[0], b[1], b[2], fetched_at, _batch_tags(b)) for b in batches]
        if not any(b.items for b in work):
            return [StoreCounts() for _ in work]
        with self._begin() as conn:
            counts = self._store_batches(conn, work)
        self._wrote_items(counts)
        return counts

    def _store_batches(self, conn: Connection, batches: Sequence[_Batch]) -> list[StoreCounts]:
        if self.is_sqlite:
            _sqlite_write_cache(conn)
        else:
            # The ingest's commits are not waited for on disk (as SQLite's WAL with
            # synchronous=NORMAL): a crash can lose the last fraction of a second of them,
            # never a part of one, and a batch commits its feeds' poll state (validators,
            # body hash) with its items, so a lost batch is a poll that did not happen and
            # the next poll fetches it again. Any later synchronous commit (the delivery
            # ledger's) makes everything before it durable, so nothing read from a lost
            # batch can outlive it. Waiting for the WAL flush of a 2,000-item batch (8-17 MB
            # measured) cost ~10% of the insert rate (bench/store.py: 20,492 -> 22,868/s).
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
        counts: list[StoreCounts] = []
        start = 0
        while start < len(batches):
            # A round is a run of batches for distinct feeds; a feed seen again (two polls of
            # one feed in a call) starts the next round, so it sees what the first stored.
            feeds: set[int] = set()
            end = start
            while end < len(batches) and batches[end].feed_id not in feeds:
                feeds.add(batches[end].feed_id)
                end += 1
            counts += self._store_round(conn, batches[start:end])
            start = end
        return counts

    def _store_round(self, conn: Connection, batches: Sequence[_Batch]) -> list[StoreCounts]:
        keyed: list[dict[str, Item]] = []
        for batch in batches:
            by_key: dict[str, Item] = {}
            for it in batch.items:
                by_key.setdefault(it.guid_key, it)
            keyed.append(by_key)
        known = self._known_items(
            conn,
            [(b.feed_id, key) for b, by_key in zip(batches, keyed, strict=True) for key in by_key],
        )
        fresh_links = {
            it.link
            for b, by_key in zip(batches, keyed, strict=True)
            for key, it in by_key.items()
            if it.link and (b.feed_id, key) not in known
        }
        elsewhere = self._existing_links(conn, sorted(fresh_links))
        seen_links: set[str] = set()  # stored earlier in this round: "elsewhere" for later feeds
        fresh_items: list[tuple[_Batch, Item]] = []  # to insert, in order
        owners: list[int] = []
        changes: list[dict[str, Any]] = []
        fresh = [0] * len(batches)
        changed = [0] * len(batches)
        duplicates = [0] * len(batches)
        for index, (batch, by_key) in enumerate(zip(batches, keyed, strict=True)):
            for key, it in by_key.items():
                hit = known.get((batch.feed_id, key))
                if hit is not None:
                    if hit[1] != it.content_hash:
                        changed[index] += 1
                        changes.append(_change_row(hit[0], it, batch))
                    continue
                fresh[index] += 1
                if it.link:
                    if it.link in elsewhere or it.link in seen_links:
                        duplicates[index] += 1
                        continue
                    seen_links.add(it.link)
                fresh_items.append((batch, it))
                owners.append(index)
        inserted = self._insert_items(conn, fresh_items, owners, len(batches))
        if changes:
            # The changed items are marked archive_pending (in _UPDATE_ITEM): the archive
            # index follows in archive_store.index_archive, after the writes (migration 0008).
            conn.execute(_UPDATE_ITEM, changes)
        return [
            StoreCounts(
                new=inserted[i],
                updated=changed[i],
                unchanged=len(keyed[i]) - fresh[i] - changed[i],
                duplicates=duplicates[i] + owners.count(i) - inserted[i],
            )
            for i in range(len(batches))
        ]

    def _known_items(
        self, conn: Connection, pairs: Sequence[tuple[int, str]]
    ) -> dict[tuple[int, str], tuple[int, str]]:
        """(feed_id, guid_key) → (id, content_hash) of the stored ones among ``pairs``: one
        query, the pairs passed as two arrays (PostgreSQL) or one JSON array (SQLite)."""
        if not pairs:
            return {}
        if self.is_sqlite:
            params: dict[str, Any] = {"pairs": json.dumps(pairs)}
            rows = conn.execute(_SQLITE_KNOWN, params)
        else:
            params = {"feed_ids": [p[0] for p in pairs], "keys": [p[1] for p in pairs]}
            rows = conn.exec_driver_sql(_PG_KNOWN, params)
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}

    def _existing_links(self, conn: Connection, links: Sequence[str]) -> set[str]:
        if not links:
            return set()
        if self.is_sqlite:
            rows = conn.execute(_SQLITE_LINKS, {"links": json.dumps(links)})
        else:
            rows = conn.exec_driver_sql(_PG_LINKS, {"links": list(links)})
        return {r[0] for r in rows}

    def _insert_items(
        self, conn: Connection, fresh: list[tuple[_Batch, Item]], owners: list[int], batches: int
    ) -> list[int]:
        """Insert the ``fresh`` items, skipping any that a concurrent writer stored first
        (never failing on them). Returns how many were inserted per batch (``owners`` maps
        each to its batch).

        Each row is built bound as the column types would bind it (``_RowBinder``) and all
        go to the driver in one call: SQLAlchemy's per-row parameter processing cost more
        than SQLite's insert itself."""
        inserted = [0] * batches
        if not fresh:
            return inserted
        binder = _RowBinder(conn.dialect)
        rows: list[tuple[Any, ...]] = []
        if self.is_sqlite:
            rows = [binder.row(batch, it) for batch, it in fresh]
            # executemany of one INSERT: the sqlite3 module loops in C.
            result = conn.exec_driver_sql(_SQLITE_INSERT, rows)
            if result.rowcount is None or result.rowcount < 0 or result.rowcount == len(rows):
                for owner in owners:
                    inserted[owner] += 1
                return inserted
            # Some were skipped: the ones now stored under our (feed, guid) are ours.
            ours = self._known_items(conn, [(row[1], row[2]) for row in rows])
            for row, owner in zip(rows, owners, strict=True):
                inserted[owner] += (row[1], row[2]) in ours
            return inserted
        # PostgreSQL. The batch's feeds are locked as item's foreign key locked them for every
        # row until migration 0009: a feed deleted meanwhile waits for this commit (then its
        # delete trigger takes these items too), and one already gone refuses the batch.
        feed_ids = sorted({batch.feed_id for batch, _ in fresh})
        found = {row[0] for row in conn.exec_driver_sql(_PG_LOCK_FEEDS, {"ids": feed_ids})}
        if len(found) < len(feed_ids):
            missing = ", ".join(str(n) for n in feed_ids if n not in found)
            raise StorageError(f"cannot store items of feed {missing}: no such feed (removed?)")
        # The rows are COPYed (binary) into item, in a savepoint: the fastest way in, client
        # and server side. COPY knows no ON CONFLICT, so when a concurrent writer stored one
        # of them first (a unique violation) the savepoint is rolled back and the rows go in
        # by one INSERT ... SELECT FROM unnest(column arrays) ... ON CONFLICT DO NOTHING,
        # which skips those.
        if _pg_copy_items(conn, (binder.row(batch, it) for batch, it in fresh), rows):
            for owner in owners:
                inserted[owner] += 1
            return inserted
        rows = [binder.row(batch, it) for batch, it in fresh]
        params = {f"c{n}": list(values) for n, values in enumerate(zip(*rows, strict=True))}
        owner_of = {row[1]: owner for row, owner in zip(rows, owners, strict=True)}
        for (feed_id,) in conn.exec_driver_sql(_PG_INSERT, params):
            inserted[owner_of[feed_id]] += 1
        return inserted

    def _items_query(self) -> Any:
        return select(
            item, feed.c.url.label("feed_url"), feed.c.title.label("feed_title")
        ).select_from(item.join(feed, feed.c.id == item.c.feed_id))

    def list_items(self, limit: int = 50, offset: int = 0) -> list[StoredItem]:
        """Newest first."""
        query = (
            self._items_query()
            .order_by(item.c.published_at.desc(), item.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._begin() as conn:
            return [_stored_item(row._mapping) for row in conn.execute(query)]

    def items_between(
        self, since: datetime, until: datetime, *, relevant_only: bool = False
    ) -> list[StoredItem]:
        """Items published in [since, until), newest first."""
        query = self._items_query().where(item.c.published_at >= since, item.c.published_at < until)
        if relevant_only:
            query = query.where(item.c.relevant.is_(True))
        query = query.order_by(item.c.published_at.desc(), item.c.id.desc())
        with self._begin() as conn:
            return [_stored_item(row._mapping) for row in conn.execute(query)]

    def get_item(self, uid: str) -> StoredItem | None:
        """One item by its public id (or a unique prefix of it, as git accepts)."""
        if len(uid) == UID_LENGTH:  # a whole id: an index look-up on both engines
            query = self._items_query().where(item.c.uid == uid).limit(2)
        else:
            query = self._items_query().where(item.c.uid.like(f"{uid}%")).limit(2)
        with self._begin() as conn:
            rows = conn.execute(query).all()
        return _stored_item(rows[0]._mapping) if len(rows) == 1 else None

    def get_item_by_row(self, row_id: int) -> StoredItem | None:
        with self._begin() as conn:
            row = conn.execute(self._items_query().where(item.c.id == row_id)).first()
        return _stored_item(row._mapping) if row else None

    def items_fetched_since(self, since: datetime | None) -> list[StoredItem]:
        """Items fetched since ``since`` (all when None), oldest first: what `retag` redoes."""
        query = self._items_query()
        if since is not None:
            query = query.where(item.c.fetched_at >= since)
        with self._begin() as conn:
            return [_stored_item(r._mapping) for r in conn.execute(query.order_by(item.c.id))]

    def set_tags(self, tagged: Sequence[tuple[int, Tags]]) -> int:
        """Store new tags for items (by row id), in one transaction."""
        if not tagged:
            return 0
        statement = (
            update(item)
            .where(item.c.id == bindparam("b_id"))
            .values(
                relevant=bindparam("b_relevant"),
                us_link=bindparam("b_us_link"),
                themes=bindparam("b_themes"),
                scores=bindparam("b_scores"),
                evidence=bindparam("b_evidence"),
                archive_pending=True,  # item_theme follows in archive_store.index_archive
            )
        )
        rows = []
        for row_id, result in tagged:
            values = _tag_values({"x": result}, "x")
            rows.append({"b_id": row_id, **{f"b_{k}": v for k, v in values.items()}})
        with self._begin() as conn:
            conn.execute(statement, rows)
        return len(rows)

    def count_items(self) -> int:
        with self._begin() as conn:
            return int(conn.execute(select(func.count()).select_from(item)).scalar_one())


# SQLite's write settings (bench/store.py, issue 2). A batch of 2,000 new items dirties
# ~16 MB of pages (the rows, their indexes, the FTS5 segment): with the default 2 MB page
# cache they spill to the WAL during the INSERT and are written again at commit. And the
# WAL is checkpointed (copied into the database and synced) by the commit that takes it past
# wal_autocheckpoint pages: every batch with the default 1,000 (4 MB), every few with 8,192
# (32 MB), and pages written by several batches are copied once. Together a new item costs
# ~30% less CPU. The larger cache is set on the connections that write items only.
SQLITE_WAL_AUTOCHECKPOINT = 8192  # pages
# The connections that write item batches leave the checkpoints to a thread of their own
# (sqlite_checkpoint.WalCheckpointer), run every SQLITE_CHECKPOINT_ITEMS items written (a
# 2,000-item batch writes ~8 MB of pages to the WAL, rows and index leaves: measured 7.6-8.1);
# their own automatic checkpoint is kept as a backstop at four times the usual size.
SQLITE_CHECKPOINT_ITEMS = 10_000
SQLITE_WRITER_AUTOCHECKPOINT = 4 * SQLITE_WAL_AUTOCHECKPOINT
SQLITE_WRITE_CACHE_KIB = 32768
# New databases get 16 KB pages (SQLite's default is 4 KB): an item row is a few KB (its
# HTML, text, tags and evidence), which with 4 KB pages goes to overflow pages, partly
# empty; with 16 KB pages rows share pages whole. New items are stored about twice as fast
# (bench/store.py: ~28,000-34,000/s against ~55,000-64,000/s, 2,000-item transactions,
# 16,000 items onto 20,000) and the file is half the size (157 MB against 83 MB there); 32
# and 64 KB gave no more. The pragma only acts before a database's first table exists: an
# existing database keeps its page size unless rebuilt offline (journal_mode=DELETE, this
# page_size, VACUUM, journal_mode=WAL).
SQLITE_PAGE_SIZE = 16384


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # before WAL creates the file
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT}")
    cursor.close()


def _sqlite_write_cache(conn: Connection) -> None:
    """Give a connection that writes item batches the larger page cache and the backstop
    checkpoint size (once): its checkpoints run on the store's checkpointer thread."""
    info = conn.connection.info
    if not info.get("qasid_write_cache"):
        conn.exec_driver_sql(f"PRAGMA cache_size=-{SQLITE_WRITE_CACHE_KIB}")
        conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint={SQLITE_WRITER_AUTOCHECKPOINT}")
        info["qasid_write_cache"] = True


class Tags(Protocol):
    """What the tagger decided about an item (pipeline.core.tagger.TagResult fits)."""

    relevant: bool
    us_link: bool
    themes: list[str]
    scores: dict[str, float]
    evidence: dict[str, list[str]]


def _tag_values(tags: Mapping[str, Tags] | None, key: str) -> dict[str, Any]:
    result = tags.get(key) if tags else None
    if result is None:
        return {"relevant": None, "us_link": None, "themes": None, "scores": None, "evidence": None}
    return {
        "relevant": result.relevant,
        "us_link": result.us_link,
        "themes": list(result.themes),
        "scores": dict(result.scores),
        "evidence": {k: list(v) for k, v in result.evidence.items()},
    }


class FeedItems(NamedTuple):
    """One feed's batch for ``Store.store_batches`` (a plain 3-tuple works too)."""

    feed_id: int
    feed_url: str
    items: Sequence[Item]
    tags: Mapping[str, Tags] | None = None


class _Batch(NamedTuple):
    feed_id: int
    feed_url: str
    items: Sequence[Item]
    fetched_at: datetime
    tags: Mapping[str, Tags] | None


def _batch_tags(batch: FeedItems | tuple[int, str, Sequence[Item]]) -> Mapping[str, Tags] | None:
    return batch[3] if len(batch) > 3 else None


@dataclass(frozen=True)
class PollWrite:
    """One poll for ``Store.write_polls``: what ``record_poll`` takes and, for a feed that
    was parsed, the items ``store_items`` would store (with their fetch time and tags)."""

    feed_id: int
    record: PollRecord
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    new_url: str | None = None
    title: str | None = None
    feed_url: str = ""
    items: Sequence[Item] = ()
    fetched_at: datetime | None = None
    tags: Mapping[str, Tags] | None = None


def _poll_values(write: PollWrite) -> dict[str, Any]:
    """The feed columns ``record_poll`` sets (a failure also adds one to error_total)."""
    record = write.record
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
        if write.etag is not None or write.last_modified is not None or write.body_hash is not None:
            values.update(etag=write.etag, last_modified=write.last_modified)
        if write.body_hash is not None:
            values["body_hash"] = write.body_hash
    return values


_FILL_TITLE = (
    update(feed)
    .where(feed.c.id == bindparam("b_id"), feed.c.title == "")
    .values(title=bindparam("b_title"))
)

_TAG_COLUMNS = ("relevant", "us_link", "themes", "scores", "evidence")

_UPDATE_ITEM = (
    update(item)
    .where(item.c.id == bindparam("b_id"))
    .values(
        {
            name: bindparam(f"b_{name}")
            for name in (
                "title",
                "summary_html",
                "summary_text",
                "author",
                "source_name",
                "content_hash",
                "updated_at",
                *_TAG_COLUMNS,
            )
        }
    )
    # the archive index (search, item_theme) follows in archive_store.index_archive
    .values(archive_pending=True)
)


def _change_row(item_id: int, it: Item, batch: _Batch) -> dict[str, Any]:
    row = {
        "b_id": item_id,
        "b_title": it.title,
        "b_summary_html": it.summary_html,
        "b_summary_text": it.summary_text,
        "b_author": it.author,
        "b_source_name": it.source,
        "b_content_hash": it.content_hash,
        "b_updated_at": batch.fetched_at,
    }
    for key, value in _tag_values(batch.tags, it.guid_key).items():
        row[f"b_{key}"] = value
    return row


# The item lookups of the batch path. SQLite takes the keys as one JSON array (json_each);
# CROSS JOIN makes it the outer loop, so each key is one probe of the unique index.
_SQLITE_KNOWN = text(
    "SELECT item.feed_id, item.guid_key, item.id, item.content_hash"
    " FROM json_each(:pairs) AS k CROSS JOIN item"
    " WHERE item.feed_id = json_extract(k.value, '$[0]')"
    " AND item.guid_key = json_extract(k.value, '$[1]')"
)
# `link <> ''` lets both engines use the partial unique index on link.
_SQLITE_LINKS = text(
    "SELECT item.link FROM json_each(:links) AS k CROSS JOIN item"
    " WHERE item.link = k.value AND item.link <> ''"
)
# PostgreSQL takes them as arrays: one parameter each, whatever the number of keys, bound
# in binary (psycopg's %(name)b: the text form quotes every string with a regular expression).
_PG_KNOWN = (
    "SELECT item.feed_id, item.guid_key, item.id, item.content_hash"
    " FROM unnest(CAST(%(feed_ids)b AS INTEGER[]), CAST(%(keys)b AS TEXT[]))"
    " AS k(feed_id, guid_key)"
    " JOIN item ON item.feed_id = k.feed_id AND item.guid_key = k.guid_key"
)
_PG_LOCK_FEEDS = "SELECT id FROM feed WHERE id = ANY(CAST(%(ids)b AS INTEGER[])) FOR KEY SHARE"
_PG_LINKS = "SELECT link FROM item WHERE link <> '' AND link = ANY(CAST(%(links)b AS TEXT[]))"


_INSERT_COLUMNS = (
    "uid",
    "feed_id",
    "guid_key",
    "link",
    "title",
    "summary_html",
    "summary_text",
    "author",
    "source_name",
    "language",
    "published_at",
    "published_missing",
    "fetched_at",
    "updated_at",
    "content_hash",
    *_TAG_COLUMNS,
    "archive_pending",  # indexed for the archive by archive_store.index_archive
)


_JSON_NULL = json.dumps(None)
_TIME_TYPE = UTCDateTime()


class _RowBinder:
    """New items' rows in _INSERT_COLUMNS order, each value bound as its column type binds
    it one by one (UTCDateTime, JSON, Boolean; checked by the store tests against
    SQLAlchemy's own insert, on both engines), built in one pass per item."""

    # untagged: SQL NULL booleans and JSON null, as SQLAlchemy's JSON type binds None
    _UNTAGGED = (None, None, _JSON_NULL, _JSON_NULL, _JSON_NULL)

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._sqlite = dialect.name == "sqlite"
        self._times: dict[datetime, Any] = {}  # a batch's fetch times repeat, and many dates
        self._true: Any = 1 if self._sqlite else True

    def _time(self, value: datetime) -> Any:
        bound = self._times.get(value)
        if bound is None:
            bound = _TIME_TYPE.process_bind_param(value, self._dialect)
            if self._sqlite:
                # SQLAlchemy's SQLite DATETIME storage format.
                bound = bound.isoformat(" ", timespec="microseconds")
            self._times[value] = bound
        return bound

    def row(self, batch: _Batch, it: Item) -> tuple[Any, ...]:
        result = batch.tags.get(it.guid_key) if batch.tags else None
        if result is None:
            tags: tuple[Any, ...] = self._UNTAGGED
        else:
            values = _tag_values(batch.tags, it.guid_key)
            relevant, us_link = values["relevant"], values["us_link"]
            if self._sqlite:
                relevant = None if relevant is None else int(relevant)
                us_link = None if us_link is None else int(us_link)
            tags = (
                relevant,
                us_link,
                json.dumps(values["themes"]),
                json.dumps(values["scores"]),
                json.dumps(values["evidence"]),
            )
        fetched = self._time(batch.fetched_at)
        return (
            item_uid(batch.feed_url, it),
            batch.feed_id,
            it.guid_key,
            it.link,
            it.title,
            it.summary_html,
            it.summary_text,
            it.author,
            it.source,
            it.language,
            self._time(it.published),
            int(it.published_missing) if self._sqlite else it.published_missing,
            fetched,
            fetched,
            it.content_hash,
            *tags,
            self._true,
        )


def _pg_type(column_type: Any) -> str:
    """The PostgreSQL type a column's bound values have (JSON: the encoded text's type)."""
    if isinstance(column_type, UTCDateTime):
        return "timestamptz"
    if isinstance(column_type, JSON):
        return "json"
    if isinstance(column_type, Boolean):
        return "bool"
    if isinstance(column_type, Integer):
        return "int4"
    return "text"  # Text and String(n): the column's own type still checks the length


_SQLITE_INSERT = (
    f"INSERT INTO item ({', '.join(_INSERT_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in _INSERT_COLUMNS)}) ON CONFLICT DO NOTHING"
)
# COPY (binary) of new items on PostgreSQL, through the Core connection's psycopg
# connection (SQLAlchemy has no COPY): binary COPY sends each value in its type's binary
# form, encoded by psycopg's C dumpers (JSON columns as the JSON text the column type
# binds: json's binary form is its text).
_PG_COPY = f"COPY item ({', '.join(_INSERT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"


_PG_COPY_TYPES = [
    "text" if pg == "json" else pg for pg in (_pg_type(item.c[n].type) for n in _INSERT_COLUMNS)
]


def _pg_copy_items(
    conn: Connection, rows: Iterable[tuple[Any, ...]], written: list[tuple[Any, ...]]
) -> bool:
    """COPY the rows (bound values) into item in a savepoint, appending each to ``written``.
    The rows are built as they are written, so the server inserts the first ones while the
    client builds the next (the two cores overlap). False, with nothing inserted, when one
    of them is stored already (a concurrent writer)."""
    from psycopg import errors

    driver: Any = conn.connection.driver_connection
    try:
        with conn.begin_nested(), driver.cursor() as cursor, cursor.copy(_PG_COPY) as copy:
            copy.set_types(_PG_COPY_TYPES)
            for row in rows:
                written.append(row)
                copy.write_row(row)
    except errors.UniqueViolation:
        return False
    return True


# Binary parameters (psycopg's %(name)b): the text form of an array quotes every element
# (a regular expression per string), which cost more client CPU than the server's insert.
_PG_INSERT = (
    f"INSERT INTO item ({', '.join(_INSERT_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(
        f"CAST(%(c{n})b AS {_pg_type(item.c[name].type)}[])"
        for n, name in enumerate(_INSERT_COLUMNS)
    )
    + ") ON CONFLICT DO NOTHING RETURNING feed_id"
)


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
        source=row.get("source_name") or row.get("feed_title") or "",
        row_id=row["id"],
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
        published_missing=bool(row["published_missing"]),
    )
