"""L-02: a digest for 5,000 readers to the outbox, and 500 through the SendGrid stand-in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import insert

from pipeline import delivery
from pipeline.adapters.delivery_store import DeliveryStatus, DeliveryStore
from pipeline.adapters.schema import subscriber
from pipeline.bootstrap import App
from tests.integration.test_delivery import KARACHI_SEVEN, NEWS, sendgrid, store_news
from tests.support.app import FakeClock, make_app
from tests.support.sendgrid_stub import SendGridStub


def many_readers(app: App, count: int) -> None:
    now = app.clock()
    rows = [
        {
            "email": f"reader{n}@example.com",
            "status": "active",
            "themes": ["sanctions", "economy", "afghanistan"],
            "frequency": "daily",
            "hour": 7,
            "timezone": "Asia/Karachi",
            "created_at": now,
            "updated_at": now,
        }
        for n in range(count)
    ]
    with app.store.engine.begin() as conn:
        conn.execute(insert(subscriber), rows)


@pytest.fixture
def app(sqlite_url: str, tmp_path: Path) -> App:
    from datetime import timedelta

    return make_app(sqlite_url, tmp_path, FakeClock(KARACHI_SEVEN + timedelta(minutes=5)))


@pytest.mark.slow
@pytest.mark.timeout(900)  # 5,000 renders and fsynced files on two shared cores
def test_five_thousand_readers_get_exactly_one_email_each(app: App) -> None:
    store_news(app, *NEWS)
    many_readers(app, 5000)
    started = time.monotonic()
    assert delivery.build_due_digests(app).built == 5000
    summary = delivery.drain_queue(app, app.mailer())
    elapsed = time.monotonic() - started
    assert summary.sent == 5000
    files = list(app.settings.path(app.settings.mail.outbox_dir).glob("*.eml"))
    assert len(files) == 5000
    ids = {f.read_text(encoding="utf-8").split("Message-ID: ", 1)[1].split()[0] for f in files}
    assert len(ids) == 5000  # no duplicate Message-ID
    # L-02 asks for < 90 s on a quiet machine: measured in BENCHMARKS.md; a hang guard here.
    assert elapsed < 600, f"took {elapsed:.0f} s"
    app.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_five_hundred_readers_through_sendgrid_each_accepted_once(
    app: App, sendgrid_stub: SendGridStub
) -> None:
    store_news(app, *NEWS)
    many_readers(app, 500)
    delivery.build_due_digests(app)
    sendgrid(app, sendgrid_stub)
    summary = delivery.drain_queue(app, app.mailer())
    assert summary.sent == 500
    assert DeliveryStore(app.store).counts_by_status() == {DeliveryStatus.SENT: 500}
    recipients = [d.to for d in sendgrid_stub.deliveries()]
    assert len(recipients) == len(set(recipients)) == 500
    app.close()
