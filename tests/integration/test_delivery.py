"""Digests and alerts end to end: the ledger, the renderer and real mail backends."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import event

from pipeline import delivery
from pipeline.adapters import delivery_store, forked
from pipeline.adapters.delivery_store import DeliveryStatus, DeliveryStore
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.errors import ConfigError
from pipeline.core.models import FeedSource, Item
from pipeline.core.subscribers import SubscriberStatus
from pipeline.subscriptions import add_watchlist, subscribe
from tests.support.app import FakeClock, make_app
from tests.support.sendgrid_stub import Reply, SendGridStub
from tests.support.smtp_server import SmtpServer

# 07:00 in Karachi is 02:00 UTC; the clock starts just after that.
KARACHI_SEVEN = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(KARACHI_SEVEN + timedelta(minutes=5))


@pytest.fixture
def app(store_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    app = make_app(store_url, tmp_path, clock)
    app.settings = app.settings.model_copy(
        update={
            "mail": app.settings.mail.model_copy(
                update={
                    "outbox_dir": str(tmp_path / "outbox"),
                    "postal_address": "1 Test Street, Lahore",
                    "from_address": "qasid <digest@qasid.test>",
                }
            ),
            "web": app.settings.web.model_copy(update={"secret_key": "test-secret"}),
        }
    )
    yield app
    app.close()


def with_mail(app: App, **mail: object) -> None:
    app.settings = app.settings.model_copy(
        update={"mail": app.settings.mail.model_copy(update=mail)}
    )


def store_news(app: App, *titles: str, hours_ago: float = 3, first: int = 0) -> None:
    feed_id, _ = app.store.add_feed(
        FeedSource(url="https://dawn.example/feed", title="Dawn", country="PK"),
        "cli",
        app.clock(),
    )
    items = [
        Item(
            guid_key=f"g-{title}",
            link=f"https://dawn.example/{n}",
            title=title,
            summary_html="",
            summary_text=f"{title}. Officials in Islamabad said more would follow.",
            published=app.clock() - timedelta(hours=hours_ago, minutes=n),
            language="en",
            content_hash=str(n),
        )
        for n, title in enumerate(titles, start=first)
    ]
    from pipeline.services import tag_items

    state = app.store.get_feed("https://dawn.example/feed")
    assert state is not None
    app.store.store_items(
        feed_id, state.url, items, app.clock(), tag_items(app.tagger, items, state)
    )


NEWS = (
    "US sanctions Pakistani firms supplying the ballistic missile programme",
    "IMF approves next loan tranche for Pakistan after budget talks",
    "Torkham border crossing with Afghanistan reopens after clashes",
)


def outbox_messages(app: App) -> list[EmailMessage]:
    folder = app.settings.path(app.settings.mail.outbox_dir)
    return [
        cast(EmailMessage, message_from_bytes(p.read_bytes(), policy=policy.default))
        for p in sorted(folder.glob("*.eml"))
    ]


def test_a_due_digest_is_built_once_and_sent_once(app: App) -> None:
    store_news(app, *NEWS)
    subscribe(app, "reader@example.com", hour=7, timezone="Asia/Karachi")
    add_watchlist(app, "reader@example.com", "Gwadar")
    add_watchlist(app, "reader@example.com", "heatwave", instant=True)
    first = delivery.build_due_digests(app)
    again = delivery.build_due_digests(app)
    assert (first.built, again.built, again.existing) == (1, 0, 0)
    mailer = app.mailer()
    sent = delivery.drain_queue(app, mailer)
    assert (sent.sent, delivery.drain_queue(app, mailer).sent) == (1, 0)
    [message] = outbox_messages(app)
    assert message["To"] == "reader@example.com"
    assert "Sanctions" in message["Subject"] or "economy" in message["Subject"].lower()
    assert message.get_content_type() == "multipart/alternative"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (
        "<https://" in message["List-Unsubscribe"]
        or "<http://127.0.0.1" in message["List-Unsubscribe"]
    )
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    for part in (text, html):
        assert "IMF approves next loan tranche" in part
        assert "1 Test Street, Lahore" in part
        assert "/unsubscribe/" in part
        assert "2 watchlists)" in part  # all of them, the instant one too


@pytest.mark.parametrize(
    ("themes", "watchlists", "said"),
    [
        (1, 1, "1 theme, 1 watchlist)"),
        (2, 0, "2 themes, 0 watchlists)"),
        (3, 5, "3 themes, 5 watchlists)"),
    ],
)
def test_why_you_got_this_counts_themes_and_watchlists_in_good_english(
    themes: int, watchlists: int, said: str
) -> None:
    from pipeline.core.subscribers import Frequency, Subscriber

    reader = Subscriber(
        id=1,
        email="r@example.com",
        status=SubscriberStatus.ACTIVE,
        themes=("sanctions", "india", "economy")[:themes],
        frequency=Frequency.DAILY,
        hour=7,
        timezone="Asia/Karachi",
    )
    reason = delivery._reason(reader, "qasid", watchlists)
    assert reason.endswith(f"(a daily digest at 07:00 Asia/Karachi, {said}.")


def test_the_build_runs_without_the_cyclic_collector_and_gives_it_back(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build pauses the collector for the whole job (its objects make no cycles) and
    switches it on again when it ends, even when it fails: the worker's other jobs run
    in the same process."""
    import gc

    store_news(app, *NEWS)
    subscribe(app, "reader@example.com", hour=7, timezone="Asia/Karachi")
    # On one process: with two, the reader's chunk may be built by the forked helper, where
    # ``seen`` would not record it.
    app.settings = app.settings.model_copy(
        update={"digest": app.settings.digest.model_copy(update={"build_workers": 1})}
    )
    # Through the ledger (an adapter): the job's own functions may be compiled (mypyc),
    # and compiled code calls them directly, past any patch.
    seen: list[bool] = []
    create_editions = DeliveryStore.create_editions

    def watching(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return create_editions(*args, **kwargs)  # type: ignore[arg-type]

    def failing(*args: object, **kwargs: object) -> object:
        raise RuntimeError("the build failed")

    was = gc.isenabled()
    gc.enable()
    try:
        monkeypatch.setattr(DeliveryStore, "create_editions", failing)
        with pytest.raises(RuntimeError):
            delivery.build_due_digests(app)
        assert gc.isenabled()
        monkeypatch.setattr(DeliveryStore, "create_editions", watching)
        assert delivery.build_due_digests(app).built == 1
        assert seen == [False]
        assert gc.isenabled()
    finally:
        if not was:
            gc.disable()


def test_karachi_and_new_york_readers_are_due_at_their_own_seven(
    app: App, clock: FakeClock
) -> None:
    store_news(app, *NEWS, hours_ago=1)
    subscribe(app, "khi@example.com", hour=7, timezone="Asia/Karachi")
    subscribe(app, "nyc@example.com", hour=7, timezone="America/New_York")
    people = SubscriberStore(app.store)
    ledger = DeliveryStore(app.store)
    delivery.build_due_digests(app)
    khi, nyc = people.get("khi@example.com"), people.get("nyc@example.com")
    assert khi and nyc
    assert len(ledger.deliveries_for(khi.id)) == 1
    # New York's 07:00 on the 28th was its last slot; its first digest covers the day before.
    before_nyc = len(ledger.deliveries_for(nyc.id))
    clock.advance(hours=10)  # 12:05 UTC = 07:05 in New York
    store_news(app, "Pakistan and US hold counterterrorism dialogue in Washington", hours_ago=1)
    delivery.build_due_digests(app)
    assert len(ledger.deliveries_for(nyc.id)) == before_nyc + 1
    assert len(ledger.deliveries_for(khi.id)) == 1  # not again until tomorrow


def test_an_empty_period_sends_nothing(app: App) -> None:
    subscribe(app, "reader@example.com", hour=7, timezone="Asia/Karachi")
    summary = delivery.build_due_digests(app)
    assert (summary.built, summary.empty) == (0, 1)
    assert delivery.drain_queue(app, app.mailer()).sent == 0


def test_unsubscribing_after_the_build_wins_at_send_time(app: App) -> None:
    store_news(app, *NEWS)
    subscribe(app, "leaver@example.com", hour=7, timezone="Asia/Karachi")
    delivery.build_due_digests(app)
    SubscriberStore(app.store).set_status(
        "leaver@example.com", SubscriberStatus.UNSUBSCRIBED, app.clock()
    )
    summary = delivery.drain_queue(app, app.mailer())
    assert (summary.sent, summary.suppressed) == (0, 1)
    assert outbox_messages(app) == []


def test_watchlist_hits_come_in_with_the_query_that_matched(app: App) -> None:
    store_news(app, "Chinese engineers return to Gwadar port project", *NEWS)
    subscribe(app, "w@example.com", themes=["climate"], hour=7, timezone="Asia/Karachi")
    add_watchlist(app, "w@example.com", "CPEC OR Gwadar")
    delivery.build_due_digests(app)
    delivery.drain_queue(app, app.mailer())
    [message] = outbox_messages(app)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Gwadar port project" in text
    assert "watchlist: CPEC OR Gwadar" in text
    assert "IMF approves" not in text  # not a chosen theme, no watchlist hit


def test_alerts_go_out_for_us_linked_priority_items_up_to_the_daily_cap(app: App) -> None:
    app.settings = app.settings.model_copy(
        update={"digest": app.settings.digest.model_copy(update={"alerts_per_day": 1})}
    )
    store_news(
        app,
        "US sanctions Pakistani firms supplying the ballistic missile programme",
        "US Treasury designates TTP commanders as terrorists, Pakistan welcomes move",
        hours_ago=0.5,
    )
    subscribe(app, "urgent@example.com", frequency="instant", timezone="Asia/Karachi")
    assert delivery.queue_alerts(app) == 1  # the cap
    assert delivery.queue_alerts(app) == 0  # never twice, never over the cap
    summary = delivery.drain_queue(app, app.mailer())
    assert summary.sent == 1
    [message] = outbox_messages(app)
    assert message["Subject"].startswith("qasid alert: ")


def test_an_instant_watchlist_alerts_a_daily_reader(app: App) -> None:
    store_news(app, "Pakistan seeks F-16 spare parts in talks with Washington", hours_ago=0.5)
    subscribe(app, "f16@example.com", frequency="daily")
    add_watchlist(app, "f16@example.com", "F-16", instant=True)
    add_watchlist(app, "f16@example.com", "sanctions", instant=True)  # not this item's
    assert delivery.queue_alerts(app) == 1
    # The sending job holds no one's watchlists: the reader's own instant ones are matched
    # when the alert is composed, and the one that matched heads it.
    assert delivery.drain_queue(app, app.mailer()).sent == 1
    [message] = outbox_messages(app)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and 'Watchlist: "F 16"' in body.get_content()  # as saved


def test_sending_refuses_to_start_without_a_postal_address(app: App) -> None:
    with_mail(app, postal_address="")
    with pytest.raises(ConfigError, match=r"mail\.postal_address"):
        delivery.drain_queue(app, app.mailer())


def test_digest_arrives_whole_through_a_real_smtp_server(app: App, smtp_server: SmtpServer) -> None:
    store_news(app, *NEWS)
    subscribe(app, "smtp@example.com", hour=7, timezone="Asia/Karachi")
    delivery.build_due_digests(app)
    with_mail(app, backend="smtp")
    app.settings = app.settings.model_copy(
        update={
            "smtp": app.settings.smtp.model_copy(
                update={"host": "127.0.0.1", "port": smtp_server.port}
            )
        }
    )
    summary = delivery.drain_queue(app, app.mailer())
    assert summary.sent == 1
    [received] = smtp_server.messages
    message = received.message()
    assert received.rcpt_tos == ("smtp@example.com",)
    assert message.get_content_type() == "multipart/alternative"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"].startswith("<delivery-")


def test_each_sending_process_talks_to_the_smtp_server_on_its_own_connection(
    app: App, clock: FakeClock, smtp_server: SmtpServer
) -> None:
    """The job's process sends its first batch, then forked helpers send the rest: none
    writes on a connection it inherited (``SmtpMailer.after_fork``), every reader gets one
    whole email."""
    many_built(app, clock, 12)
    with_digest(app, send_batch=2, send_workers=3)  # 6 batches on 3 processes
    with_mail(app, backend="smtp")
    app.settings = app.settings.model_copy(
        update={
            "smtp": app.settings.smtp.model_copy(
                update={"host": "127.0.0.1", "port": smtp_server.port}
            )
        }
    )
    mailer = app.mailer()
    summary = delivery.drain_queue(app, mailer)
    mailer.close()
    assert (summary.sent, summary.failed, summary.unknown, summary.retried) == (12, 0, 0, 0)
    recipients = sorted(to for m in smtp_server.messages for to in m.rcpt_tos)
    assert recipients == sorted(f"r{n}@example.com" for n in range(12))
    assert all(
        m.message().get_content_type() == "multipart/alternative" for m in smtp_server.messages
    )
    assert smtp_server.sessions >= 2  # the job's own connection and a helper's at least
    assert DeliveryStore(app.store).counts_by_status() == {DeliveryStatus.SENT: 12}


def sendgrid(app: App, stub: SendGridStub, api_key: str | None = None) -> None:
    """Send through ``stub`` (with its key, unless ``api_key`` says otherwise)."""
    with_mail(app, backend="sendgrid")
    app.settings = app.settings.model_copy(
        update={
            "sendgrid": app.settings.sendgrid.model_copy(
                update={"host": stub.url, "api_key": api_key or stub.api_key, "timeout": 2.0}
            )
        }
    )


def test_sendgrid_rate_limit_then_accept_delivers_exactly_once(
    app: App, sendgrid_stub: SendGridStub, clock: FakeClock
) -> None:
    store_news(app, *NEWS)
    subscribe(app, "sg@example.com", hour=7, timezone="Asia/Karachi")
    delivery.build_due_digests(app)
    sendgrid(app, sendgrid_stub)
    sendgrid_stub.script(Reply.rate_limited(retry_after=30))
    first = delivery.drain_queue(app, app.mailer())
    assert (first.sent, first.retried) == (0, 1)
    assert delivery.drain_queue(app, app.mailer()).sent == 0  # not before Retry-After
    clock.advance(seconds=31)
    assert delivery.drain_queue(app, app.mailer()).sent == 1
    accepted = [d for d in sendgrid_stub.deliveries() if d.to == "sg@example.com"]
    assert len(accepted) == 1
    assert accepted[0].custom_args.get("delivery_id")


def test_sendgrid_server_error_is_unknown_then_resent_once_after_the_window(
    app: App, sendgrid_stub: SendGridStub, clock: FakeClock
) -> None:
    store_news(app, *NEWS)
    subscribe(app, "sg@example.com", hour=7, timezone="Asia/Karachi")
    delivery.build_due_digests(app)
    sendgrid(app, sendgrid_stub)
    sendgrid_stub.script(Reply.server_error())
    assert delivery.drain_queue(app, app.mailer()).unknown == 1
    assert delivery.recover(app) == (0, 0)  # the window has not passed
    clock.advance(minutes=61)
    assert delivery.recover(app) == (0, 1)
    assert delivery.drain_queue(app, app.mailer()).sent == 1
    clock.advance(days=1)
    assert delivery.recover(app) == (0, 0)
    assert DeliveryStore(app.store).counts_by_status() == {DeliveryStatus.SENT: 1}


def test_a_worker_that_died_mid_send_leaves_no_one_skipped_and_no_one_mailed_twice(
    app: App, clock: FakeClock
) -> None:
    store_news(app, *NEWS)
    for n in range(5):
        subscribe(app, f"r{n}@example.com", hour=7, timezone="Asia/Karachi")
    delivery.build_due_digests(app)
    ledger = DeliveryStore(app.store)
    # A worker claims two rows and dies (kill -9) before recording anything.
    dead = ledger.claim(app.clock(), "dead-worker", 2)
    assert len(dead) == 2
    delivery.drain_queue(app, app.mailer())  # the other three go out
    clock.advance(minutes=11)
    assert delivery.recover(app)[0] == 2  # stuck in sending → unknown
    clock.advance(minutes=61)
    delivery.recover(app)  # no provider news: resent once
    delivery.drain_queue(app, app.mailer())
    statuses = ledger.counts_by_status()
    assert statuses == {DeliveryStatus.SENT: 5}
    # The outbox names files by delivery id: a resend overwrites, never duplicates.
    assert sorted(m["To"] for m in outbox_messages(app)) == [f"r{n}@example.com" for n in range(5)]


def test_a_crash_between_edition_and_delivery_rows_leaves_nothing(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_news(app, *NEWS)
    subscribe(app, "crash@example.com", hour=7, timezone="Asia/Karachi")

    def explode(conn, clauseelement, multiparams, params, execution_options):  # type: ignore[no-untyped-def]
        if "INSERT INTO delivery" in str(clauseelement):
            raise RuntimeError("power cut")

    # SQLite's editions and delivery rows go through the connection's own cursor
    insert = delivery_store._sqlite_insert

    def insert_then_explode(conn: Any, table: Any, rows: Any, returning_id: bool = False) -> Any:
        if table.name == "delivery":
            raise RuntimeError("power cut")
        return insert(conn, table, rows, returning_id)

    monkeypatch.setattr(delivery_store, "_sqlite_insert", insert_then_explode)
    event.listen(app.store.engine, "before_execute", explode)
    with pytest.raises(Exception, match="power cut"):
        delivery.build_due_digests(app)
    event.remove(app.store.engine, "before_execute", explode)
    monkeypatch.undo()
    ledger = DeliveryStore(app.store)
    sub = SubscriberStore(app.store).get("crash@example.com")
    assert sub is not None
    assert ledger.last_period_end("personal", sub.id, "daily") is None  # no half edition
    assert delivery.build_due_digests(app).built == 1  # rebuilt on the next tick


def test_identical_digests_go_to_sendgrid_in_one_request_with_personal_links(
    app: App, sendgrid_stub: SendGridStub
) -> None:
    store_news(app, *NEWS)
    for n in range(3):
        subscribe(app, f"same{n}@example.com", hour=7, timezone="Asia/Karachi")
    delivery.build_due_digests(app)
    sendgrid(app, sendgrid_stub)
    assert delivery.drain_queue(app, app.mailer()).sent == 3
    sends = [r for r in sendgrid_stub.requests if r.path.endswith("/mail/send")]
    assert len(sends) == 1
    assert len(sends[0].payload["personalizations"]) == 3
    received = {d.to: d for d in sendgrid_stub.deliveries()}
    links = {to: d.text.split("Unsubscribe: ")[1].split()[0] for to, d in received.items()}
    assert len(set(links.values())) == 3  # each reader their own link
    assert all("%%" not in d.text and "%%" not in d.html for d in received.values())


def test_a_bad_key_stops_the_run_and_marks_nobody_sent(
    app: App, sendgrid_stub: SendGridStub, clock: FakeClock
) -> None:
    store_news(app, *NEWS)
    for n in range(3):
        subscribe(
            app,
            f"k{n}@example.com",
            hour=7,
            timezone="Asia/Karachi",
            themes=[["economy", "sanctions", "afghanistan"][n]],
        )
    delivery.build_due_digests(app)
    sendgrid(app, sendgrid_stub, api_key="SG.wrong")
    summary = delivery.drain_queue(app, app.mailer())
    assert summary.fatal and summary.sent == 0
    assert DeliveryStore(app.store).counts_by_status() == {DeliveryStatus.QUEUED: 3}
    sendgrid(app, sendgrid_stub)  # the key is fixed: a later run sends everything
    clock.advance(minutes=3)
    assert delivery.drain_queue(app, app.mailer()).sent == 3


def test_one_rejected_recipient_among_fifty_fails_alone(
    app: App, sendgrid_stub: SendGridStub
) -> None:
    from pipeline.core.subscribers import Frequency

    store_news(app, *NEWS)
    people = SubscriberStore(app.store)
    addresses = [f"ok{n}@example.com" for n in range(49)] + ["not-an-address@@example"]
    for address in addresses:
        people.add(
            address,
            themes=["economy"],
            frequency=Frequency.DAILY,
            hour=7,
            timezone="Asia/Karachi",
            status=SubscriberStatus.ACTIVE,
            now=app.clock(),
        )
    delivery.build_due_digests(app)
    sendgrid(app, sendgrid_stub)
    summary = delivery.drain_queue(app, app.mailer())
    assert (summary.sent, summary.failed) == (49, 1)
    assert delivery.drain_queue(app, app.mailer()).sent == 0  # no retry loop


@pytest.mark.postgres
def test_two_workers_build_and_drain_the_same_due_digests_once(
    postgres_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    import threading

    apps = [make_app(postgres_url, tmp_path / f"w{n}", clock) for n in range(2)]
    for n, worker in enumerate(apps):
        worker.worker_name = f"worker-{n}"
    store_news(apps[0], *NEWS)
    for n in range(20):
        subscribe(apps[0], f"p{n}@example.com", hour=7, timezone="Asia/Karachi")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(worker: App) -> None:
        try:
            barrier.wait()
            delivery.build_due_digests(worker)
            delivery.drain_queue(worker, worker.mailer())
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert DeliveryStore(apps[0].store).counts_by_status() == {DeliveryStatus.SENT: 20}
    recipients = [m["To"] for a in apps for m in outbox_messages(a)]
    assert sorted(recipients) == sorted(f"p{n}@example.com" for n in range(20))
    for a in apps:
        a.close()


def test_a_paused_reader_who_asks_for_a_link_gets_one_and_nothing_else(app: App) -> None:
    from pipeline import accounts

    store_news(app, *NEWS)
    subscribe(app, "paused@example.com", hour=7, timezone="Asia/Karachi")
    people = SubscriberStore(app.store)
    people.set_status("paused@example.com", SubscriberStatus.PAUSED, app.clock())
    delivery.build_due_digests(app)  # paused: no digest
    reader = people.get("paused@example.com")
    assert reader is not None
    assert accounts.request_link(app, "paused@example.com") is not None
    summary = delivery.drain_queue(app, app.mailer())
    assert summary.sent == 1
    [message] = outbox_messages(app)
    assert message["Subject"].startswith("Your link to manage")
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "/manage/" in text and "%%" not in text


def test_a_build_reports_each_step_with_its_time(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    store_news(app, *NEWS)
    subscribe(app, "reader@example.com", hour=7, timezone="Asia/Karachi")
    with caplog.at_level(logging.INFO, logger="pipeline.delivery"):
        delivery.build_due_digests(app)
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("digest build:")]
    assert steps[0].startswith("digest build: 1 of 1 readers due (")
    assert any("3 items clustered into 3 stories" in line for line in steps)
    assert re.search(r"1 digests, 2 public editions, \d processes \(\d+\.\d s, ", steps[-1])
    # with more than one core the build runs in a forked child, its lines relayed here
    if forked.available_cores() > 1 and forked.can_fork():
        built_by = {r.process for r in caplog.records if r.getMessage().startswith("digest build:")}
        assert built_by and os.getpid() not in built_by


def editions_by_reader(app: App) -> dict[int, tuple[str, object, int | None]]:
    from sqlalchemy import select

    from pipeline.adapters.schema import delivery as delivery_table
    from pipeline.adapters.schema import edition

    with app.store.engine.connect() as conn:
        queued = dict(
            conn.execute(select(delivery_table.c.edition_id, delivery_table.c.subscriber_id)).all()
        )
        rows = conn.execute(
            select(
                edition.c.id, edition.c.subscriber_id, edition.c.subject, edition.c.content
            ).where(edition.c.kind == "personal")
        ).all()
    return {r.subscriber_id: (r.subject, r.content, queued.get(r.id)) for r in rows}


def test_digests_built_on_several_processes_equal_those_built_in_one(
    app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy import delete, select

    from pipeline.adapters.schema import delivery as delivery_table
    from pipeline.adapters.schema import edition

    store_news(
        app,
        "Chinese engineers return to Gwadar port project",
        "Pakistan and India trade fire across the Line of Control",
        "Karachi heatwave strains power grid as monsoon fails",
        *NEWS,
    )
    # the day before: what the volume lines compare with (all stories in sections)
    store_news(app, *NEWS[:2], "IMF staff visit Islamabad", hours_ago=27, first=10)
    with_digest(app, top_stories=0)
    choices = [["sanctions"], ["economy", "afghanistan"], ["china", "climate"], []]
    for n in range(14):
        email = f"r{n}@example.com"
        zone = ("Asia/Karachi", "Asia/Karachi", "Europe/London")[n % 3]
        subscribe(app, email, themes=choices[n % 4] or ["india"], hour=7, timezone=zone)
        if n % 2:
            add_watchlist(app, email, ("Gwadar", "IMF OR heatwave", '"Line of Control"')[n % 3])
    monkeypatch.setattr(delivery, "BUILD_CHUNK", 2)  # 7 tasks for 3 processes

    def build(
        workers: int,
    ) -> tuple[delivery.BuildSummary, dict[int, tuple[str, object, int | None]], list[object]]:
        app.settings = app.settings.model_copy(
            update={"digest": app.settings.digest.model_copy(update={"build_workers": workers})}
        )
        summary = delivery.build_due_digests(app)
        built = editions_by_reader(app)
        with app.store.engine.connect() as conn:
            public = conn.execute(
                select(edition.c.frequency, edition.c.subject, edition.c.content)
                .where(edition.c.kind == "public")
                .order_by(edition.c.frequency)
            ).all()
        with app.store.engine.begin() as conn:  # forget them: the next build makes them again
            conn.execute(delete(delivery_table))
            conn.execute(delete(edition))
        return summary, built, [tuple(row) for row in public]

    serial, alone, public_alone = build(1)
    parallel, shared, public_shared = build(3)
    assert (serial.processes, parallel.processes) == (1, 3)
    assert parallel.built == serial.built > 0
    assert parallel.public == serial.public == len(public_alone) == 2  # daily and weekly
    assert public_shared == public_alone  # built by a helper, stored here
    assert shared == alone  # same subjects and contents, one delivery row each
    assert any("watchlist: Gwadar" in json.dumps(content) for _, content, _ in alone.values())
    compared = [json.dumps(content) for _, content, _ in alone.values()]
    counted = r"[1-9]\d* stor(y|ies) this day, (the same as|(up|down) from [1-9])"
    assert any(re.search(counted, c) for c in compared)  # the day before had stories
    # the public editions are built and stored by the job's process while the engine's
    # child matches (here slowed down): the same editions
    match_texts = delivery._match_texts

    def slow_match(*args: Any, **kwargs: Any) -> Any:
        time.sleep(3)
        return match_texts(*args, **kwargs)

    monkeypatch.setattr(delivery, "_match_texts", slow_match)
    with caplog.at_level(logging.INFO, logger="pipeline.delivery"):
        early, shared_early, public_early = build(2)
    assert "2 public editions built meanwhile" in caplog.text
    assert (early.built, early.public) == (serial.built, 2)
    assert public_early == public_alone
    assert shared_early == alone
    # the engine's child dies before it matches: the job matches itself, the same editions
    monkeypatch.setattr(delivery, "_match_texts", match_texts)
    monkeypatch.setattr(delivery, "_engine_child", lambda *_: os._exit(3))
    with caplog.at_level(logging.WARNING):
        lost, shared_lost, public_lost = build(2)
    assert "a forked call ended with exit code 3: run here" in caplog.text
    assert (lost.built, shared_lost, public_lost) == (serial.built, alone, public_alone)


def test_theme_choices_lists_are_readied_in_the_job_most_read_first(app: App) -> None:
    """What the job's process makes before the build's helpers start (they inherit it):
    the due readers' theme choices' lists, the most read choice first."""
    from zoneinfo import ZoneInfo

    from pipeline.core.due import due_period

    store_news(app, *NEWS)
    subscribe(app, "e@example.com", themes=["economy", "afghanistan"], hour=7)
    for n in range(3):
        subscribe(app, f"s{n}@example.com", themes=["sanctions"], hour=7)
    active = SubscriberStore(app.store).active()
    periods = delivery._Periods(app, delivery.load_editorial(app, active))
    now = app.clock()
    due = []
    for reader in active:
        period = due_period(now, reader.hour, ZoneInfo(reader.timezone), "daily", None)
        assert period is not None
        due.append((reader, "daily", period))
    planner = periods.data(due[0][2].start, due[0][2].end).planner
    assert not planner._bases
    assert delivery._ready_choices(periods, due) == 2
    # three readers against one: made first
    assert [frozenset(wanted) for wanted in planner._bases] == [
        frozenset({"sanctions"}),
        frozenset({"economy", "afghanistan"}),
    ]


def test_the_engine_is_forgotten_after_matching_in_the_job_but_kept_by_a_child(
    app: App,
) -> None:
    """A forked child keeps the engine until it ends (its exit lets it all go at once);
    the job, running the matching itself after a child failed, forgets it at once."""
    import os

    store_news(app, "Chinese engineers return to Gwadar port project", *NEWS)
    subscribe(app, "reader@example.com")
    add_watchlist(app, "reader@example.com", "Gwadar")
    items = app.store.items_between(app.clock() - timedelta(days=1), app.clock())
    for job, kept in ((os.getpid(), False), (os.getpid() + 1, True)):
        editorial = delivery.load_editorial(app, SubscriberStore(app.store).active())
        [found] = delivery._match_periods(editorial, [items], True, job)
        assert len(found) == 1 and len(next(iter(found.values()))) == 1
        assert ("index" in editorial.__dict__) is kept


def test_packed_watchlist_matches_answer_as_the_matches_and_survive_a_pickle() -> None:
    """What the engine's forked child hands back: the same watchlist → item ids, from a
    few arrays (watchlists sharing a query share one run of item places)."""
    import pickle

    from pipeline.core.watchlists import WatchlistIndex

    index = WatchlistIndex([(1, "IMF"), (2, "IMF"), (3, "loan"), (4, "Gwadar"), (9, "talks")])
    items = [("i1", "IMF loan", ""), ("i2", "loan", "talks"), ("i3", "weather", "")]
    matches = index.items_by_watchlist(items)
    item_ids = [item_id for item_id, _, _ in items]
    # the engine's answer for the items numbered by place, packed as it is
    by_place = index.items_by_watchlist(
        (n, title, body) for n, (_, title, body) in enumerate(items)
    )
    packed = delivery.PackedMatches.of_places(by_place, item_ids)
    for answer in (packed, pickle.loads(pickle.dumps(packed))):
        assert (
            dict(answer) == dict(matches) == {1: ("i1",), 2: ("i1",), 3: ("i1", "i2"), 9: ("i2",)}
        )
        assert answer.get(4) is None and answer.get(4, ()) == () and 4 not in answer
        with pytest.raises(KeyError):
            answer[4]
        assert len(answer) == 4 and sorted(answer) == [1, 2, 3, 9]
    assert len(packed._offsets) == 4  # three distinct runs: IMF, loan, talks
    # the build hands them its own id objects (equal ones): other items are refused
    own = ["".join(["i", str(n)]) for n in (1, 2, 3)]
    packed.use_item_ids(own)
    assert packed.item_ids is own and dict(packed)[3] == ("i1", "i2")
    with pytest.raises(ValueError, match="not the items"):
        packed.use_item_ids(["i1", "i2"])


def with_digest(app: App, **settings: object) -> None:
    app.settings = app.settings.model_copy(
        update={"digest": app.settings.digest.model_copy(update=settings)}
    )


def many_built(app: App, clock: FakeClock, readers: int) -> None:
    """Readers with different themes, zones and watchlists, their digests built."""
    store_news(app, "Chinese engineers return to Gwadar port project", *NEWS)
    choices = [["sanctions"], ["economy", "afghanistan"], ["china", "sanctions"]]
    for n in range(readers):
        zone = ("Asia/Karachi", "Europe/London", "America/New_York")[n % 3]
        subscribe(app, f"r{n}@example.com", themes=choices[n % 3], hour=7, timezone=zone)
        if n % 2:
            add_watchlist(app, f"r{n}@example.com", "Gwadar")
    # everyone is due: London's and New York's 07:00 come later the same day
    clock.advance(hours=13)
    assert delivery.build_due_digests(app).built == readers


def comparable(message: EmailMessage) -> tuple[object, ...]:
    """An email's headers and parts, without its MIME boundary (random per message) and
    its links' signing times (tokens made in another second differ there)."""

    def timeless(text: str) -> str:
        return re.sub(r"\.[\w-]{6}\.[\w-]{27}\b", ".<time and signature>", text)

    headers = [(k, timeless(v)) for k, v in message.items() if k.lower() != "content-type"]
    parts = [
        (p.get_content_type(), timeless(p.get_content()))
        for p in message.walk()
        if not p.is_multipart()
    ]
    return tuple(headers), tuple(parts)


def test_the_queue_composed_on_several_processes_sends_what_one_process_sends(
    app: App, clock: FakeClock
) -> None:
    from sqlalchemy import update

    from pipeline.adapters.schema import delivery as delivery_table

    many_built(app, clock, 12)
    outbox = app.settings.path(app.settings.mail.outbox_dir)
    sent: dict[int, dict[str, object]] = {}
    for workers in (1, 3):
        with_digest(app, send_batch=2, send_workers=workers)  # 6 batches
        summary = delivery.drain_queue(app, app.mailer())
        assert (summary.sent, summary.failed, summary.unknown) == (12, 0, 0)
        sent[workers] = {m["Message-ID"]: comparable(m) for m in outbox_messages(app)}
        for path in outbox.glob("*.eml"):
            path.unlink()
        with app.store.engine.begin() as conn:  # the same rows queued again
            conn.execute(update(delivery_table).values(status="queued", claimed_by=None))
    assert len(sent[1]) == 12
    assert sent[3] == sent[1]  # the same emails, one per reader


def test_a_helper_that_fails_to_compose_leaves_its_batch_to_be_sent_once(
    app: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    many_built(app, clock, 12)
    with_digest(app, send_batch=2, send_workers=3)
    job = os.getpid()
    for_sending = SubscriberStore.for_sending  # composing a batch re-reads its readers first

    def fails_in_helpers(*args: object, **kwargs: object) -> object:
        if os.getpid() != job:
            raise RuntimeError("a helper's compose went wrong")
        return for_sending(*args, **kwargs)  # type: ignore[arg-type]

    # Through an adapter: the job's own functions may be compiled (mypyc), and compiled
    # code calls them directly, past any patch.
    monkeypatch.setattr(SubscriberStore, "for_sending", fails_in_helpers)
    with caplog.at_level(logging.WARNING):
        summary = delivery.drain_queue(app, app.mailer())
    assert "a helper's compose went wrong" in caplog.text  # helpers did take batches
    assert summary.sent == 12  # their claims went back to the queue: the job sent them
    assert DeliveryStore(app.store).counts_by_status() == {DeliveryStatus.SENT: 12}
    recipients = [m["To"] for m in outbox_messages(app)]
    assert sorted(recipients) == sorted(f"r{n}@example.com" for n in range(12))


def test_send_processes_freeze_what_their_batches_leave_and_the_job_unfreezes_at_the_end(
    app: App, clock: FakeClock
) -> None:
    """Once a batch is composed, what it leaves alive is frozen (not walked by the
    collector again) in every sending process, and the collector stays on for what sending
    makes. A forked helper ends with the queue; the job's process, which the worker's
    other jobs share, unfreezes everything when the drain ends, and leaves a freeze it did
    not make as it was."""
    import gc

    from sqlalchemy import select

    from pipeline.adapters.schema import delivery as delivery_table

    many_built(app, clock, 12)
    with_digest(app, send_batch=2, send_workers=3)  # 6 batches on 3 processes
    mailer = app.mailer()
    send_batch = mailer.send_batch
    job = os.getpid()

    def noting(emails: Any) -> Any:  # each process's collector as it sends, in the ledger
        who = "job" if os.getpid() == job else "helper"
        mark = f"{who}:{gc.isenabled()}:{gc.get_freeze_count() > 0}"
        return [replace(r, provider_message_id=mark) for r in send_batch(emails)]

    mailer.send_batch = noting  # type: ignore[method-assign]
    was = gc.isenabled()
    gc.enable()
    try:
        assert delivery.drain_queue(app, mailer).sent == 12
        assert gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        if not was:
            gc.disable()
    with app.store.engine.connect() as conn:
        marks = set(conn.execute(select(delivery_table.c.provider_message_id)).scalars())
    assert marks == {"job:True:True", "helper:True:True"}


def test_a_freeze_made_before_the_drain_is_left_as_it_was(app: App, clock: FakeClock) -> None:
    import gc

    many_built(app, clock, 4)
    with_digest(app, send_batch=2, send_workers=1)  # 2 batches, both in this process
    mailer = app.mailer()
    send_batch = mailer.send_batch
    seen: list[int] = []

    def noting(emails: Any) -> Any:
        seen.append(gc.get_freeze_count())
        return send_batch(emails)

    mailer.send_batch = noting  # type: ignore[method-assign]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert delivery.drain_queue(app, mailer).sent == 4
        # not unfrozen, and nothing more frozen (frozen objects freed meanwhile leave it)
        assert len(seen) == 2 and all(0 < count <= frozen for count in seen)
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_a_fatal_backend_stops_helpers_and_leaves_the_rest_queued(
    app: App, clock: FakeClock, sendgrid_stub: SendGridStub
) -> None:
    many_built(app, clock, 12)
    with_digest(app, send_batch=2, send_workers=3)
    sendgrid(app, sendgrid_stub, api_key="SG.wrong")
    summary = delivery.drain_queue(app, app.mailer())
    assert summary.fatal and summary.sent == 0
    # composed batches that arrived after the failure were not attempted either
    assert DeliveryStore(app.store).counts_by_status() == {DeliveryStatus.QUEUED: 12}
    assert sendgrid_stub.deliveries() == []
