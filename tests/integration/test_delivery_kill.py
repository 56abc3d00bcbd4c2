"""D-01: `qasid send` killed with SIGKILL midway, then a restart: every reader ends with
exactly one email and one `sent` row, nobody skipped (the outbox backend, then SendGrid
through the validating stand-in). The sender is a real child process; the restart runs
in this process on a clock moved past the send lease and the unknown-resend delay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path

import pytest

from pipeline import delivery
from pipeline.adapters.delivery_store import DeliveryStatus, DeliveryStore
from pipeline.bootstrap import App
from tests.integration.test_delivery import KARACHI_SEVEN, NEWS, sendgrid, store_news
from tests.integration.test_delivery_load import many_readers
from tests.support.app import FakeClock, environment_for_tests, make_app
from tests.support.sendgrid_stub import Reply, SendGridStub

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def built_app(sqlite_url: str, tmp_path: Path, readers: int) -> App:
    app = make_app(sqlite_url, tmp_path, FakeClock(KARACHI_SEVEN + timedelta(minutes=5)))
    store_news(app, *NEWS)
    many_readers(app, readers)
    assert delivery.build_due_digests(app).built == readers
    return app


def start_sender(sqlite_url: str, tmp_path: Path, **settings: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QASID_")}
    env.update(environment_for_tests(sqlite_url, tmp_path))
    env.update({f"QASID_{key.upper()}": value for key, value in settings.items()})
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "--config", str(tmp_path / "qasid.toml"), "send"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_when(process: subprocess.Popen[str], ready: Callable[[], bool], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"the sender ended before it was killed:\n{output}")
        assert time.monotonic() < deadline, "the sender never got midway"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def restart(sqlite_url: str, tmp_path: Path, configure: Callable[[App], None]) -> App:
    """A new process's app, on a clock past the lease (rows left in `sending` become
    unknown) and then past the unknown-resend delay (resent once)."""
    clock = FakeClock(datetime.now(UTC) + timedelta(minutes=11))
    app = make_app(sqlite_url, tmp_path, clock)
    configure(app)
    reaped, _ = delivery.recover(app)
    assert reaped > 0  # the kill left rows in `sending`
    clock.advance(minutes=61)
    delivery.recover(app)
    delivery.drain_queue(app, app.mailer())
    return app


def test_a_sender_killed_mid_queue_leaves_one_email_per_reader_in_the_outbox(
    sqlite_url: str, tmp_path: Path
) -> None:
    readers = 400
    built_app(sqlite_url, tmp_path, readers).close()
    outbox = tmp_path / "outbox"
    sender = start_sender(sqlite_url, tmp_path, digest_send_batch="10")
    kill_when(sender, lambda: len(list(outbox.glob("*.eml"))) >= 25, limit=120)
    before = len(list(outbox.glob("*.eml")))
    assert before < readers  # killed midway

    app = restart(sqlite_url, tmp_path, lambda app: None)
    assert DeliveryStore(app.store).counts_by_status() == {DeliveryStatus.SENT: readers}
    recipients = Counter(
        message_from_bytes(path.read_bytes())["To"] for path in outbox.glob("*.eml")
    )
    assert len(recipients) == readers and set(recipients.values()) == {1}
    app.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_sender_killed_during_a_request_to_sendgrid_mails_each_reader_once(
    sqlite_url: str, tmp_path: Path, sendgrid_stub: SendGridStub, workers: str
) -> None:
    readers = 20
    built_app(sqlite_url, tmp_path, readers).close()
    # Two requests accepted, the third held unanswered (and then refused) while the
    # sender is killed: its readers were never accepted, so they must be sent again.
    # With two processes sending, the other one goes on meanwhile (the stub accepts what
    # it has no script for) until the kill, which may land between the stub's acceptance
    # of its batch and the ledger's record: the documented window, where a reader gets
    # one duplicate at most, flagged as resent.
    sendgrid_stub.script(
        Reply(202),
        Reply(202),
        Reply(500, body={"errors": [{"field": None, "message": "down"}]}, stall=60),
    )
    sender = start_sender(
        sqlite_url,
        tmp_path,
        mail_backend="sendgrid",
        sendgrid_host=sendgrid_stub.url,
        sendgrid_api_key=sendgrid_stub.api_key,
        sendgrid_timeout="120",
        sendgrid_batch_size="5",
        digest_send_batch="5",
        digest_send_workers=workers,
    )
    kill_when(sender, lambda: len(sendgrid_stub.requests) >= 3, limit=120)
    accepted_before = len(sendgrid_stub.deliveries())
    if workers == "1":
        assert accepted_before == 10
    else:  # the held batch's five readers at least were not accepted
        assert 10 <= accepted_before <= readers - 5

    app = restart(sqlite_url, tmp_path, lambda app: sendgrid(app, sendgrid_stub))
    assert DeliveryStore(app.store).counts_by_status() == {DeliveryStatus.SENT: readers}
    recipients = Counter(d.to for d in sendgrid_stub.deliveries())
    assert len(recipients) == readers
    if workers == "1":
        assert set(recipients.values()) == {1}
    else:
        twice = {to for to, count in recipients.items() if count > 1}
        assert set(recipients.values()) <= {1, 2} and twice <= resent_readers(app)
    app.close()


def resent_readers(app: App) -> set[str]:
    """The addresses whose delivery the ledger resent after an unknown outcome."""
    from sqlalchemy import select

    from pipeline.adapters.schema import delivery as delivery_table
    from pipeline.adapters.schema import subscriber

    query = (
        select(subscriber.c.email)
        .join(delivery_table, delivery_table.c.subscriber_id == subscriber.c.id)
        .where(delivery_table.c.resent.is_(True))
    )
    with app.store.engine.connect() as conn:
        return set(conn.execute(query).scalars())
