"""Confirmation and magic links: scanner-safe confirm (M-06), invalid, expired, reused and
stale links (A-02), resending."""

from __future__ import annotations

from flask.testing import FlaskClient

from pipeline import accounts
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.subscribers import SubscriberStatus
from tests.web.reader_support import (
    DAY,
    add_subscriber,
    confirmations,
    consent_rows,
    csrf_from,
    fresh_csrf,
    post_signup,
    reload,
    signed_ago,
    title_of,
    token,
)


def _pending(client: FlaskClient, core: App, email: str = "reader@example.com") -> int:
    assert post_signup(client, email).status_code == 200
    subscriber = SubscriberStore(core.store).get(email)
    assert subscriber is not None
    return subscriber.id


def test_get_on_the_confirm_link_changes_nothing_and_post_confirms(
    client: FlaskClient, web_core: App
) -> None:
    sid = _pending(client, web_core)
    subscriber = SubscriberStore(web_core.store).by_id(sid)
    assert subscriber is not None
    link = f"/confirm/{token(web_core, 'confirm', subscriber)}"
    for _ in range(3):  # a link scanner fetching it, more than once, HEAD too
        page = client.get(link)
        client.head(link)
        assert page.status_code == 200 and "Confirm my subscription" in page.get_data(as_text=True)
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.PENDING
    response = client.post(
        link,
        data={"csrf_token": csrf_from(page)},
        environ_base={"REMOTE_ADDR": "192.0.2.55"},
        headers={"User-Agent": "Firefox/140"},
    )
    assert response.status_code == 200 and title_of(response) == "You are subscribed"
    assert "/manage/" in response.get_data(as_text=True)
    assert f"with news from {len(subscriber.themes)} themes." in response.get_data(as_text=True)
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.ACTIVE
    rows = consent_rows(web_core, sid)
    assert [r["action"] for r in rows] == ["signup", "confirm"]
    confirm = rows[-1]
    assert (confirm["ip"], confirm["user_agent"], confirm["text_version"]) == (
        "192.0.2.55",
        "Firefox/140",
        "2026-11",
    )
    assert confirm["at"] == web_core.clock()
    with web_core.store.engine.begin() as conn:
        from sqlalchemy import select

        from pipeline.adapters.schema import subscriber as table

        stamped = conn.execute(select(table.c.confirmed_at).where(table.c.id == sid)).scalar()
    assert stamped == web_core.clock()


def test_confirming_twice_says_already_confirmed(client: FlaskClient, web_core: App) -> None:
    sid = _pending(client, web_core)
    subscriber = SubscriberStore(web_core.store).by_id(sid)
    assert subscriber is not None
    link = f"/confirm/{token(web_core, 'confirm', subscriber)}"
    csrf = fresh_csrf(client, link)
    assert title_of(client.post(link, data={"csrf_token": csrf})) == "You are subscribed"
    again = client.post(link, data={"csrf_token": csrf})
    assert again.status_code == 200 and title_of(again) == "Already confirmed"
    assert title_of(client.get(link)) == "Already confirmed"
    assert [r["action"] for r in consent_rows(web_core, sid)] == ["signup", "confirm"]


def test_an_expired_confirm_link_offers_a_new_one(client: FlaskClient, web_core: App) -> None:
    sid = _pending(client, web_core)
    subscriber = SubscriberStore(web_core.store).by_id(sid)
    assert subscriber is not None
    with signed_ago(8 * DAY):
        old = token(web_core, "confirm", subscriber)
    csrf = fresh_csrf(client)
    for response in (
        client.get(f"/confirm/{old}"),
        client.post(f"/confirm/{old}", data={"csrf_token": csrf}),
    ):
        assert response.status_code == 410 and title_of(response) == "This link has expired"
        assert "Request a new link" in response.get_data(as_text=True)
        assert f'action="/confirm/{old}/resend"' in response.get_data(as_text=True)
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.PENDING
    assert confirmations(web_core, sid) == 1
    web_core.clock.advance(hours=25)  # type: ignore[attr-defined]
    sent = client.post(f"/confirm/{old}/resend", data={"csrf_token": csrf})
    assert sent.status_code == 200 and "A new confirmation link is on its way" in sent.get_data(
        as_text=True
    )
    assert confirmations(web_core, sid) == 2
    again = client.post(f"/confirm/{old}/resend", data={"csrf_token": csrf})
    assert "in the last 24 hours" in again.get_data(as_text=True)
    assert confirmations(web_core, sid) == 2  # at most one a day (M-07)


def test_a_link_just_inside_48_hours_still_confirms(client: FlaskClient, web_core: App) -> None:
    sid = _pending(client, web_core)
    subscriber = SubscriberStore(web_core.store).by_id(sid)
    assert subscriber is not None
    with signed_ago(47 * 3600):
        link = f"/confirm/{token(web_core, 'confirm', subscriber)}"
    response = client.post(link, data={"csrf_token": fresh_csrf(client)})
    assert title_of(response) == "You are subscribed"


def test_tampered_and_wrong_purpose_links_are_invalid(client: FlaskClient, web_core: App) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com", SubscriberStatus.PENDING)
    good = token(web_core, "confirm", subscriber)
    tampered = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    csrf = fresh_csrf(client)
    bad_links = [
        f"/confirm/{tampered}",
        f"/confirm/{token(web_core, 'manage', subscriber)}",  # another purpose (salt)
        f"/confirm/{token(web_core, 'unsubscribe', subscriber)}",
        "/confirm/not-a-token",
        "/confirm/" + "x" * 2000,
        f"/manage/{token(web_core, 'confirm', subscriber)}",
        f"/manage/{tampered}",
    ]
    for link in bad_links:
        for response in (client.get(link), client.post(link, data={"csrf_token": csrf})):
            assert response.status_code in (400, 405), link
            if response.status_code == 400:
                assert title_of(response) == "This link is not valid", link
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.PENDING


def test_a_reused_confirm_link_cannot_bring_back_someone_who_left(
    client: FlaskClient, web_core: App
) -> None:
    sid = _pending(client, web_core)
    subscriber = SubscriberStore(web_core.store).by_id(sid)
    assert subscriber is not None
    link = f"/confirm/{token(web_core, 'confirm', subscriber)}"
    csrf = fresh_csrf(client, link)
    assert title_of(client.post(link, data={"csrf_token": csrf})) == "You are subscribed"
    client.post(f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}")
    # A later sign-up attempt keeps them left; the old link is replayed:
    replay = client.post(link, data={"csrf_token": csrf})
    assert replay.status_code == 400 and title_of(replay) == "This link is no longer valid"
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.UNSUBSCRIBED
    # Even once pending again (a fresh double opt-in), the used link stays used.
    SubscriberStore(web_core.store).set_status(
        subscriber.email, SubscriberStatus.PENDING, web_core.clock()
    )
    replay = client.post(link, data={"csrf_token": csrf})
    assert replay.status_code == 400
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.PENDING


def test_links_issued_before_an_email_change_or_an_erase_are_rejected(
    client: FlaskClient, web_core: App
) -> None:
    subscriber = add_subscriber(web_core, "old@example.com")
    manage = f"/manage/{token(web_core, 'manage', subscriber)}"
    unsubscribe = f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}"
    assert client.get(manage).status_code == 200
    from sqlalchemy import update

    from pipeline.adapters.schema import subscriber as table

    with web_core.store.engine.begin() as conn:
        conn.execute(
            update(table).where(table.c.id == subscriber.id).values(email="new@example.com")
        )
    assert client.get(manage).status_code == 400
    assert client.get(unsubscribe).status_code == 404
    assert client.post(unsubscribe).status_code == 404
    moved = reload(web_core, subscriber)
    assert moved is not None and moved.status is SubscriberStatus.ACTIVE
    accounts.erase(web_core, moved)
    assert client.get(f"/manage/{token(web_core, 'manage', moved)}").status_code == 400


def test_expired_manage_link_offers_a_new_link_and_queues_it(
    client: FlaskClient, web_core: App
) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    with signed_ago(31 * DAY):
        old = token(web_core, "manage", subscriber)
    page = client.get(f"/manage/{old}")
    assert page.status_code == 410 and title_of(page) == "This link has expired"
    csrf = fresh_csrf(client)
    assert client.post(f"/manage/{old}/pause", data={"csrf_token": csrf}).status_code == 410
    sent = client.post(f"/manage/{old}/resend", data={"csrf_token": csrf})
    assert sent.status_code == 200 and title_of(sent) == "Check your inbox"
    client.post(f"/manage/{old}/resend", data={"csrf_token": csrf})
    from pipeline.adapters.schema import delivery
    from tests.web.reader_support import count_rows

    assert count_rows(web_core, delivery, channel="link", subscriber_id=subscriber.id) == 1
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.ACTIVE


def test_a_manage_link_is_reusable_within_its_30_days(client: FlaskClient, web_core: App) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    with signed_ago(29 * DAY):
        link = f"/manage/{token(web_core, 'manage', subscriber)}"
    assert client.get(link).status_code == 200
    assert client.get(link).status_code == 200  # a second click, or a link scanner first
