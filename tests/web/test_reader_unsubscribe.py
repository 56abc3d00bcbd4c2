"""Unsubscribe: RFC 8058 one-click POST (M-02), GET and HEAD change nothing (M-03), bad,
old and rotated-key tokens (M-04), resubscribe, and nothing sent after leaving (M-05)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pipeline.accounts import email_hash
from pipeline.adapters.schema import suppression
from pipeline.bootstrap import App, build_app
from pipeline.core.subscribers import SubscriberStatus
from pipeline.delivery import drain_queue
from pipeline.tokens import Tokens
from pipeline.web import create_app
from tests.support.app import FakeClock, settings_for_tests
from tests.web.reader_support import (
    DAY,
    add_subscriber,
    confirmations,
    consent_rows,
    csrf_from,
    post_signup,
    reload,
    signed_ago,
    title_of,
    token,
)


def _status(core: App, subscriber_id: int) -> SubscriberStatus | None:
    from pipeline.adapters.subscriber_store import SubscriberStore

    found = SubscriberStore(core.store).by_id(subscriber_id)
    return found.status if found else None


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"List-Unsubscribe": "One-Click"}},  # what Gmail and Yahoo send
        {
            "data": {"List-Unsubscribe": "One-Click"},
            "content_type": "multipart/form-data",
        },
        {},  # an empty body
        {"data": b"", "content_type": "application/x-www-form-urlencoded"},
    ],
    ids=["urlencoded", "multipart", "empty", "empty-urlencoded"],
)
def test_one_click_post_unsubscribes_with_200_and_no_redirect_or_cookie(
    web_app: Flask, web_core: App, body: dict[str, object]
) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    url = f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}"
    client = web_app.test_client(use_cookies=False)
    for _ in range(2):  # a repeat is answered the same way
        response = client.post(url, environ_base={"REMOTE_ADDR": "209.85.220.41"}, **body)  # type: ignore[arg-type]
        assert response.status_code == 200
        assert "Location" not in response.headers and "Set-Cookie" not in response.headers
        assert response.get_data(as_text=True).startswith("You are unsubscribed")
        assert len(response.get_data()) < 200
    assert _status(web_core, subscriber.id) is SubscriberStatus.UNSUBSCRIBED
    [row] = consent_rows(web_core, subscriber.id)  # one change, one row
    assert (row["action"], row["source"], row["ip"]) == (
        "unsubscribe",
        "one-click",
        "209.85.220.41",
    )


def test_one_click_needs_no_csrf_even_when_the_client_has_a_session(
    client: FlaskClient, web_core: App
) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    client.get("/")  # a session cookie exists now; still no token is sent
    url = f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}"
    assert client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert _status(web_core, subscriber.id) is SubscriberStatus.UNSUBSCRIBED


def test_get_and_head_show_a_button_and_change_nothing(client: FlaskClient, web_core: App) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    url = f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}"
    for _ in range(3):
        page = client.get(url)
        head = client.head(url)
        assert page.status_code == 200 and head.status_code == 200
        html = page.get_data(as_text=True)
        assert f'<form method="post" action="{url}">' in html and ">Unsubscribe</button>" in html
    assert _status(web_core, subscriber.id) is SubscriberStatus.ACTIVE
    assert consent_rows(web_core, subscriber.id) == []


def test_the_button_unsubscribes_and_offers_to_resubscribe(
    client: FlaskClient, web_core: App
) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    url = f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}"
    done = client.post(url, data={"source": "page"})
    assert done.status_code == 200 and title_of(done) == "You are unsubscribed"
    assert _status(web_core, subscriber.id) is SubscriberStatus.UNSUBSCRIBED
    assert [r["source"] for r in consent_rows(web_core, subscriber.id)] == ["web"]
    back = client.post(f"{url}/resubscribe", data={"csrf_token": csrf_from(done)})
    assert back.status_code == 200 and title_of(back) == "Welcome back"
    assert _status(web_core, subscriber.id) is SubscriberStatus.ACTIVE
    assert [r["action"] for r in consent_rows(web_core, subscriber.id)] == [
        "unsubscribe",
        "resubscribe",
    ]
    again = client.post(f"{url}/resubscribe", data={"csrf_token": csrf_from(done)})
    assert title_of(again) == "You are subscribed"


def test_a_bounced_or_listed_address_must_confirm_afresh_to_resubscribe(
    client: FlaskClient, web_core: App
) -> None:
    bounced = add_subscriber(web_core, "bounced@example.com", SubscriberStatus.BOUNCED)
    listed = add_subscriber(web_core, "listed@example.com", SubscriberStatus.UNSUBSCRIBED)
    with web_core.store.engine.begin() as conn:
        conn.execute(
            suppression.insert().values(
                email_hash=email_hash(listed.email),
                reason="unsubscribed",
                created_at=web_core.clock(),
            )
        )
    for subscriber in (bounced, listed):
        url = f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}"
        page = client.get(url)
        assert title_of(page) == "You are not subscribed"
        response = client.post(f"{url}/resubscribe", data={"csrf_token": csrf_from(page)})
        assert title_of(response) == "Check your inbox"
        assert _status(web_core, subscriber.id) is SubscriberStatus.PENDING
        assert confirmations(web_core, subscriber.id) == 1
        client.post(f"{url}/resubscribe", data={"csrf_token": csrf_from(page)})
        assert confirmations(web_core, subscriber.id) == 1  # one a day


def test_tampered_and_unknown_tokens_get_404_and_change_nothing(
    client: FlaskClient, web_core: App
) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    good = token(web_core, "unsubscribe", subscriber)
    forged = Tokens(["someone-elses-key"]).make("unsubscribe", subscriber.id, subscriber.email)
    unknown = web_core.tokens.make("unsubscribe", 999, "ghost@example.com")
    for bad in (
        good[:-2] + "xx",
        forged,
        unknown,
        "nonsense",
        token(web_core, "manage", subscriber),
    ):
        for response in (client.get(f"/unsubscribe/{bad}"), client.post(f"/unsubscribe/{bad}")):
            assert response.status_code == 404
            assert "Not found" in response.get_data(as_text=True)
    assert _status(web_core, subscriber.id) is SubscriberStatus.ACTIVE


def test_a_400_day_old_token_still_unsubscribes(client: FlaskClient, web_core: App) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    with signed_ago(400 * DAY):
        old = token(web_core, "unsubscribe", subscriber)
    assert client.post(f"/unsubscribe/{old}").status_code == 200
    assert _status(web_core, subscriber.id) is SubscriberStatus.UNSUBSCRIBED


def test_a_token_signed_with_a_rotated_out_key_still_verifies(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for_tests(sqlite_url, tmp_path)  # secret key "test-secret"
    old_core = build_app(settings, clock=FakeClock())
    old_core.store.upgrade()
    subscriber = add_subscriber(old_core, "reader@example.com")
    old_token = token(old_core, "unsubscribe", subscriber)
    old_core.close()
    rotated = settings.model_copy(
        update={
            "web": settings.web.model_copy(
                update={"secret_key": "the-new-key", "old_secret_keys": ("test-secret",)}
            )
        }
    )
    core = build_app(rotated, clock=FakeClock())
    try:
        assert core.tokens.keys == ["the-new-key", "test-secret"]
        assert token(core, "unsubscribe", subscriber) != old_token  # new links: the new key
        client = create_app(core=core).test_client()
        assert client.get(f"/unsubscribe/{old_token}").status_code == 200
        assert client.post(f"/unsubscribe/{old_token}").status_code == 200
        assert _status(core, subscriber.id) is SubscriberStatus.UNSUBSCRIBED
        dropped = build_app(
            settings.model_copy(
                update={"web": settings.web.model_copy(update={"secret_key": "the-new-key"})}
            ),
            clock=FakeClock(),
        )
        try:  # once the old key is no longer listed, its tokens are refused
            assert (
                create_app(core=dropped).test_client().post(f"/unsubscribe/{old_token}").status_code
                == 404
            )
        finally:
            dropped.close()
    finally:
        core.close()


def test_nothing_is_sent_after_unsubscribing_even_if_queued_before(
    client: FlaskClient, web_core: App
) -> None:
    """M-05: a confirmation queued before the leave is suppressed at send time."""
    assert post_signup(client, "reader@example.com").status_code == 200
    from pipeline.adapters.subscriber_store import SubscriberStore

    subscriber = SubscriberStore(web_core.store).get("reader@example.com")
    assert subscriber is not None and confirmations(web_core, subscriber.id) == 1
    client.post(f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}")
    summary = drain_queue(web_core, web_core.mailer())
    assert (summary.sent, summary.suppressed) == (0, 1)
    outbox = web_core.settings.path(web_core.settings.mail.outbox_dir)
    assert not list(Path(outbox).glob("*.eml"))
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.UNSUBSCRIBED
