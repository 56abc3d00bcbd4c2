"""Preferences through the magic link: themes and schedule, pause and resume, the
watchlist editor with errors (A-06) and previews, export and erase (M-08)."""

from __future__ import annotations

import json
from datetime import timedelta

from flask.testing import FlaskClient

from pipeline.adapters.schema import consent, delivery, suppression, watchlist, webhook_event
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.models import FeedSource, Item
from pipeline.core.subscribers import MAX_WATCHLISTS, Frequency, Subscriber, SubscriberStatus
from pipeline.delivery import drain_queue
from tests.web.reader_support import (
    add_subscriber,
    confirmations,
    count_rows,
    csrf_from,
    post_signup,
    reload,
    title_of,
    token,
)


def _open(client: FlaskClient, core: App, subscriber: Subscriber) -> tuple[str, str]:
    link = f"/manage/{token(core, 'manage', subscriber)}"
    page = client.get(link)
    assert page.status_code == 200
    return link, csrf_from(page)


def _store_news(core: App, *titles: str) -> None:
    """Items published over the last weeks (newest first), for watchlist previews."""
    feed_id, _ = core.store.add_feed(
        FeedSource(url="https://dawn.example/feed", title="Dawn"), "cli", core.clock()
    )
    items = [
        Item(
            guid_key=f"g{n}",
            link=f"https://dawn.example/{n}",
            title=title,
            summary_html="",
            summary_text=title,
            published=core.clock() - timedelta(days=3 * n + 1),
            language="en",
            content_hash=str(n),
        )
        for n, title in enumerate(titles)
    ]
    core.store.store_items(feed_id, "https://dawn.example/feed", items, core.clock())


def test_the_manage_page_shows_the_subscription(client: FlaskClient, web_core: App) -> None:
    subscriber = add_subscriber(
        web_core,
        "reader@example.com",
        themes=["economy", "china"],
        hour=18,
        timezone="Europe/London",
    )
    link, _ = _open(client, web_core, subscriber)
    html = client.get(link).get_data(as_text=True)
    assert "reader@example.com" in html and "Europe/London" in html
    assert 'value="economy" checked' in html and 'value="sanctions">' in html
    assert '<option value="18" selected>18:00</option>' in html
    assert "No watchlists yet" in html  # the empty state
    assert "Pause deliveries" in html and "/unsubscribe/" in html
    assert "Export my data" in html and "Delete my data" in html
    for field in ("hour", "timezone", "new-query", "new-instant", "confirm"):
        assert f'for="{field}"' in html or f'id="{field}"' in html


def test_preferences_are_saved_and_errors_shown_next_to_fields(
    client: FlaskClient, web_core: App
) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    link, csrf = _open(client, web_core, subscriber)
    bad = client.post(
        f"{link}/preferences",
        data={"csrf_token": csrf, "frequency": "hourly", "hour": "25", "timezone": "Nowhere/City"},
    )
    html = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert "Choose at least one theme." in html and 'id="timezone-error"' in html
    saved = client.post(
        f"{link}/preferences",
        data={
            "csrf_token": csrf,
            "themes": ["sanctions", "india"],
            "frequency": "weekly",
            "hour": "6",
            "timezone": "America/Chicago",
        },
    )
    assert saved.status_code == 303 and saved.headers["Location"].endswith("#preferences")
    assert saved.headers["Location"].startswith(link)  # our own page, never elsewhere
    fresh = reload(web_core, subscriber)
    assert fresh is not None
    assert (fresh.themes, fresh.frequency, fresh.hour, fresh.timezone) == (
        ("sanctions", "india"),
        Frequency.WEEKLY,
        6,
        "America/Chicago",
    )
    assert "Your preferences are saved." in client.get(link).get_data(as_text=True)


def test_pause_and_resume(client: FlaskClient, web_core: App) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    link, csrf = _open(client, web_core, subscriber)
    assert client.post(f"{link}/pause", data={"csrf_token": csrf}).status_code == 303
    paused = reload(web_core, subscriber)
    assert paused is not None and paused.status is SubscriberStatus.PAUSED
    assert "Resume" in client.get(link).get_data(as_text=True)
    client.post(f"{link}/resume", data={"csrf_token": csrf})
    resumed = reload(web_core, subscriber)
    assert resumed is not None and resumed.status is SubscriberStatus.ACTIVE


def test_a_bad_query_shows_the_message_and_column_next_to_the_field(
    client: FlaskClient, web_core: App
) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    link, csrf = _open(client, web_core, subscriber)
    cases = {
        'Pakistan "F-16 sale': "unclosed quote (at column 10)",
        "IMF loan)": "(at column 9)",
        "(a+)+$": "has no letters or digits to search for (at column 5)",
        "x" * 10_240: "the query is too long (10240 characters, at most 500) (at column 501)",
        "a*": "a wildcard needs at least 3 letters before * (at column 2)",
        "": "Enter a query",
    }
    for query, message in cases.items():
        for button in ("new-preview", "new-save"):
            response = client.post(
                f"{link}/watchlists", data={"csrf_token": csrf, "new-query": query, button: "x"}
            )
            html = response.get_data(as_text=True)
            assert response.status_code == 422, query
            assert 'id="new-query-error"' in html and message.replace("'", "&#39;") in html, query
    long = client.post(
        f"{link}/watchlists", data={"csrf_token": csrf, "new-query": "x" * 10_240, "new-save": "x"}
    )
    assert len(long.get_data()) < 60_000  # the caret shows a window, not the whole query
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.watchlists == ()


def test_preview_then_save_then_edit_and_remove(client: FlaskClient, web_core: App) -> None:
    _store_news(
        web_core,
        "IMF approves loan tranche for Pakistan",
        "Cricket: Pakistan beat Australia",
        "IMF mission ends talks on the budget",
        "Old IMF story from long ago",  # published 10 days ago, still inside 30 days
    )
    subscriber = add_subscriber(web_core, "reader@example.com")
    link, csrf = _open(client, web_core, subscriber)
    preview = client.post(
        f"{link}/watchlists",
        data={"csrf_token": csrf, "new-query": "imf", "new-preview": "Preview"},
    )
    html = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "Preview of <code>imf</code>" in html
    assert "3 of 4 stories from the last 30 days matched" in html
    assert "IMF approves loan tranche for Pakistan" in html
    assert 'href="https://dawn.example/0"' in html and '<svg class="chart"' in html
    assert 'class="bar"' in html
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.watchlists == ()  # a preview saves nothing
    quiet = client.post(
        f"{link}/watchlists",
        data={"csrf_token": csrf, "new-query": "Gwadar", "new-preview": "Preview"},
    )
    assert "No story from the last 30 days matched" in quiet.get_data(as_text=True)

    saved = client.post(
        f"{link}/watchlists",
        data={"csrf_token": csrf, "new-query": "IMF  loan", "new-instant": "y", "new-save": "Save"},
    )
    assert saved.status_code == 303 and saved.headers["Location"].endswith("#watchlists")
    fresh = reload(web_core, subscriber)
    assert fresh is not None
    [w] = fresh.watchlists
    assert (w.query, w.instant) == ("IMF loan", True)  # the canonical form
    assert "Watchlist saved." in client.get(link).get_data(as_text=True)

    edit = client.post(
        f"{link}/watchlists/{w.id}",
        data={"csrf_token": csrf, f"w{w.id}-query": "IMF OR", f"w{w.id}-save": "Save"},
    )
    assert edit.status_code == 422
    assert "expected a term after OR (at column 7)" in edit.get_data(as_text=True)
    edit = client.post(
        f"{link}/watchlists/{w.id}",
        data={"csrf_token": csrf, f"w{w.id}-query": "IMF bailout", f"w{w.id}-save": "Save"},
    )
    assert edit.status_code == 303
    fresh = reload(web_core, subscriber)
    assert fresh is not None
    assert [(x.id, x.query, x.instant) for x in fresh.watchlists] == [(w.id, "IMF bailout", False)]

    assert (
        client.post(f"{link}/watchlists/{w.id}/delete", data={"csrf_token": csrf}).status_code
        == 303
    )
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.watchlists == ()
    assert (
        client.post(f"{link}/watchlists/{w.id}/delete", data={"csrf_token": csrf}).status_code
        == 404
    )


def test_nobody_edits_or_removes_another_subscribers_watchlist(
    client: FlaskClient, web_core: App
) -> None:
    owner = add_subscriber(web_core, "owner@example.com")
    SubscriberStore(web_core.store).add_watchlist(owner.email, "CPEC", False, web_core.clock())
    owner = reload(web_core, owner) or owner
    [theirs] = owner.watchlists
    other = add_subscriber(web_core, "other@example.com")
    link, csrf = _open(client, web_core, other)
    assert (
        client.post(f"{link}/watchlists/{theirs.id}/delete", data={"csrf_token": csrf}).status_code
        == 404
    )
    edit = client.post(
        f"{link}/watchlists/{theirs.id}",
        data={"csrf_token": csrf, f"w{theirs.id}-query": "x y", f"w{theirs.id}-save": "Save"},
    )
    assert edit.status_code == 404
    assert [w.query for w in (reload(web_core, owner) or owner).watchlists] == ["CPEC"]


def test_the_watchlist_limit_holds(client: FlaskClient, web_core: App) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    people = SubscriberStore(web_core.store)
    for n in range(MAX_WATCHLISTS):
        people.add_watchlist(subscriber.email, f"topic{n}", False, web_core.clock())
    link, csrf = _open(client, web_core, subscriber)
    html = client.get(link).get_data(as_text=True)
    assert f"You have {MAX_WATCHLISTS} watchlists, the most allowed" in html
    refused = client.post(
        f"{link}/watchlists", data={"csrf_token": csrf, "new-query": "one more", "new-save": "Save"}
    )
    assert refused.status_code == 422 and "the most allowed" in refused.get_data(as_text=True)
    for n in range(500):  # a script trying 500 watchlists gets nowhere either
        if n % 100 == 0:
            client.post(
                f"{link}/watchlists",
                data={"csrf_token": csrf, "new-query": f"q{n}", "new-save": "Save"},
            )
    assert count_rows(web_core, watchlist, subscriber_id=subscriber.id) == MAX_WATCHLISTS


# -- M-08: export and erase ---------------------------------------------------------------------


def _with_history(client: FlaskClient, core: App, email: str) -> Subscriber:
    assert post_signup(client, email, watchlist="IMF loan").status_code == 200
    subscriber = SubscriberStore(core.store).get(email)
    assert subscriber is not None
    link = f"/confirm/{token(core, 'confirm', subscriber)}"
    client.post(link, data={"csrf_token": csrf_from(client.get(link))})
    drain_queue(core, core.mailer())  # the confirmation becomes a sent delivery
    fresh = reload(core, subscriber)
    assert fresh is not None
    return fresh


def test_export_holds_exactly_that_subscribers_data(client: FlaskClient, web_core: App) -> None:
    me = _with_history(client, web_core, "me@example.com")
    other = _with_history(client, web_core, "other@example.com")
    link, csrf = _open(client, web_core, me)
    response = client.post(f"{link}/export", data={"csrf_token": csrf})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert "attachment" in response.headers["Content-Disposition"]
    data = json.loads(response.get_data(as_text=True))
    assert set(data) == {"exported_at", "site", "subscriber", "watchlists", "consent", "deliveries"}
    assert data["subscriber"]["email"] == "me@example.com"
    assert data["subscriber"]["status"] == "active" and data["subscriber"]["confirmed_at"]
    assert [w["query"] for w in data["watchlists"]] == ["IMF loan"]
    assert [c["action"] for c in data["consent"]] == ["signup", "confirm"]
    assert data["consent"][0]["ip"] == "192.0.2.10"
    assert [(d["channel"], d["status"]) for d in data["deliveries"]] == [("confirm", "sent")]
    text = json.dumps(data)
    assert "other@example.com" not in text and f'"id": {other.id}' not in text


def test_erase_removes_personal_rows_keeps_the_hash_and_needs_a_fresh_opt_in(
    client: FlaskClient, web_core: App
) -> None:
    me = _with_history(client, web_core, "me@example.com")
    other = _with_history(client, web_core, "other@example.com")
    from pipeline.accounts import email_hash

    with web_core.store.engine.begin() as conn:  # a provider event naming each address
        for n, address in enumerate(("me@example.com", "other@example.com")):
            conn.execute(
                webhook_event.insert().values(
                    event_key=f"k{n}",
                    event_type="delivered",
                    email_hash=email_hash(address),
                    payload={"email": address, "event": "delivered"},
                    received_at=web_core.clock(),
                )
            )
    link, csrf = _open(client, web_core, me)
    unticked = client.post(f"{link}/erase", data={"csrf_token": csrf})
    assert unticked.status_code == 422 and "Tick the box to confirm." in unticked.get_data(
        as_text=True
    )
    assert reload(web_core, me) is not None
    done = client.post(f"{link}/erase", data={"csrf_token": csrf, "confirm": "y"})
    assert done.status_code == 200 and title_of(done) == "Your data is deleted"
    assert reload(web_core, me) is None
    for table in (watchlist, consent, delivery):
        assert count_rows(web_core, table, subscriber_id=me.id) == 0
        assert count_rows(web_core, table, subscriber_id=other.id) > 0  # others untouched
    assert count_rows(web_core, suppression, email_hash=email_hash("me@example.com")) == 1
    assert count_rows(web_core, webhook_event, email_hash=email_hash("me@example.com")) == 0
    assert count_rows(web_core, webhook_event, email_hash=email_hash("other@example.com")) == 1
    assert count_rows(web_core, suppression, reason="erased") == 1
    assert client.get(link).status_code == 400  # the old link opens nothing now
    # the same address again: pending, with a new confirmation, never active at once
    assert post_signup(client, "ME@example.com", ip="192.0.2.99").status_code == 200
    again = SubscriberStore(web_core.store).get("ME@example.com")
    assert again is not None and again.status is SubscriberStatus.PENDING and again.id != me.id
    assert confirmations(web_core, again.id) == 1
    # confirming it lifts the "erased" mark
    confirm = f"/confirm/{token(web_core, 'confirm', again)}"
    client.post(confirm, data={"csrf_token": csrf_from(client.get(confirm))})
    assert count_rows(web_core, suppression, reason="erased") == 0
