"""Provider events in the store: SendGrid Event Webhook batches, applied once each.

One transaction per batch. Each event is inserted into ``webhook_event`` with ``INSERT ...
ON CONFLICT (event_key) DO NOTHING RETURNING``; only an event that was really inserted has
its effects applied, in the same transaction. So a retried or duplicated event changes
nothing, a crash between "recorded" and "applied" cannot happen, and two web workers
receiving the same event at once apply it once (PostgreSQL makes the second insert wait for
the first transaction, then skips it; SQLite serialises writers).

The effects mirror ``SubscriberStore.set_status`` and ``DeliveryStore.resolve`` but run on
the batch's connection, because they must commit or roll back with the event row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)

from pipeline.adapters.delivery_store import DeliveryStatus
from pipeline.adapters.schema import (
    UTCDateTime,
    consent,
    delivery,
    subscriber,
    suppression,
    webhook_event,
    webhook_quarantine,
)
from pipeline.adapters.storage import Store

PURGE_BATCH = 5000  # rows read and deleted per transaction


class StoredEffect(Protocol):
    """What to change for one event (``pipeline.events.Effect``)."""

    @property
    def subscriber_status(self) -> str | None: ...
    @property
    def keep_statuses(self) -> frozenset[str]: ...
    @property
    def suppression(self) -> str | None: ...
    @property
    def delivery_status(self) -> str | None: ...
    @property
    def detail(self) -> str: ...
    @property
    def consent_action(self) -> str | None: ...


class StoredEvent(Protocol):
    """One provider event to record (``pipeline.events.ProviderEvent``)."""

    @property
    def key(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def email_hash(self) -> str | None: ...
    @property
    def sg_event_id(self) -> str | None: ...
    @property
    def sg_message_id(self) -> str | None: ...
    @property
    def provider_message_id(self) -> str | None: ...
    @property
    def delivery_id(self) -> int | None: ...
    @property
    def occurred_at(self) -> datetime | None: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def effect(self) -> StoredEffect: ...


@dataclass(frozen=True)
class RecordResult:
    """What recording a batch did."""

    new: list[bool]  # per event, in order; False: seen before, so it changed nothing
    subscribers: int = 0  # subscriber statuses changed
    suppressions: int = 0  # addresses newly suppressed
    deliveries: int = 0  # ledger rows settled


@dataclass(frozen=True)
class EventRow:
    id: int
    event_key: str
    sg_event_id: str | None
    event_type: str
    email_hash: str | None
    delivery_id: int | None
    sg_message_id: str | None
    occurred_at: datetime | None
    payload: dict[str, Any]
    received_at: datetime


@dataclass(frozen=True)
class PurgeCounts:
    """What a purge deleted."""

    events: int = 0
    quarantined: int = 0


@dataclass(frozen=True)
class QuarantineRow:
    id: int
    body: str
    reason: str
    received_at: datetime


class EventStore:
    """``webhook_event``, ``webhook_quarantine`` and the rows provider events change."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Built once: statements with bound parameters skip SQLAlchemy's per-call
        # construction and cache-key work (most of the time of a 100-event batch).
        self._insert_events = store.insert_ignoring(webhook_event, "event_key").returning(
            webhook_event.c.event_key
        )
        self._insert_suppression = store.insert_ignoring(suppression, "email_hash").returning(
            suppression.c.email_hash
        )

    def record(
        self,
        events: Sequence[StoredEvent],
        rejected: Sequence[tuple[str, str]],
        now: datetime,
    ) -> RecordResult:
        """Record a batch and apply the effects of the events not seen before.

        ``rejected`` (raw text, reason) pairs are quarantined in the same transaction. An
        event repeated inside the batch is new once, at its first place. Raises
        StorageError when the database fails; then nothing of the batch is kept.
        """
        first: dict[str, StoredEvent] = {}
        for event in events:
            first.setdefault(event.key, event)
        with self.store._begin() as conn:
            # The first statement writes, so SQLite takes the write lock at once (waiting
            # up to busy_timeout) instead of failing to upgrade a read snapshot later.
            for raw, reason in rejected:
                self._quarantine(conn, raw, reason, now)
            inserted: set[str] = set()
            if first:
                # Rows of every table are locked in one global order (by key here, by
                # address or delivery below): on PostgreSQL, two batches holding the same
                # events in other orders (a retry) then wait for each other, never deadlock.
                rows = [_event_row(first[key], now) for key in sorted(first)]
                inserted = set(conn.execute(self._insert_events, rows).scalars())
            new = [e.key in inserted and first[e.key] is e for e in events]
            fresh = [e for e, is_new in zip(events, new, strict=True) if is_new]
            result = RecordResult(
                new=new,
                subscribers=self._set_statuses(conn, fresh, now),
                suppressions=self._suppress(conn, fresh, now),
                deliveries=self._settle(conn, fresh, now),
            )
        return result

    def quarantine(self, body: str, reason: str, now: datetime) -> int:
        """Keep a signed body that could not be read as events, for a person to look at."""
        with self.store._begin() as conn:
            return self._quarantine(conn, body, reason, now)

    def _quarantine(self, conn: Connection, body: str, reason: str, now: datetime) -> int:
        # PostgreSQL text cannot hold NUL; keep it visible instead.
        return int(
            conn.execute(
                webhook_quarantine.insert()
                .values(body=body.replace("\x00", "\\x00"), reason=reason, received_at=now)
                .returning(webhook_quarantine.c.id)
            ).scalar_one()
        )

    # Each effect is one kind of row, so they are applied kind by kind (several rows per
    # statement where the database allows), each kind in the order of the events.

    def _set_statuses(self, conn: Connection, fresh: Sequence[StoredEvent], now: datetime) -> int:
        changed = 0
        # sorted() is stable: one address keeps the order of its own events
        for event in sorted(fresh, key=lambda e: e.email.lower()):
            effect = event.effect
            if not (effect.subscriber_status and event.email):
                continue
            values = {
                "email_": event.email,
                "keep_": sorted(effect.keep_statuses),
                "status_": effect.subscriber_status,
                "at_": now,
            }
            # The address as qasid sent it first (the unique index), then in any case.
            owner = conn.execute(_SET_STATUS_EXACT, values).scalar()
            if owner is None:
                owner = conn.execute(_SET_STATUS_ANY_CASE, values).scalar()
            if owner is None:
                continue
            changed += 1
            if effect.consent_action:
                conn.execute(
                    consent.insert(),
                    {
                        "subscriber_id": owner,
                        "action": effect.consent_action,
                        "at": now,
                        "source": "sendgrid",
                    },
                )
        return changed

    def _suppress(self, conn: Connection, fresh: Sequence[StoredEvent], now: datetime) -> int:
        rows: dict[str, dict[str, Any]] = {}
        for event in fresh:
            if event.effect.suppression and event.email_hash:
                rows.setdefault(
                    event.email_hash,
                    {
                        "email_hash": event.email_hash,
                        "reason": event.effect.suppression,
                        "created_at": now,
                    },
                )
        if not rows:
            return 0
        ordered = [rows[key] for key in sorted(rows)]
        return len(conn.execute(self._insert_suppression, ordered).all())

    def _settle(self, conn: Connection, fresh: Sequence[StoredEvent], now: datetime) -> int:
        rows: list[dict[str, Any]] = []
        for event in fresh:
            status = event.effect.delivery_status
            if not status or event.delivery_id is None or not event.email:
                continue
            sent = status == DeliveryStatus.SENT
            rows.append(
                {
                    "delivery_": event.delivery_id,
                    "email_": event.email,
                    "status_": status,
                    "sent_at_": (event.occurred_at or now) if sent else None,
                    "error_": None if sent else (event.effect.detail or event.type),
                    "message_id_": event.provider_message_id,
                }
            )
        if not rows:
            return 0
        rows.sort(key=lambda row: int(row["delivery_"]))  # stable: per row, event order
        return int(conn.execute(_SETTLE_DELIVERY, rows).rowcount)

    def forget(self, email_hash: str) -> int:
        """Delete the stored events of one address (their payloads hold it in clear), for
        erasure (M-08). The suppression row stays. Returns the number of events deleted."""
        with self.store._begin() as conn:
            return int(
                conn.execute(
                    delete(webhook_event).where(webhook_event.c.email_hash == email_hash)
                ).rowcount
            )

    def purge(self, before: datetime, batch: int = PURGE_BATCH) -> PurgeCounts:
        """Delete recorded events and quarantined bodies received before ``before``.

        Recorded events exist to apply each event once (SendGrid retries for a day) and
        for a person to look at; quarantined bodies only for a person to look at. Both hold
        addresses in clear, so neither is kept for ever (``[sendgrid]
        webhook_retention_days``, run daily by the worker, ``pipeline.jobs``).
        """
        return PurgeCounts(
            events=self._purge(webhook_event, before, batch),
            quarantined=self._purge(webhook_quarantine, before, batch),
        )

    def _purge(self, table: Table, before: datetime, batch: int) -> int:
        # Rows are received in id order (give or take the clocks of several web workers),
        # so the oldest are the first ids: each round reads the next ``batch`` ids from the
        # primary key and deletes those received before the cut-off, in a short transaction
        # of its own (webhook posts keep being recorded meanwhile). It stops at the first
        # round that meets a row to keep. No full scan, no index on received_at needed; a
        # straggler out of order goes at the next run.
        deleted = 0
        while True:
            with self.store._begin() as conn:
                rows = conn.execute(
                    select(table.c.id, table.c.received_at).order_by(table.c.id).limit(batch)
                ).all()
                old = [row.id for row in rows if row.received_at < before]
                if old:
                    conn.execute(delete(table).where(table.c.id.in_(old)))
            deleted += len(old)
            if not old or len(old) < len(rows) or len(rows) < batch:
                return deleted

    # -- reading (the editor dashboard, tests) ---------------------------------------------

    def events(self, limit: int = 100, event_type: str | None = None) -> list[EventRow]:
        """Recorded events in the order they were recorded (within a batch, by key)."""
        query = select(webhook_event).order_by(webhook_event.c.id).limit(limit)
        if event_type is not None:
            query = query.where(webhook_event.c.event_type == event_type)
        with self.store._begin() as conn:
            rows = conn.execute(query).all()
        return [
            EventRow(
                id=row.id,
                event_key=row.event_key,
                sg_event_id=row.sg_event_id,
                event_type=row.event_type,
                email_hash=row.email_hash,
                delivery_id=row.delivery_id,
                sg_message_id=row.sg_message_id,
                occurred_at=row.occurred_at,
                payload=dict(row.payload or {}),
                received_at=row.received_at,
            )
            for row in rows
        ]

    def count_events(self) -> int:
        with self.store._begin() as conn:
            return int(conn.execute(select(func.count()).select_from(webhook_event)).scalar_one())

    def quarantined(self, limit: int = 100) -> list[QuarantineRow]:
        """Quarantined bodies, oldest first."""
        with self.store._begin() as conn:
            rows = conn.execute(
                select(webhook_quarantine).order_by(webhook_quarantine.c.id).limit(limit)
            ).all()
        return [QuarantineRow(r.id, r.body, r.reason, r.received_at) for r in rows]

    def suppression_reason(self, email_hash: str) -> str | None:
        with self.store._begin() as conn:
            found = conn.execute(
                select(suppression.c.reason).where(suppression.c.email_hash == email_hash)
            ).scalar()
        return str(found) if found is not None else None


def _event_row(event: StoredEvent, now: datetime) -> dict[str, Any]:
    return {
        "event_key": event.key,
        "sg_event_id": event.sg_event_id,
        "event_type": event.type,
        "email_hash": event.email_hash,
        "delivery_id": event.delivery_id,
        "sg_message_id": event.sg_message_id,
        "occurred_at": event.occurred_at,
        "payload": event.payload,
        "received_at": now,
    }


def _set_status(match: Any) -> Any:
    """A suppressed status for the subscribers ``match`` finds, unless they are already in
    one of the statuses ``keep_`` (a complaint is never turned into an unsubscribe)."""
    return (
        update(subscriber)
        .where(match, subscriber.c.status.not_in(bindparam("keep_", expanding=True)))
        .values(
            status=bindparam("status_", type_=String()),
            updated_at=bindparam("at_", type_=UTCDateTime()),
        )
        .returning(subscriber.c.id)
    )


_SET_STATUS_EXACT = _set_status(subscriber.c.email == bindparam("email_", type_=String()))
_SET_STATUS_ANY_CASE = _set_status(
    func.lower(subscriber.c.email) == func.lower(bindparam("email_", type_=String()))
)

# Settle an unknown (or still sending) row, only if it went to this address: another app
# on the same SendGrid account may use a ``delivery_id`` custom arg too.
_SETTLE_DELIVERY = (
    update(delivery)
    .where(
        delivery.c.id == bindparam("delivery_", type_=Integer()),
        # not IN (...): an expanding list cannot be used with executemany
        or_(
            delivery.c.status == DeliveryStatus.UNKNOWN, delivery.c.status == DeliveryStatus.SENDING
        ),
        select(subscriber.c.id)
        .where(
            subscriber.c.id == delivery.c.subscriber_id,
            func.lower(subscriber.c.email) == func.lower(bindparam("email_", type_=String())),
        )
        .exists(),
    )
    .values(
        status=bindparam("status_", type_=String()),
        sent_at=func.coalesce(bindparam("sent_at_", type_=UTCDateTime()), delivery.c.sent_at),
        last_error=bindparam("error_", type_=Text()),
        provider_message_id=func.coalesce(
            bindparam("message_id_", type_=String()), delivery.c.provider_message_id
        ),
    )
)
