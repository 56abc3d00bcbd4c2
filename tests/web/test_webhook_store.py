"""The event store on both engines: once per event, effects in the event's transaction."""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from pipeline import events, jobs
from pipeline.adapters.delivery_store import DeliveryStatus, DeliveryStore
from pipeline.adapters.event_store import EventStore, PurgeCounts
from pipeline.adapters.schema import consent, delivery, suppression, webhook_event
from pipeline.adapters.storage import Store
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import build_app
from pipeline.core.errors import ConfigError, StorageError
from pipeline.core.subscribers import Frequency, SubscriberStatus
from pipeline.scheduler import build_scheduler, housekeeping_tick
from pipeline.settings import load_settings
from tests.support.app import FakeClock, settings_for_tests
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


def _receive(store: Store, at: datetime, *emails: str) -> bytes:
    body = body_of([make_event("delivered", email) for email in emails])
    events.apply_batch(EventStore(store), body, at)
    return body


def test_retention_deletes_old_events_and_quarantined_bodies(store: Store) -> None:
    old = [
        _receive(store, NOW - timedelta(days=40, minutes=n), f"o{n}@example.org") for n in (1, 2)
    ]
    old.append(_receive(store, NOW - timedelta(days=31), *(f"b{n}@example.org" for n in range(5))))
    recent = _receive(store, NOW - timedelta(days=2), "new@example.org", "new2@example.org")
    held = EventStore(store)
    held.quarantine("not json, old", "unreadable", NOW - timedelta(days=45))
    held.quarantine("not json, recent", "unreadable", NOW - timedelta(days=1))
    assert (held.count_events(), len(held.quarantined())) == (9, 2)

    counts = held.purge(NOW - timedelta(days=30), batch=2)  # several rounds of two
    assert (counts.events, counts.quarantined) == (7, 1)
    assert {e.email_hash for e in held.events()} == {
        events.email_hash("new@example.org"),
        events.email_hash("new2@example.org"),
    }
    assert [q.body for q in held.quarantined()] == ["not json, recent"]
    # What is kept still applies each event once; what was purged would apply again.
    assert events.apply_batch(held, recent, NOW).duplicates == 2
    assert held.purge(NOW - timedelta(days=30)) == PurgeCounts(0, 0)
    assert events.apply_batch(held, old[0], NOW).applied == 1


def test_the_worker_purges_webhook_rows_daily_after_the_configured_days(
    sqlite_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(now=NOW)
    settings = settings_for_tests(sqlite_url, tmp_path)
    settings = settings.model_copy(
        update={"sendgrid": settings.sendgrid.model_copy(update={"webhook_retention_days": 7})}
    )
    app = build_app(settings, clock=clock)
    app.store.upgrade()
    _receive(app.store, NOW - timedelta(days=8), "old@example.org")
    _receive(app.store, NOW - timedelta(days=6), "new@example.org")
    EventStore(app.store).quarantine("x", "unreadable", NOW - timedelta(days=7, seconds=1))

    assert jobs.purge_webhook_events(app) == PurgeCounts(events=1, quarantined=1)
    assert [e.email_hash for e in EventStore(app.store).events()] == [
        events.email_hash("new@example.org")
    ]
    job = build_scheduler(app).get_job("housekeeping")
    assert job is not None and job.func is housekeeping_tick and job.args == (app,)
    assert job.trigger.interval == timedelta(days=1)
    clock.advance(days=1, seconds=1)
    housekeeping_tick(app)
    assert EventStore(app.store).count_events() == 0
    app.close()


@pytest.mark.parametrize("days", ["0", "1"])
def test_retention_shorter_than_sendgrids_retries_is_refused(days: str) -> None:
    with pytest.raises(ConfigError, match="webhook_retention_days"):
        load_settings(environ={"QASID_SENDGRID_WEBHOOK_RETENTION_DAYS": days})
    assert load_settings(environ={}).sendgrid.webhook_retention_days == 30
