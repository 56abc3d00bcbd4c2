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

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pipeline.adapters.delivery_store import DeliveryStatus
from pipeline.adapters.schema import (
    consent,
    delivery,
    subscriber,
    suppression,
    webhook_event,
    webhook_quarantine,
)
from pipeline.adapters.storage import Store


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
class EventResult:
    """What recording one event did. ``new`` False: seen before, nothing changed."""

    key: str
    new: bool
    subscriber_changed: bool = False
    suppression_added: bool = False
    delivery_resolved: bool = False


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
class QuarantineRow:
    id: int
    body: str
    reason: str
    received_at: datetime


class EventStore:
    """``webhook_event``, ``webhook_quarantine`` and the rows provider events change."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _insert(self, table: Any) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that knows ON CONFLICT on this engine."""
        return sqlite.insert(table) if self.store.is_sqlite else postgresql.insert(table)

    def record(
        self,
        events: Sequence[StoredEvent],
        rejected: Sequence[tuple[str, str]],
        now: datetime,
    ) -> list[EventResult]:
        """Record a batch and apply the effects of the events not seen before.

        ``rejected`` (raw text, reason) pairs are quarantined in the same transaction.
        Raises StorageError when the database fails; then nothing of the batch is kept.
        """
        results: list[EventResult] = []
        with self.store._begin() as conn:
            # The first statement writes, so SQLite takes the write lock at once (waiting
            # up to busy_timeout) instead of failing to upgrade a read snapshot later.
            for raw, reason in rejected:
                self._quarantine(conn, raw, reason, now)
            for event in events:
                results.append(self._record_one(conn, event, now))
        return results

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

    def _record_one(self, conn: Connection, event: StoredEvent, now: datetime) -> EventResult:
        inserted = conn.execute(
            self._insert(webhook_event)
            .values(
                event_key=event.key,
                sg_event_id=event.sg_event_id,
                event_type=event.type,
                email_hash=event.email_hash,
                delivery_id=event.delivery_id,
                sg_message_id=event.sg_message_id,
                occurred_at=event.occurred_at,
                payload=event.payload,
                received_at=now,
            )
            .on_conflict_do_nothing(index_elements=["event_key"])
            .returning(webhook_event.c.id)
        ).scalar()
        if inserted is None:
            return EventResult(event.key, new=False)
        effect = event.effect
        same_address = func.lower(subscriber.c.email) == func.lower(event.email)
        changed = False
        if effect.subscriber_status and event.email:
            owner = conn.execute(
                update(subscriber)
                .where(same_address, subscriber.c.status.not_in(sorted(effect.keep_statuses)))
                .values(status=effect.subscriber_status, updated_at=now)
                .returning(subscriber.c.id)
            ).scalar()
            changed = owner is not None
            if changed and effect.consent_action:
                conn.execute(
                    consent.insert().values(
                        subscriber_id=owner,
                        action=effect.consent_action,
                        at=now,
                        source="sendgrid",
                    )
                )
        suppressed = False
        if effect.suppression and event.email_hash:
            suppressed = (
                conn.execute(
                    self._insert(suppression)
                    .values(email_hash=event.email_hash, reason=effect.suppression, created_at=now)
                    .on_conflict_do_nothing(index_elements=["email_hash"])
                    .returning(suppression.c.email_hash)
                ).scalar()
                is not None
            )
        resolved = False
        if effect.delivery_status and event.delivery_id is not None and event.email:
            resolved = self._resolve(conn, event, effect, now)
        return EventResult(event.key, True, changed, suppressed, resolved)

    def _resolve(
        self, conn: Connection, event: StoredEvent, effect: StoredEffect, now: datetime
    ) -> bool:
        """Settle an unknown (or still sending) row, only if it was sent to this address:
        another app on the same SendGrid account may use ``delivery_id`` too."""
        values: dict[str, Any] = {"status": effect.delivery_status}
        if effect.delivery_status == DeliveryStatus.SENT:
            values["sent_at"] = event.occurred_at or now
            values["last_error"] = None
        else:
            values["last_error"] = effect.detail or event.type
        if event.provider_message_id:
            values["provider_message_id"] = event.provider_message_id
        recipients = select(subscriber.c.id).where(
            func.lower(subscriber.c.email) == func.lower(event.email)
        )
        return bool(
            conn.execute(
                update(delivery)
                .where(
                    delivery.c.id == event.delivery_id,
                    delivery.c.status.in_([DeliveryStatus.UNKNOWN, DeliveryStatus.SENDING]),
                    delivery.c.subscriber_id.in_(recipients),
                )
                .values(**values)
            ).rowcount
        )

    # -- reading (the editor dashboard, tests) ---------------------------------------------

    def events(self, limit: int = 100, event_type: str | None = None) -> list[EventRow]:
        """Recorded events, oldest first."""
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
