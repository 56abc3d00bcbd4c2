"""The event store on both engines: once per event, effects in the event's transaction."""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from pipeline import events
from pipeline.adapters.delivery_store import DeliveryStatus, DeliveryStore
from pipeline.adapters.event_store import EventStore
from pipeline.adapters.schema import consent, delivery, suppression, webhook_event
from pipeline.adapters.storage import Store
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.core.errors import StorageError
from pipeline.core.subscribers import Frequency, SubscriberStatus
from tests.web.test_webhook_signing import body_of, make_event

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _reader(store: Store, email: str) -> int:
    reader, _ = SubscriberStore(store).add(
        email,
        themes=["sanctions"],
        frequency=Frequency.DAILY,
        hour=7,
        timezone="UTC",
        status=SubscriberStatus.ACTIVE,
        now=NOW,
    )
    return reader.id


def _unknown(store: Store, subscriber_id: int) -> int:
    ledger = DeliveryStore(store)
    row = ledger.queue_confirmation(subscriber_id, NOW)
    ledger.claim(NOW, "w", 10)
    ledger.mark_unknown(row, "w", "timeout")
    return row


def _count(store: Store, table: object) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_a_batch_is_applied_once_on_both_engines(store: Store) -> None:
    row = _unknown(store, _reader(store, "r@example.org"))
    body = body_of(
        [
            make_event("processed", "r@example.org", delivery_id=row),
            make_event("bounce", "r@example.org", type="bounce"),
            make_event("novel_type", "r@example.org", payload={"nested": ["\u0000", 1.5]}),
        ]
    )
    first = events.apply_batch(EventStore(store), body, NOW)
    again = events.apply_batch(EventStore(store), body, NOW)
    assert (first.applied, first.deliveries, first.suppressions, first.subscribers) == (3, 1, 1, 1)
    assert (again.applied, again.duplicates) == (0, 3)
    assert _count(store, webhook_event) == 3
    assert _count(store, suppression) == 1
    with store.engine.connect() as conn:
        assert conn.execute(select(delivery.c.status)).scalar_one() == DeliveryStatus.SENT
    stored = EventStore(store).events(event_type="novel_type")
    assert stored[0].payload["payload"] == {"nested": ["\u0000", 1.5]}


def test_concurrent_deliveries_of_one_batch_apply_it_once(store: Store) -> None:
    """Two web workers receiving SendGrid's duplicate at the same moment."""
    for n in range(20):
        _reader(store, f"r{n}@example.org")
    body = body_of(
        [make_event("bounce", f"r{n}@example.org", type="bounce") for n in range(20)]
        + [make_event("unsubscribe", f"r{n}@example.org") for n in range(20)]
    )
    batch = json.loads(body)
    # The exact duplicate, the same events reversed, and shuffled with new sg_event_ids
    # (SendGrid's retries): each worker locks rows in another order.
    shuffled = [dict(e, sg_event_id=f"retry-{n}") for n, e in enumerate(batch)]
    random.Random(7).shuffle(shuffled)
    bodies = [body, body, body_of(list(reversed(batch))), body_of(shuffled)]
    reports: list[events.BatchReport] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def deliver(one: bytes) -> None:
        start.wait()
        try:
            reports.append(events.apply_batch(EventStore(store), one, NOW))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=deliver, args=(one,)) for one in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sum(r.applied for r in reports) == 40
    assert sum(r.duplicates for r in reports) == 3 * 40
    assert _count(store, webhook_event) == 40
    assert _count(store, suppression) == 20
    # Whichever came first wins (neither overwrites the other), and each applied once:
    statuses = [s.status for s in SubscriberStore(store).all()]
    assert set(statuses) <= {SubscriberStatus.BOUNCED, SubscriberStatus.UNSUBSCRIBED}
    assert _count(store, consent) == statuses.count(SubscriberStatus.UNSUBSCRIBED)


def test_a_database_failure_keeps_nothing_of_the_batch(store: Store) -> None:
    class Exploding(EventStore):
        """Fails after the events and suppressions were written, before the ledger."""

        def _settle(self, conn: Connection, fresh: Any, now: datetime) -> int:
            conn.exec_driver_sql("SELECT * FROM no_such_table")
            raise AssertionError("unreachable")

    body = body_of([make_event("bounce", f"r{n}@example.org", type="bounce") for n in range(3)])
    with pytest.raises(StorageError):
        events.apply_batch(Exploding(store), body, NOW)
    assert _count(store, webhook_event) == 0
    assert _count(store, suppression) == 0
    assert events.apply_batch(EventStore(store), body, NOW).applied == 3  # the retry works


def test_forgetting_an_address_deletes_its_events_and_keeps_its_suppression(store: Store) -> None:
    body = body_of(
        [
            make_event("bounce", "Gone@example.org", type="bounce"),
            make_event("delivered", "gone@example.org"),
            make_event("delivered", "stays@example.org"),
        ]
    )
    events.apply_batch(EventStore(store), body, NOW)
    assert EventStore(store).forget(events.email_hash("gone@example.org")) == 2
    assert [e.email_hash for e in EventStore(store).events()] == [
        events.email_hash("stays@example.org")
    ]
    assert EventStore(store).suppression_reason(events.email_hash("gone@example.org")) == "bounced"
