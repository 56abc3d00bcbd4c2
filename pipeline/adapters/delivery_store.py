"""Editions and the delivery ledger (RELIABILITY.md, "The delivery ledger").

One row per (subscriber, edition) and per (subscriber, alert item), written in the same
transaction as the edition, so a crash mid-build leaves nothing or everything. Workers claim
queued rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), send, and record the outcome. A row is
``sent`` only after the provider accepted it; an ambiguous outcome is ``unknown`` and is
resolved by provider events or, after a window, resent once and flagged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import JSON, Table, Text, and_, bindparam, cast, func, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import TypeDecorator

from pipeline.adapters.schema import delivery, edition, edition_part
from pipeline.adapters.storage import Store
from pipeline.core.digest import expand_edition, part_keys
from pipeline.core.errors import StorageError

log = logging.getLogger(__name__)
PART_QUERY = 500  # part keys asked for in one statement
PARTS_KEPT = 200_000  # parts a long-lived process remembers before starting over


def read_json(text: str) -> Any:
    """``json.loads(text)``, by orjson where it can (a 26 KB edition: 0.08 ms against 0.17);
    what orjson refuses and json reads (NaN, integers past 64 bits) goes to json."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _sqlite_insert(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], returning_id: bool = False
) -> list[int]:
    """Insert ``rows`` (dicts with the same keys) on SQLite through the connection's own
    cursor, in its transaction; the new ids in order when ``returning_id``. A build stores
    100,000 editions with their delivery rows: SQLAlchemy ran the edition insert row by row
    (RETURNING in parameter order) and bound each row's values through its processors,
    about 40% of the write's CPU on top of SQLite's own (bench/digest_fanout.py). Values go
    through the columns' bind processors as SQLAlchemy's would, each distinct value once
    (a chunk's rows share their period and time); text bound to a JSON column is stored as
    it is (``JSONText``, as ``_EncodedJSON`` binds it)."""
    names = list(rows[0])
    dialect = conn.dialect
    processors = [
        None
        if isinstance(table.c[name].type, JSON)
        else table.c[name].type._cached_bind_processor(dialect)
        for name in names
    ]
    done: list[dict[Any, Any]] = [{} for _ in names]

    def bound(at: int, value: Any) -> Any:
        process = processors[at]
        if process is None or value is None:
            return value
        known = done[at]
        found = known.get(value, _MISSING)
        if found is _MISSING:
            found = known[value] = process(value)
        return found

    preparer = dialect.identifier_preparer
    quoted = ", ".join(preparer.quote(name) for name in names)
    marks = ", ".join("?" * len(names))
    sql = f"INSERT INTO {preparer.format_table(table)} ({quoted}) VALUES ({marks})"
    params = [tuple(bound(at, row[name]) for at, name in enumerate(names)) for row in rows]
    cursor = conn.connection.cursor()
    try:
        if not returning_id:
            cursor.executemany(sql, params)
            return []
        sql += " RETURNING id"
        ids: list[int] = []
        for values in params:
            cursor.execute(sql, values)
            ids.append(int(cursor.fetchall()[0][0]))
        return ids
    finally:
        cursor.close()


_MISSING = object()


class DeliveryStatus:
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SUPPRESSED = "suppressed"  # the address was suppressed between build and send


class JSONText(str):
    """An edition's content already encoded: exactly the text ``json.dumps`` gives for it
    (what the JSON column stores), so it is stored as it is."""


class _EncodedJSON(TypeDecorator[str]):
    """The JSON column bound from ``JSONText``: the same stored text, not encoded again."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":  # SQLAlchemy sends json.dumps(value): the text itself
            return None
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            from psycopg.types.json import Json  # SQLAlchemy wraps json.dumps's input in it

            return lambda text: Json(text, dumps=str)
        encode = self.impl_instance.bind_processor(dialect)  # others: decode, encode again
        return lambda text: encode(json.loads(text)) if encode else json.loads(text)


def _json_text(content: Mapping[str, Any] | JSONText) -> JSONText:
    return content if isinstance(content, JSONText) else JSONText(json.dumps(dict(content)))


@dataclass(frozen=True)
class EditionRow:
    id: int
    kind: str
    subscriber_id: int | None
    frequency: str
    period_start: datetime
    period_end: datetime
    local_date: str
    subject: str
    item_count: int
    content: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    subscriber_id: int
    edition_id: int | None
    alert_item_id: int | None
    channel: str
    status: str
    attempts: int
    resent: bool


class DeliveryStore:
    """Editions and deliveries through a Store's engine."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- editions -------------------------------------------------------------------------

    def create_edition(
        self,
        *,
        kind: str,
        subscriber_id: int | None,
        frequency: str,
        period_start: datetime,
        period_end: datetime,
        local_date: str,
        subject: str,
        item_count: int,
        content: Mapping[str, Any] | JSONText,
        now: datetime,
        queue_delivery: bool,
    ) -> tuple[int, bool]:
        """Insert an edition and (when asked) its delivery row in one transaction.

        Idempotent: building the same (subscriber, frequency, period) twice — two workers,
        or a retry after a crash — returns the existing edition and inserts nothing.
        Returns (edition id, created).
        """
        try:
            with self.store._begin() as conn:
                edition_id = conn.execute(
                    edition.insert()
                    .values(
                        kind=kind,
                        subscriber_id=subscriber_id,
                        frequency=frequency,
                        period_start=period_start,
                        period_end=period_end,
                        local_date=local_date,
                        subject=subject,
                        item_count=item_count,
                        content=json.loads(content)
                        if isinstance(content, JSONText)
                        else dict(content),
                        created_at=now,
                    )
                    .returning(edition.c.id)
                ).scalar_one()
                if queue_delivery and subscriber_id is not None:
                    conn.execute(
                        delivery.insert().values(
                            subscriber_id=subscriber_id,
                            edition_id=edition_id,
                            channel="digest",
                            status=DeliveryStatus.QUEUED,
                            not_before=now,
                            created_at=now,
                        )
                    )
            return int(edition_id), True
        except StorageError as error:  # the unique index says it exists already
            if not _is_integrity_error(error):
                raise
        existing = self._find_edition(kind, subscriber_id, frequency, period_end)
        if existing is None:  # pragma: no cover - the conflict was something else
            raise RuntimeError("edition insert conflicted but no edition was found")
        return existing, False

    def store_parts(self, parts: Mapping[str, str]) -> None:
        """Store the parts compact editions refer to (key → JSON text, ``DigestJSON``): in
        a transaction of their own before the editions, each once (a key stored already,
        by this build's other chunks or another worker, is left as it is: same key, same
        text)."""
        if not parts:
            return
        rows = [{"key": key, "content": text} for key, text in parts.items()]
        insert = self.store.insert_ignoring(edition_part, "key")
        with self.store._begin() as conn:
            for start in range(0, len(rows), 1000):
                conn.execute(insert, rows[start : start + 1000])

    def create_editions(
        self, editions: Sequence[Mapping[str, Any]], parts: Mapping[str, str] | None = None
    ) -> list[tuple[int, bool]]:
        """Many ``create_edition`` calls (their keyword arguments) in one transaction: one
        multi-row insert of editions, one of their delivery rows. When any of them exists
        already, the batch is rolled back and each is created on its own (idempotent as
        ``create_edition``). Returns (edition id, created) in order. A content given as
        ``JSONText`` is stored as it is (no decoding and encoding again); ``parts``, what
        compact contents refer to, are stored first (``store_parts``)."""
        self.store_parts(parts or {})
        if not editions:
            return []
        rows = [
            {
                "kind": e["kind"],
                "subscriber_id": e["subscriber_id"],
                "frequency": e["frequency"],
                "period_start": e["period_start"],
                "period_end": e["period_end"],
                "local_date": e["local_date"],
                "subject": e["subject"],
                "item_count": e["item_count"],
                "content": _json_text(e["content"]),
                "created_at": e["now"],
            }
            for e in editions
        ]
        try:
            with self.store._begin() as conn:
                if self.store.is_sqlite:
                    ids = _sqlite_insert(conn, edition, rows, returning_id=True)
                else:
                    ids = [
                        int(row[0])
                        for row in conn.execute(
                            edition.insert()
                            .values(content=bindparam("content", type_=_EncodedJSON()))
                            .returning(edition.c.id, sort_by_parameter_order=True),
                            rows,
                        )
                    ]
                queued = [
                    {
                        "subscriber_id": e["subscriber_id"],
                        "edition_id": edition_id,
                        "channel": "digest",
                        "status": DeliveryStatus.QUEUED,
                        "not_before": e["now"],
                        "created_at": e["now"],
                    }
                    for e, edition_id in zip(editions, ids, strict=True)
                    if e["queue_delivery"] and e["subscriber_id"] is not None
                ]
                if queued and self.store.is_sqlite:
                    _sqlite_insert(conn, delivery, queued)
                elif queued:
                    conn.execute(delivery.insert(), queued)
            return [(edition_id, True) for edition_id in ids]
        except StorageError as error:
            if not _is_integrity_error(error):
                raise
        except sqlite3.IntegrityError:  # from ``_sqlite_insert``'s cursor, unwrapped
            pass
        return [self.create_edition(**e) for e in editions]

    def _find_edition(
        self, kind: str, subscriber_id: int | None, frequency: str, period_end: datetime
    ) -> int | None:
        owner = (
            edition.c.subscriber_id.is_(None)
            if subscriber_id is None
            else edition.c.subscriber_id == subscriber_id
        )
        with self.store._begin() as conn:
            found = conn.execute(
                select(edition.c.id).where(
                    edition.c.kind == kind,
                    owner,
                    edition.c.frequency == frequency,
                    edition.c.period_end == period_end,
                )
            ).scalar()
        return int(found) if found is not None else None

    def last_period_end(
        self, kind: str, subscriber_id: int | None, frequency: str
    ) -> datetime | None:
        """Where the latest edition of this kind ended (None before the first one)."""
        owner = (
            edition.c.subscriber_id.is_(None)
            if subscriber_id is None
            else edition.c.subscriber_id == subscriber_id
        )
        with self.store._begin() as conn:
            return conn.execute(
                select(func.max(edition.c.period_end)).where(
                    edition.c.kind == kind, owner, edition.c.frequency == frequency
                )
            ).scalar()

    def last_period_ends(self, frequency: str) -> dict[int, datetime]:
        """subscriber id → end of their latest personal edition of this frequency."""
        with self.store._begin() as conn:
            rows = conn.execute(
                select(edition.c.subscriber_id, func.max(edition.c.period_end))
                .where(edition.c.kind == "personal", edition.c.frequency == frequency)
                .group_by(edition.c.subscriber_id)
            ).all()
        return {int(sid): end for sid, end in rows}

    def get_edition(self, edition_id: int) -> EditionRow | None:
        """The edition with its whole content (a compact one's parts put back in); None
        when there is no such edition or a part it refers to is missing."""
        return self.get_editions([edition_id]).get(edition_id)

    def get_editions(
        self,
        edition_ids: Sequence[int],
        parts: dict[str, dict[str, Any]] | None = None,
        keep_refs: bool = False,
    ) -> dict[int, EditionRow]:
        """Many editions in one query: id → edition with its whole content (missing ids
        are left out, and so is an edition whose parts are missing, with a warning).
        Readers with the same digest have the same stored content: it is decoded once.
        ``parts``: the parts read so far, kept by the caller across batches (a batch's
        editions share most of them, and so do the day's batches); ``keep_refs``: see
        ``expand_edition``."""
        if not edition_ids:
            return {}
        query = select(*_EDITION_READ).where(edition.c.id.in_(list(edition_ids)))
        decoded: dict[str, dict[str, Any]] = {}
        found: list[tuple[Any, dict[str, Any]]] = []
        with self.store._begin() as conn:
            for row in conn.execute(query):
                text = row[_CONTENT_AT] or "{}"
                content = decoded.get(text)
                if content is None:
                    content = decoded[text] = read_json(text)
                found.append((row, content))
            known = {} if parts is None else parts
            # Expanded with the parts already read (most of a day's batches need no
            # others); the contents that refer to a part not read yet are expanded once
            # their parts have been read.
            expanded: dict[int, dict[str, Any]] = {}  # by id of the decoded content
            waiting: list[dict[str, Any]] = []
            whole_blocks: set[str] = set()  # shared blocks whose story parts are in ``known``
            for content in decoded.values():
                try:
                    expanded[id(content)] = expand_edition(content, known, keep_refs, whole_blocks)
                except KeyError:
                    waiting.append(content)
            if waiting:
                wanted = set().union(*(part_keys(c, known) for c in waiting)) - known.keys()
                if len(known) + len(wanted) > PARTS_KEPT:
                    # started over: the batch's every part is read again, those of the
                    # contents expanded above too (read as references, they name theirs)
                    known.clear()
                    whole_blocks.clear()
                    wanted = set().union(*map(part_keys, decoded.values()))
                # A shared section's part names story parts of its own: a second round
                # reads those (a part that is missing is asked for once).
                asked: set[str] = set()
                query_parts = select(edition_part.c.key, edition_part.c.content)
                while wanted:
                    asked |= wanted
                    ordered = sorted(wanted)
                    read: list[dict[str, Any]] = []
                    for start in range(0, len(ordered), PART_QUERY):
                        chunk = ordered[start : start + PART_QUERY]
                        for key, text in conn.execute(
                            query_parts.where(edition_part.c.key.in_(chunk))
                        ):
                            part = known[key] = read_json(text)
                            if "entries" in part:  # a shared section's
                                read.append(part)
                    wanted = {e["part"] for part in read for e in part["entries"]}
                    wanted -= known.keys() | asked
        for content in waiting:
            with suppress(KeyError):  # a part that is gone: the edition is left out below
                expanded[id(content)] = expand_edition(content, known, keep_refs, whole_blocks)
        out: dict[int, EditionRow] = {}
        for row, content in found:
            whole = expanded.get(id(content))
            if whole is None:
                missing = sorted(part_keys(content, known) - known.keys())
                log.warning("edition %s refers to a missing part %s", row.id, ", ".join(missing))
                continue
            # readers of the same digest share one content dict (not a copy each): the
            # send path prepares a digest once for all of them. Made from the row's places,
            # not its mapping: a send batch reads 1,000 rows (a fifth of this call's time).
            values = list(row)
            values[_CONTENT_AT] = whole
            made = EditionRow(*values)
            out[int(made.id)] = made
        return out

    def public_editions(self, limit: int = 20, offset: int = 0) -> list[EditionRow]:
        """Public editions, newest first."""
        query = (
            select(edition)
            .where(edition.c.kind == "public")
            .order_by(edition.c.period_end.desc(), edition.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.store._begin() as conn:
            return [_edition_row(row._mapping) for row in conn.execute(query)]

    # -- alerts ---------------------------------------------------------------------------

    def queue_alert(self, subscriber_id: int, item_id: int, now: datetime) -> bool:
        """Queue one alert for (subscriber, item). False when it was queued before."""
        try:
            with self.store._begin() as conn:
                conn.execute(
                    delivery.insert().values(
                        subscriber_id=subscriber_id,
                        alert_item_id=item_id,
                        channel="alert",
                        status=DeliveryStatus.QUEUED,
                        not_before=now,
                        created_at=now,
                    )
                )
        except StorageError as error:
            if _is_integrity_error(error):
                return False
            raise
        return True

    def alerts_since(self, subscriber_id: int, since: datetime) -> int:
        """Alerts queued for a subscriber since ``since`` (for the daily cap)."""
        return self.queued_since(subscriber_id, "alert", since)

    def queued_since(self, subscriber_id: int, channel: str, since: datetime) -> int:
        """Rows of one channel queued for a subscriber since ``since``."""
        with self.store._begin() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(delivery)
                    .where(
                        delivery.c.subscriber_id == subscriber_id,
                        delivery.c.channel == channel,
                        delivery.c.created_at >= since,
                    )
                ).scalar_one()
            )

    def queue_confirmation(self, subscriber_id: int, now: datetime) -> int:
        """Queue a double opt-in email; returns the delivery id."""
        with self.store._begin() as conn:
            return int(
                conn.execute(
                    delivery.insert()
                    .values(
                        subscriber_id=subscriber_id,
                        channel="confirm",
                        status=DeliveryStatus.QUEUED,
                        not_before=now,
                        created_at=now,
                    )
                    .returning(delivery.c.id)
                ).scalar_one()
            )

    # -- the drain ------------------------------------------------------------------------

    def count_due(self, now: datetime) -> int:
        """Queued rows that ``claim`` could take at ``now``."""
        query = select(func.count()).where(
            delivery.c.status == DeliveryStatus.QUEUED, delivery.c.not_before <= now
        )
        with self.store._begin() as conn:
            return int(conn.execute(query).scalar_one())

    def claim(self, now: datetime, worker: str, limit: int) -> list[DeliveryRow]:
        """Move up to ``limit`` due rows from queued to sending, owned by ``worker``."""
        candidates = (
            select(delivery.c.id)
            .where(delivery.c.status == DeliveryStatus.QUEUED, delivery.c.not_before <= now)
            .order_by(delivery.c.id)
            .limit(limit)
        )
        if not self.store.is_sqlite:
            candidates = candidates.with_for_update(skip_locked=True)
        statement = (
            update(delivery)
            .where(delivery.c.id.in_(candidates.scalar_subquery()))
            .values(
                status=DeliveryStatus.SENDING,
                claimed_by=worker,
                claimed_at=now,
                attempts=delivery.c.attempts + 1,
            )
            .returning(*_DELIVERY_ROW_COLUMNS)  # not the time stamps: nothing reads them here
        )
        with self.store._begin() as conn:
            rows = conn.execute(statement).all()
        # the columns are DeliveryRow's fields in order: made from the rows' places
        return sorted((DeliveryRow(*r) for r in rows), key=lambda r: r.id)

    def _finish(self, delivery_id: int, worker: str | None, **values: Any) -> bool:
        condition = delivery.c.id == delivery_id
        if worker is not None:  # only the claimer may record the outcome of its claim
            condition = and_(
                condition,
                delivery.c.status == DeliveryStatus.SENDING,
                delivery.c.claimed_by == worker,
            )
        with self.store._begin() as conn:
            return bool(conn.execute(update(delivery).where(condition).values(**values)).rowcount)

    def mark_sent(
        self, delivery_id: int, worker: str, provider_message_id: str | None, now: datetime
    ) -> bool:
        return self._finish(
            delivery_id,
            worker,
            status=DeliveryStatus.SENT,
            sent_at=now,
            provider_message_id=provider_message_id,
            last_error=None,
        )

    def mark_sent_many(
        self, sent: Sequence[tuple[int, str | None]], worker: str, now: datetime
    ) -> int:
        """Record many accepted sends in one transaction: (delivery id, provider id).

        Emails accepted in one request share the provider's message id: one UPDATE per
        shared id (rows ``IN`` chunks of 500); ids of one email each (the outbox's files,
        an SMTP server's queue ids) go in one executemany, not one statement per row."""
        if not sent:
            return 0
        by_provider: dict[str | None, list[int]] = {}
        for delivery_id, provider in sent:
            by_provider.setdefault(provider, []).append(delivery_id)
        owned = and_(delivery.c.status == DeliveryStatus.SENDING, delivery.c.claimed_by == worker)
        recorded = {"status": DeliveryStatus.SENT, "sent_at": now, "last_error": None}
        alone = [
            {"row_id": ids[0], "provider": p} for p, ids in by_provider.items() if len(ids) == 1
        ]
        shared = [(p, ids) for p, ids in by_provider.items() if len(ids) > 1]
        done = 0
        with self.store._begin() as conn:
            if alone:
                done += (
                    conn.execute(
                        update(delivery)
                        .where(delivery.c.id == bindparam("row_id"), owned)
                        .values(**recorded, provider_message_id=bindparam("provider")),
                        alone,
                    ).rowcount
                    or 0
                )
            for provider, ids in shared:
                for start in range(0, len(ids), 500):
                    done += (
                        conn.execute(
                            update(delivery)
                            .where(delivery.c.id.in_(ids[start : start + 500]), owned)
                            .values(**recorded, provider_message_id=provider)
                        ).rowcount
                        or 0
                    )
        return done

    def mark_retry(self, delivery_id: int, worker: str, error: str, not_before: datetime) -> bool:
        return self._finish(
            delivery_id,
            worker,
            status=DeliveryStatus.QUEUED,
            not_before=not_before,
            last_error=error,
            claimed_by=None,
        )

    def mark_failed(self, delivery_id: int, worker: str | None, error: str) -> bool:
        return self._finish(delivery_id, worker, status=DeliveryStatus.FAILED, last_error=error)

    def mark_unknown(self, delivery_id: int, worker: str, error: str) -> bool:
        return self._finish(delivery_id, worker, status=DeliveryStatus.UNKNOWN, last_error=error)

    def mark_suppressed(self, delivery_id: int, worker: str, reason: str) -> bool:
        return self._finish(
            delivery_id, worker, status=DeliveryStatus.SUPPRESSED, last_error=reason
        )

    # -- recovery -------------------------------------------------------------------------

    def reap(self, now: datetime, lease: timedelta) -> int:
        """Rows stuck in sending past the lease (their worker died) become unknown."""
        with self.store._begin() as conn:
            return int(
                conn.execute(
                    update(delivery)
                    .where(
                        delivery.c.status == DeliveryStatus.SENDING,
                        delivery.c.claimed_at < now - lease,
                    )
                    .values(
                        status=DeliveryStatus.UNKNOWN,
                        last_error="worker stopped while sending; outcome unknown",
                    )
                ).rowcount
            )

    def resolve(
        self, delivery_id: int, status: str, provider_message_id: str | None = None
    ) -> bool:
        """Settle an unknown row from provider events (sent, or failed)."""
        values: dict[str, Any] = {"status": status}
        if provider_message_id:
            values["provider_message_id"] = provider_message_id
        with self.store._begin() as conn:
            return bool(
                conn.execute(
                    update(delivery)
                    .where(
                        delivery.c.id == delivery_id,
                        delivery.c.status.in_([DeliveryStatus.UNKNOWN, DeliveryStatus.SENDING]),
                    )
                    .values(**values)
                ).rowcount
            )

    def requeue_unresolved(self, now: datetime, window: timedelta) -> int:
        """Unknown rows with no news after ``window`` are resent, once, and flagged.

        This is the only place a duplicate email can come from; ``resent`` counts them.
        """
        with self.store._begin() as conn:
            return int(
                conn.execute(
                    update(delivery)
                    .where(
                        delivery.c.status == DeliveryStatus.UNKNOWN,
                        delivery.c.resent.is_(False),
                        delivery.c.claimed_at < now - window,
                    )
                    .values(status=DeliveryStatus.QUEUED, resent=True, not_before=now)
                ).rowcount
            )

    def counts_by_status(self) -> dict[str, int]:
        with self.store._begin() as conn:
            rows = conn.execute(
                select(delivery.c.status, func.count()).group_by(delivery.c.status)
            ).all()
        return {status: int(n) for status, n in rows}

    def deliveries_for(self, subscriber_id: int) -> list[DeliveryRow]:
        with self.store._begin() as conn:
            rows = conn.execute(
                select(delivery)
                .where(delivery.c.subscriber_id == subscriber_id)
                .order_by(delivery.c.id)
            ).all()
        return [_delivery_row(r._mapping) for r in rows]


def _is_integrity_error(error: BaseException) -> bool:
    """The store wraps driver errors in StorageError; look through the chain."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, IntegrityError):
            return True
        seen = seen.__cause__
    return False


# ``get_editions``'s columns in the order of EditionRow's fields, the content as stored text
# (decoded once per distinct text).
_EDITION_READ = [
    cast(edition.c.content, Text) if f.name == "content" else edition.c[f.name]
    for f in fields(EditionRow)
]
_CONTENT_AT = [f.name for f in fields(EditionRow)].index("content")


def _edition_row(row: Any) -> EditionRow:
    content = row["content"] or {}
    return EditionRow(
        id=row["id"],
        kind=row["kind"],
        subscriber_id=row["subscriber_id"],
        frequency=row["frequency"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        local_date=row["local_date"],
        subject=row["subject"],
        item_count=row["item_count"],
        content=dict(content),
        created_at=row["created_at"],
    )


_DELIVERY_ROW_COLUMNS = [delivery.c[f.name] for f in fields(DeliveryRow)]


def _delivery_row(row: Any) -> DeliveryRow:
    return DeliveryRow(
        id=row["id"],
        subscriber_id=row["subscriber_id"],
        edition_id=row["edition_id"],
        alert_item_id=row["alert_item_id"],
        channel=row["channel"],
        status=row["status"],
        attempts=row["attempts"],
        resent=bool(row["resent"]),
    )
