"""What the web archive and the editor dashboard read: public editions (by theme), item
search, theme volumes, counts.

The lookup tables and the search index come from migration 0005. Public editions are
indexed (``edition_theme``, ``edition_item``) by triggers in the database. Items are indexed
(search, ``item_theme``) off the ingest path since migration 0008: the store marks the items
it inserts or changes ``archive_pending``, and ``index_archive``, a batched, idempotent step
run after every poll run, before digests and public editions are built and by ``qasid
demo``, indexes them; deleted items leave the index by themselves. Until the step an item is
not found (a changed one is found by its previous text):

- search: PostgreSQL matches ``item.search_vector @@ plainto_tsquery('english', q)`` (a
  tsvector column filled by ``index_archive``, with a GIN index); SQLite matches the FTS5
  table ``item_fts`` (porter stemming). A query is plain words, all of which must appear
  (stemmed); there is no query language.
- results are newest first (published_at, then id), by plans whose cost is bounded
  whatever the word, common, rare or absent (``_search_postgres``, ``_search_sqlite``):
  sorting every match of a common word, or walking every item for an absent one, would
  cost up to seconds on 500,000 items.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.sql import Executable

from pipeline.adapters.schema import UTCDateTime, edition, feed, item, subscriber, suppression
from pipeline.adapters.storage import Store

# The tables of migration 0005 (not in schema.metadata: they belong to the archive, and the
# database fills them; ``Store.require_schema`` does not ask for them).
archive_metadata = MetaData()
item_theme = Table(
    "item_theme",
    archive_metadata,
    Column("item_id", Integer, primary_key=True),
    Column("theme", String(64), primary_key=True),
    Column("published_at", UTCDateTime(), nullable=False),
)
edition_theme = Table(
    "edition_theme",
    archive_metadata,
    Column("edition_id", Integer, primary_key=True),
    Column("theme", String(64), primary_key=True),
    Column("period_end", UTCDateTime(), nullable=False),
)
edition_item = Table(
    "edition_item",
    archive_metadata,
    Column("edition_id", Integer, primary_key=True),
    Column("item_uid", String(32), primary_key=True),
)

# PostgreSQL search: how many of the newest items a common word is looked for among first.
PG_RECENT_ITEMS = 2000
# ... and up to how many estimated matches are simply all fetched and sorted.
PG_SORT_ALL = 500

MAX_QUERY_CHARS = 200
MAX_QUERY_WORDS = 8
# SQLite search: the newest stored matches sorted per page, at least this many (see
# ArchiveStore._search_sqlite), and how far out of fetch order an item may be stored
# (FUTURE_SLACK of the normaliser, plus a poll writer's batch) before the window grows.
SQLITE_WINDOW = 100
SQLITE_ORDER_SLACK = timedelta(hours=1)

_WORD = re.compile(r"\w", re.UNICODE)

# index_archive: items per transaction.
ARCHIVE_INDEX_BATCH = 2000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EditionSummary:
    """A public edition as the archive list shows it (without its content)."""

    id: int
    frequency: str
    period_start: datetime
    period_end: datetime
    local_date: str
    subject: str
    item_count: int
    themes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchHit:
    uid: str
    title: str
    link: str
    source: str
    published: datetime
    summary_text: str
    edition_id: int | None = None  # the first public edition it appeared in
    published_missing: bool = False  # no date from the feed: ``published`` is first seen


@dataclass(frozen=True)
class ThemeItem:
    uid: str
    title: str
    link: str
    source: str
    published: datetime
    summary_text: str
    themes: tuple[str, ...]
    edition_id: int | None = None
    published_missing: bool = False  # no date from the feed: ``published`` is first seen


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    rows: list[T]
    page: int
    has_next: bool
    extra: dict[str, Any] = field(default_factory=dict)


def query_words(query: str) -> list[str]:
    """The words of a search box entry: whitespace-separated chunks holding a letter or
    digit, at most MAX_QUERY_WORDS of them, from the first MAX_QUERY_CHARS characters."""
    chunks = query[:MAX_QUERY_CHARS].split()
    return [c for c in chunks if _WORD.search(c)][:MAX_QUERY_WORDS]


def fts5_match(words: Sequence[str]) -> str:
    """An FTS5 MATCH expression with every word as a quoted string (so nothing in it is
    query syntax), all of them required."""
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


class ArchiveStore:
    """Reads for the archive pages and the editor dashboard, through a Store's engine."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- editions -------------------------------------------------------------------------

    def editions(
        self, page: int = 1, per_page: int = 20, theme: str | None = None
    ) -> Page[EditionSummary]:
        """Public editions newest first (those with a section on ``theme`` when given).
        Empty editions (a period with no stories) keep their URL but are not listed."""
        page = max(1, page)
        # The page's ids first, from an index alone (a covering index: skipping rows for the
        # offset reads no edition row, each of which holds a whole digest), then its rows.
        ids_query: Executable
        if theme:
            ids_query = (
                select(edition_theme.c.edition_id)
                .where(edition_theme.c.theme == theme)
                .order_by(edition_theme.c.period_end.desc(), edition_theme.c.edition_id.desc())
                .limit(bindparam("limit"))
                .offset(bindparam("offset"))
            )
        elif self.store.is_sqlite:  # its planner prefers ix_edition_kind_period_end
            ids_query = _SQLITE_LISTING
        else:
            ids_query = (
                select(edition.c.id)
                .where(edition.c.kind == "public", edition.c.item_count > 0)
                .order_by(edition.c.period_end.desc(), edition.c.id.desc())
                .limit(bindparam("limit"))
                .offset(bindparam("offset"))
            )
        bounds = {"limit": per_page + 1, "offset": (page - 1) * per_page}
        with self.store._begin() as conn:
            found = [int(i) for i in conn.execute(ids_query, bounds).scalars()]
            ids = found[:per_page]
            rows = {}
            themes: dict[int, list[str]] = defaultdict(list)
            if ids:
                details = select(
                    edition.c.id,
                    edition.c.frequency,
                    edition.c.period_start,
                    edition.c.period_end,
                    edition.c.local_date,
                    edition.c.subject,
                    edition.c.item_count,
                ).where(edition.c.id.in_(ids))
                rows = {row.id: row for row in conn.execute(details)}
                for edition_id, theme_id in conn.execute(
                    select(edition_theme.c.edition_id, edition_theme.c.theme).where(
                        edition_theme.c.edition_id.in_(ids)
                    )
                ):
                    themes[edition_id].append(theme_id)
        summaries = [
            EditionSummary(
                id=row.id,
                frequency=row.frequency,
                period_start=row.period_start,
                period_end=row.period_end,
                local_date=row.local_date,
                subject=row.subject,
                item_count=row.item_count,
                themes=tuple(themes.get(row.id, ())),
            )
            for row in (rows.get(i) for i in ids)
            if row is not None
        ]
        return Page(summaries, page, len(found) > per_page)

    def versions(self) -> tuple[int, int, int]:
        """(newest item id, newest item not yet indexed or 0, newest listed public edition
        id): what a cached public page was rendered from (a page rendered before
        ``index_archive`` ran is not given again after it). One cheap statement (three
        index probes)."""
        with self.store._begin() as conn:
            row = conn.execute(_VERSIONS).one()
        return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)

    def latest_editions(self, limit: int = 20) -> list[tuple[int, str, datetime, dict[str, Any]]]:
        """(id, subject, created_at, content) of the newest public editions (the feed)."""
        query = (
            select(edition.c.id, edition.c.subject, edition.c.created_at, edition.c.content)
            .where(edition.c.kind == "public", edition.c.item_count > 0)
            .order_by(edition.c.period_end.desc(), edition.c.id.desc())
            .limit(limit)
        )
        with self.store._begin() as conn:
            return [
                (row.id, row.subject, row.created_at, dict(row.content or {}))
                for row in conn.execute(query)
            ]

    def subscriber(self, subscriber_id: int) -> tuple[str, str] | None:
        """(email, time zone) of a subscriber, for their "view in browser" page."""
        with self.store._begin() as conn:
            row = conn.execute(
                select(subscriber.c.email, subscriber.c.timezone).where(
                    subscriber.c.id == subscriber_id
                )
            ).first()
        return (str(row.email), str(row.timezone)) if row else None

    def first_editions(self, uids: Sequence[str]) -> dict[str, int]:
        """item uid → id of the first public edition that showed it."""
        if not uids:
            return {}
        query = (
            select(edition_item.c.item_uid, func.min(edition_item.c.edition_id))
            .where(edition_item.c.item_uid.in_(list(uids)))
            .group_by(edition_item.c.item_uid)
        )
        with self.store._begin() as conn:
            return {uid: int(eid) for uid, eid in conn.execute(query)}

    # -- search ---------------------------------------------------------------------------

    def search(self, query: str, page: int = 1, per_page: int = 20) -> Page[SearchHit]:
        """Items whose title or text holds every word of ``query``, newest first."""
        page = max(1, page)
        words = query_words(query)
        if not words:
            return Page([], page, False)
        offset = (page - 1) * per_page
        with self.store._begin() as conn:
            if self.store.is_sqlite:
                rows = self._search_sqlite(conn, words, per_page + 1, offset)
            else:
                rows = self._search_postgres(conn, " ".join(words), per_page + 1, offset)
        editions = self.first_editions([row.uid for row in rows[:per_page]])
        hits = [
            SearchHit(
                uid=row.uid,
                title=row.title,
                link=row.link,
                source=row.source or "",
                published=_utc(row.published_at),
                summary_text=row.summary_text,
                edition_id=editions.get(row.uid),
                published_missing=bool(row.published_missing),
            )
            for row in rows[:per_page]
        ]
        return Page(hits, page, len(rows) > per_page)

    def _search_postgres(self, conn: Any, query: str, limit: int, offset: int) -> Any:
        """Newest first, with a plan whose cost does not depend on how the planner guesses a
        word's frequency (for a word it has no statistics on it guesses ~0.4%, and walking
        the published_at index newest first for a word that is not there reads every row):

        1. a common word (estimated in at least 1% of items) is looked for among the newest
           PG_RECENT_ITEMS items only: a full page there is the right page;
        2. a query estimated to match at most PG_SORT_ALL items: all its matches from the
           GIN index (a bitmap plan), sorted;
        3. otherwise the GIN index ANDed with a published_at range (bitmap plans only),
           the newest days expected to hold three pages of matches, widened eightfold
           until a page is full: a range holding a full page holds the newest matches.
        """
        params = {"q": query, "limit": limit, "offset": offset}
        estimate = conn.execute(_PG_ESTIMATE, params).scalar_one()[0]["Plan"]["Plan Rows"]
        total = conn.execute(_PG_TOTAL).scalar_one() or 0
        if total and estimate >= 0.01 * total and offset + limit <= PG_RECENT_ITEMS // 10:
            rows = conn.execute(_PG_RECENT, {**params, "recent": PG_RECENT_ITEMS}).all()
            if len(rows) == limit:
                return rows
        newest, oldest = conn.execute(_PG_SPAN).one()  # before bitmap-only: index probes
        if newest is None:
            return []
        conn.execute(_PG_BITMAP_ONLY)  # this transaction only
        if estimate <= PG_SORT_ALL:  # few matches (as far as the planner knows): sort them
            return conn.execute(_PG_SEARCH_ALL, params).all()
        span = max((newest - oldest).total_seconds() / 86400, 1.0)
        # A range expected to hold three pages' worth (matches spread evenly), growing
        # eightfold while it holds less than a page; each try is one GIN scan.
        days = 3 * (offset + limit) * span / max(estimate, 1)
        while days < span:
            since = newest - timedelta(days=days)
            rows = conn.execute(_PG_SEARCH_SINCE, {**params, "since": since}).all()
            if len(rows) == limit:
                return rows
            days *= 8
        return conn.execute(_PG_SEARCH_ALL, params).all()

    def _search_sqlite(self, conn: Any, words: Sequence[str], limit: int, offset: int) -> Any:
        """Newest first without sorting every match: FTS5 yields matches by rowid (storage
        order) at no cost, so take the newest ``window`` stored matches, sort those by
        published_at, and check that nothing stored earlier can rank higher. An item's
        published_at is at most its fetch time plus FUTURE_SLACK (the normaliser clamps
        it), and rowids follow fetch times up to a writer's batch; so once the page's last
        row was published after the fetch time of the oldest match in the window plus
        SQLITE_ORDER_SLACK, the page is exact. Otherwise the window grows, up to every
        match (which is also what a query with few matches gets at once)."""
        match = fts5_match(words)
        window = max(SQLITE_WINDOW, 4 * (offset + limit))
        while True:
            found, oldest = conn.execute(_SQLITE_WINDOW, {"m": match, "window": window}).one()
            if not found:
                return []
            rows = conn.execute(
                _SQLITE_SEARCH, {"m": match, "window": window, "limit": limit, "offset": offset}
            ).all()
            if found < window or len(rows) < limit:
                return rows  # every match was in the window
            fetched = _utc(conn.execute(_SQLITE_FETCHED_AT, {"id": oldest}).scalar_one())
            if _utc(rows[-1].published_at) >= fetched + SQLITE_ORDER_SLACK:
                return rows
            window *= 8

    # -- themes ---------------------------------------------------------------------------

    def theme_items(self, theme: str, limit: int = 20) -> list[ThemeItem]:
        """The newest items tagged with ``theme``."""
        query = (
            select(
                item.c.uid,
                item.c.title,
                item.c.link,
                item.c.published_at,
                item.c.summary_text,
                item.c.themes,
                item.c.published_missing,
                feed.c.title.label("source"),
            )
            .select_from(
                item_theme.join(item, item.c.id == item_theme.c.item_id).join(
                    feed, feed.c.id == item.c.feed_id
                )
            )
            .where(item_theme.c.theme == theme)
            .order_by(item_theme.c.published_at.desc(), item_theme.c.item_id.desc())
            .limit(limit)
        )
        with self.store._begin() as conn:
            rows = conn.execute(query).all()
        editions = self.first_editions([row.uid for row in rows])
        return [
            ThemeItem(
                uid=row.uid,
                title=row.title,
                link=row.link,
                source=row.source or "",
                published=row.published_at,
                summary_text=row.summary_text,
                themes=tuple(row.themes or ()),
                edition_id=editions.get(row.uid),
                published_missing=bool(row.published_missing),
            )
            for row in rows
        ]

    def weekly_volume(self, theme: str, now: datetime, weeks: int = 26) -> list[tuple[date, int]]:
        """(Monday, items tagged ``theme`` published that week) for the last ``weeks`` weeks
        up to the week of ``now``, oldest first, empty weeks included."""
        this_monday = (now.astimezone(UTC) - timedelta(days=now.astimezone(UTC).weekday())).date()
        first = this_monday - timedelta(weeks=weeks - 1)
        since = datetime(first.year, first.month, first.day, tzinfo=UTC)
        counts = [0] * weeks
        with self.store._begin() as conn:
            if self.store.is_sqlite:
                rows = conn.execute(
                    text(
                        "SELECT CAST((julianday(published_at) - julianday(:since)) / 7 AS INTEGER)"
                        " AS week, count(*) FROM item_theme"
                        " WHERE theme = :theme AND published_at >= :since_text GROUP BY week"
                    ),
                    {
                        "since": since.replace(tzinfo=None).isoformat(" "),
                        "since_text": since.replace(tzinfo=None).isoformat(" ", "microseconds"),
                        "theme": theme,
                    },
                ).all()
            else:
                rows = conn.execute(
                    text(
                        "SELECT floor(extract(epoch FROM published_at - :since) / 604800)::int"
                        " AS week, count(*) FROM item_theme"
                        " WHERE theme = :theme AND published_at >= :since GROUP BY week"
                    ),
                    {"since": since, "theme": theme},
                ).all()
        for week, count in rows:
            if week is not None and 0 <= int(week) < weeks:
                counts[int(week)] += int(count)
        return [(first + timedelta(weeks=n), counts[n]) for n in range(weeks)]

    # -- the editor dashboard -------------------------------------------------------------

    def subscribers_by_status(self) -> dict[str, int]:
        with self.store._begin() as conn:
            rows = conn.execute(
                select(subscriber.c.status, func.count()).group_by(subscriber.c.status)
            ).all()
        return {status: int(n) for status, n in rows}

    def suppressions(self, limit: int = 20) -> tuple[int, list[tuple[str, str, datetime]]]:
        """(how many addresses are suppressed, the newest as (hash prefix, reason, when))."""
        with self.store._begin() as conn:
            total = int(conn.execute(select(func.count()).select_from(suppression)).scalar_one())
            rows = conn.execute(
                select(suppression.c.email_hash, suppression.c.reason, suppression.c.created_at)
                .order_by(suppression.c.created_at.desc())
                .limit(limit)
            ).all()
        return total, [(h[:12], reason, at) for h, reason, at in rows]

    def counts(self) -> dict[str, int]:
        """Sizes for the dashboard's header."""
        with self.store._begin() as conn:
            return {
                "items": int(conn.execute(select(func.count()).select_from(item)).scalar_one()),
                "public_editions": int(
                    conn.execute(
                        select(func.count()).select_from(edition).where(edition.c.kind == "public")
                    ).scalar_one()
                ),
                "feeds": int(conn.execute(select(func.count()).select_from(feed)).scalar_one()),
            }


def index_archive(
    store: Store, *, limit: int | None = None, batch: int = ARCHIVE_INDEX_BATCH
) -> int:
    """Bring the archive's item index (search and ``item_theme``) up to date: every item
    marked ``archive_pending`` (inserted or changed by the store, re-tagged) is indexed
    again from its current row and unmarked, ``batch`` items per transaction, oldest first,
    at most ``limit`` (all when None). Returns how many were indexed. Idempotent: a second
    run finds nothing to do. Deleted items leave the index when they are deleted.

    An item is (re)indexed whole: its old search entry and themes out, its current ones
    in, so the result is what indexing it at write time gave (migration 0005). On
    PostgreSQL the items are taken ``FOR UPDATE SKIP LOCKED``: two steps never index one
    item at once, and an item a poll is writing (or that a poll stores after this run has
    looked) stays marked for the next run; a run stops early rather than wait for it."""
    done = 0
    while limit is None or done < limit:
        size = batch if limit is None else min(batch, limit - done)
        with store._begin() as conn:
            index = _index_sqlite if store.is_sqlite else _index_postgres
            count = index(conn, size)
        done += count
        if count < size:
            break
    if done:
        log.info("archive index: items=%d", done)
    return done


def _index_sqlite(conn: Connection, size: int) -> int:
    # The write lock first (waiting for another writer as busy_timeout lets it), so the
    # pending items read next are those this transaction indexes: the sqlite3 module would
    # begin only at the first write, after the read.
    driver = conn.connection.dbapi_connection
    if driver is not None and not getattr(driver, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    ids = [row[0] for row in conn.exec_driver_sql(_SQLITE_PENDING, (size,))]
    if ids:
        # One statement per id: FTS5 finds a rowid given by `=`, but would scan the whole
        # table for `rowid IN (...)`. A new item has no entry: nothing is deleted.
        conn.exec_driver_sql(_SQLITE_UNINDEX, [(i,) for i in ids])
        param = (json.dumps(ids),)
        for statement in _SQLITE_INDEX:
            conn.exec_driver_sql(statement, param)
    return len(ids)


def _index_postgres(conn: Connection, size: int) -> int:
    ids = [row[0] for row in conn.exec_driver_sql(_PG_INDEX, {"size": size})]
    if ids:
        for statement in _PG_INDEX_THEMES:
            conn.exec_driver_sql(statement, {"ids": ids})
    return len(ids)


# The step's statements. SQLite: the batch's ids as one JSON array; item_fts is an FTS5
# table with its own content since 0008, so an entry is deleted by rowid (a new item has
# none: nothing to delete).
_SQLITE_PENDING = "SELECT id FROM item WHERE archive_pending ORDER BY id LIMIT ?"
_SQLITE_UNINDEX = "DELETE FROM item_fts WHERE rowid = ?"
_SQLITE_IDS = "(SELECT value FROM json_each(?))"
_SQLITE_INDEX = (
    "INSERT INTO item_fts (rowid, title, summary_text)"
    f" SELECT id, title, summary_text FROM item WHERE id IN {_SQLITE_IDS}",
    f"DELETE FROM item_theme WHERE item_id IN {_SQLITE_IDS}",
    "INSERT OR IGNORE INTO item_theme (item_id, theme, published_at)"
    " SELECT item.id, t.value, item.published_at FROM item, json_each(CASE WHEN"
    " json_type(item.themes) = 'array' THEN item.themes ELSE '[]' END) AS t"
    f" WHERE item.id IN {_SQLITE_IDS}",
    f"UPDATE item SET archive_pending = NULL WHERE id IN {_SQLITE_IDS}",
)
# PostgreSQL: the vector as migration 0005's generated column computed it.
_PG_INDEX = (
    "WITH picked AS (SELECT id FROM item WHERE archive_pending ORDER BY id"
    " LIMIT %(size)s FOR UPDATE SKIP LOCKED)"
    " UPDATE item SET archive_pending = NULL,"
    " search_vector = to_tsvector('english'::regconfig, title || ' ' || summary_text)"
    " FROM picked WHERE item.id = picked.id RETURNING item.id"
)
_PG_INDEX_THEMES = (
    "DELETE FROM item_theme WHERE item_id = ANY(%(ids)s)",
    "INSERT INTO item_theme (item_id, theme, published_at)"
    " SELECT DISTINCT i.id, t.theme, i.published_at FROM item AS i"
    " CROSS JOIN LATERAL json_array_elements_text(CASE WHEN json_typeof(i.themes) = 'array'"
    " THEN i.themes ELSE '[]'::json END) AS t(theme) WHERE i.id = ANY(%(ids)s)"
    " ON CONFLICT DO NOTHING",
)


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_VERSIONS = text(
    "SELECT (SELECT max(id) FROM item), (SELECT max(id) FROM item WHERE archive_pending),"
    " (SELECT id FROM edition WHERE kind = 'public' AND item_count > 0"
    " ORDER BY period_end DESC, id DESC LIMIT 1)"
)

_SQLITE_LISTING = text(
    "SELECT id FROM edition INDEXED BY ix_edition_public_listing"
    " WHERE kind = 'public' AND item_count > 0"
    " ORDER BY period_end DESC, id DESC LIMIT :limit OFFSET :offset"
)

_HIT_COLUMNS = (
    "item.uid AS uid, item.title AS title, item.link AS link, item.published_at AS published_at,"
    " item.summary_text AS summary_text, item.published_missing AS published_missing,"
    " feed.title AS source"
)

_PG_MATCH = "item.search_vector @@ plainto_tsquery('english'::regconfig, :q)"
_PG_ESTIMATE = text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM item WHERE {_PG_MATCH}")
_PG_TOTAL = text("SELECT reltuples::bigint FROM pg_class WHERE oid = 'item'::regclass")
_PG_SPAN = text("SELECT max(published_at), min(published_at) FROM item")
_PG_BITMAP_ONLY = text("SET LOCAL enable_indexscan = off")
_PG_RECENT = text(
    f"SELECT {_HIT_COLUMNS} FROM (SELECT id, uid, title, link, published_at, summary_text,"
    " published_missing, feed_id, search_vector FROM item"
    " ORDER BY published_at DESC, id DESC LIMIT :recent)"
    f" AS item JOIN feed ON feed.id = item.feed_id WHERE {_PG_MATCH}"
    " ORDER BY item.published_at DESC, item.id DESC LIMIT :limit OFFSET :offset"
)
_PG_SEARCH_SINCE = text(
    f"SELECT {_HIT_COLUMNS} FROM item JOIN feed ON feed.id = item.feed_id"
    f" WHERE {_PG_MATCH} AND item.published_at >= :since"
    " ORDER BY item.published_at DESC, item.id DESC LIMIT :limit OFFSET :offset"
)
_PG_SEARCH_ALL = text(
    f"SELECT {_HIT_COLUMNS} FROM item JOIN feed ON feed.id = item.feed_id WHERE {_PG_MATCH}"
    " ORDER BY item.published_at DESC, item.id DESC LIMIT :limit OFFSET :offset"
)

# The newest stored matches (FTS5 walks its doclists by rowid: no sort, no item reads).
_SQLITE_NEWEST = (
    "SELECT rowid FROM item_fts WHERE item_fts MATCH :m ORDER BY rowid DESC LIMIT :window"
)
_SQLITE_WINDOW = text(f"SELECT count(*), min(rowid) FROM ({_SQLITE_NEWEST})")
_SQLITE_SEARCH = text(
    f"SELECT {_HIT_COLUMNS} FROM item JOIN feed ON feed.id = item.feed_id"
    f" WHERE item.id IN ({_SQLITE_NEWEST})"
    " ORDER BY item.published_at DESC, item.id DESC LIMIT :limit OFFSET :offset"
)
_SQLITE_FETCHED_AT = text("SELECT fetched_at FROM item WHERE id = :id")

__all__ = [
    "ARCHIVE_INDEX_BATCH",
    "ArchiveStore",
    "EditionSummary",
    "Page",
    "SearchHit",
    "ThemeItem",
    "archive_metadata",
    "edition_item",
    "edition_theme",
    "index_archive",
    "item_theme",
    "query_words",
]
