"""Home page and sign-up: the form, double opt-in, no enumeration (A-03), rate limits and
one confirmation a day (M-07), suppressed addresses (M-05), query errors (A-06)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pipeline import accounts
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.subscribers import SubscriberStatus
from pipeline.core.tagger import THEME_IDS
from pipeline.web.security import limiter
from tests.web.reader_support import (
    add_subscriber,
    confirmations,
    consent_rows,
    fresh_csrf,
    post_signup,
    title_of,
)


@pytest.fixture
def no_limits() -> Iterator[None]:
    """Rate limits off (they are tested on their own below)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(limiter, "enabled", False)
        yield


def test_home_explains_qasid_lists_every_theme_and_has_a_labelled_form(
    client: FlaskClient, web_core: App
) -> None:
    response = client.get("/")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "News about Pakistan" in html
    for theme in THEME_IDS:
        assert f'value="{theme}" checked' in html  # all checked by default
    assert "IMF programme, debt, budget" in html  # a one-line description
    for field in ("email", "hour", "timezone", "watchlist"):
        assert f'<label for="{field}">' in html
    for value in ("instant", "daily", "weekly"):
        assert f'value="{value}"' in html
    assert 'value="Asia/Karachi"' in html and "data-detect-timezone" in html
    assert '<script src="/static/timezone.js" defer></script>' in html
    assert "<script>" not in html and " onclick=" not in html  # no inline script
    assert client.get("/static/timezone.js").status_code == 200


def test_a_new_address_becomes_pending_with_consent_and_one_queued_confirmation(
    client: FlaskClient, web_core: App
) -> None:
    response = post_signup(
        client,
        "New.Reader@Example.COM",
        themes=["economy", "china"],
        frequency="weekly",
        hour="18",
        timezone="America/New_York",
        watchlist="IMF loan OR bailout",
    )
    assert response.status_code == 200 and title_of(response) == "Check your inbox"
    subscriber = SubscriberStore(web_core.store).get("New.Reader@example.com")
    assert subscriber is not None and subscriber.status is SubscriberStatus.PENDING
    assert subscriber.themes == ("china", "economy") or set(subscriber.themes) == {
        "economy",
        "china",
    }
    assert (subscriber.frequency.value, subscriber.hour, subscriber.timezone) == (
        "weekly",
        18,
        "America/New_York",
    )
    assert [w.query for w in subscriber.watchlists] == ["IMF loan OR bailout"]
    [row] = consent_rows(web_core, subscriber.id)
    assert (row["action"], row["ip"], row["source"]) == ("signup", "192.0.2.10", "web")
    assert row["user_agent"] == "pytest-browser/1.0" and row["text_version"] == "2026-11"
    assert confirmations(web_core, subscriber.id) == 1


def test_form_errors_come_back_next_to_their_fields(client: FlaskClient, web_core: App) -> None:
    response = post_signup(
        client, "not-an-address", themes=[], timezone="Mars/Olympus", watchlist='Pakistan "F-16'
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert 'id="email-error"' in html and "This email address is not valid" in html
    assert "must have an @-sign" in html or "@" in html  # email-validator's own reason
    assert "Choose at least one theme." in html
    assert 'id="timezone-error"' in html and "Asia/Karachi" in html
    assert "unclosed quote (at column 10)" in html
    assert 'aria-invalid="true"' in html and 'aria-describedby="email-error"' in html
    assert 'value="not-an-address"' in html  # what the person typed is kept
    assert SubscriberStore(web_core.store).all() == []


def test_a_bad_first_watchlist_shows_the_parser_message_and_column(client: FlaskClient) -> None:
    cases = {
        "x" * 10_240: "the query is too long (10240 characters, at most 500) (at column 501)",
        "(a+)+$": "has no letters or digits to search for (at column 5)",
        "IMF OR": "expected a term after OR (at column 7)",
    }
    for ip, (query, message) in enumerate(cases.items()):
        response = post_signup(client, "a@example.com", ip=f"192.0.2.{ip + 1}", watchlist=query)
        html = response.get_data(as_text=True)
        assert response.status_code == 422
        assert message.replace("'", "&#39;") in html or message in html
        assert 'class="query-caret"' in html


# -- the same answer whatever the state of the address ---------------------------------


def _states(core: App) -> dict[str, str]:
    add_subscriber(core, "active@example.com")
    add_subscriber(core, "pending@example.com", SubscriberStatus.PENDING)
    add_subscriber(core, "left@example.com", SubscriberStatus.UNSUBSCRIBED)
    add_subscriber(core, "bounced@example.com", SubscriberStatus.BOUNCED)
    erased = add_subscriber(core, "erased@example.com")
    accounts.erase(core, erased)
    return {
        "new": "new@example.com",
        "active": "active@example.com",
        "pending": "pending@example.com",
        "unsubscribed": "left@example.com",
        "bounced": "bounced@example.com",
        "erased": "erased@example.com",
    }


def test_signup_answers_identically_for_every_state_of_the_address(
    client: FlaskClient, web_core: App
) -> None:
    answers = {}
    for n, (state, email) in enumerate(_states(web_core).items()):
        response = post_signup(client, email, ip=f"198.51.100.{n + 1}")
        answers[state] = (
            response.status_code,
            response.get_data(),
            response.headers.get("Location"),
        )
    assert len(set(answers.values())) == 1, answers.keys()
    assert next(iter(answers.values()))[0] == 200


def test_send_my_link_answers_identically_for_every_state_of_the_address(
    client: FlaskClient, web_core: App
) -> None:
    answers = {}
    for n, (state, email) in enumerate(_states(web_core).items()):
        environ = {"REMOTE_ADDR": f"198.51.100.{n + 1}"}
        csrf = fresh_csrf(client, "/link", environ_base=environ)
        response = client.post(
            "/link", data={"csrf_token": csrf, "email": email}, environ_base=environ
        )
        answers[state] = (response.status_code, response.get_data())
    assert len(set(answers.values())) == 1
    assert next(iter(answers.values()))[0] == 200


@pytest.mark.usefixtures("no_limits")
def test_signup_timing_does_not_tell_new_from_known_addresses(
    client: FlaskClient, web_core: App
) -> None:
    """Median response times per state differ by less than 20 ms (mail is only queued)."""
    states = _states(web_core)
    csrf = fresh_csrf(client)
    timings: dict[str, list[float]] = {state: [] for state in states}
    for round_ in range(20):
        for state, email in states.items():
            address = f"new{round_}@example.com" if state == "new" else email
            started = time.perf_counter()
            response = post_signup(client, address, token=csrf)
            timings[state].append(time.perf_counter() - started)
            assert response.status_code == 200
    medians = {state: statistics.median(values) for state, values in timings.items()}
    assert max(medians.values()) - min(medians.values()) < 0.020, medians


# -- M-07 and M-05: one confirmation a day, nothing to suppressed addresses -------------------


def test_twenty_submissions_from_five_ips_queue_at_most_one_confirmation(
    client: FlaskClient, web_core: App
) -> None:
    statuses = []
    for n in range(20):
        statuses.append(
            post_signup(client, "target@example.com", ip=f"203.0.113.{n % 5}").status_code
        )
    subscriber = SubscriberStore(web_core.store).get("target@example.com")
    assert subscriber is not None
    assert confirmations(web_core, subscriber.id) == 1
    assert set(statuses) <= {200, 429} and 429 in statuses  # the per-address limit
    assert statuses[:3] == [200, 200, 200]


def test_the_ledger_allows_one_confirmation_per_address_per_day(
    web_core: App, no_limits: None, client: FlaskClient
) -> None:
    for n in range(5):
        assert post_signup(client, "again@example.com", ip=f"203.0.113.{n}").status_code == 200
    subscriber = SubscriberStore(web_core.store).get("again@example.com")
    assert subscriber is not None and confirmations(web_core, subscriber.id) == 1
    clock = web_core.clock
    clock.advance(hours=24, seconds=1)  # type: ignore[attr-defined]
    assert post_signup(client, "again@example.com").status_code == 200
    assert confirmations(web_core, subscriber.id) == 2


def test_one_client_ip_is_refused_with_429_after_the_limit(
    client: FlaskClient, web_core: App
) -> None:
    codes = [
        post_signup(client, f"p{n}@example.com", ip="203.0.113.77").status_code for n in range(7)
    ]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    refused = post_signup(client, "p9@example.com", ip="203.0.113.77")
    assert "Slow down" in refused.get_data(as_text=True)
    assert post_signup(client, "p10@example.com", ip="203.0.113.78").status_code == 200
    # form errors do not use up a person's allowance
    for _ in range(6):
        assert post_signup(client, "bad", ip="203.0.113.79").status_code == 422
    assert post_signup(client, "ok@example.com", ip="203.0.113.79").status_code == 200


def test_suppressed_addresses_get_no_confirmation_but_erased_ones_opt_in_afresh(
    client: FlaskClient, web_core: App, no_limits: None
) -> None:
    states = _states(web_core)
    for n, email in enumerate(states.values()):
        post_signup(client, email, ip=f"192.0.2.{n + 1}")
    people = SubscriberStore(web_core.store)
    for state in ("unsubscribed", "bounced"):
        subscriber = people.get(states[state])
        assert subscriber is not None and confirmations(web_core, subscriber.id) == 0
        assert subscriber.status is not SubscriberStatus.PENDING
    active = people.get(states["active"])
    assert active is not None and active.status is SubscriberStatus.ACTIVE
    assert confirmations(web_core, active.id) == 0  # nothing new for a subscriber
    erased = people.get(states["erased"])  # a fresh double opt-in
    assert erased is not None and erased.status is SubscriberStatus.PENDING
    assert confirmations(web_core, erased.id) == 1
    assert people.suppression_reason(accounts.email_hash(states["erased"])) == "erased"


def test_an_address_on_the_provider_suppression_list_gets_no_confirmation(
    client: FlaskClient, web_core: App
) -> None:
    from pipeline.adapters.schema import suppression

    with web_core.store.engine.begin() as conn:
        conn.execute(
            suppression.insert().values(
                email_hash=accounts.email_hash("Complainer@example.com"),
                reason="complained",
                created_at=web_core.clock(),
            )
        )
    response = post_signup(client, "complainer@EXAMPLE.com")
    assert response.status_code == 200 and title_of(response) == "Check your inbox"
    assert SubscriberStore(web_core.store).get("complainer@example.com") is None
    assert confirmations(web_core) == 0


def test_get_subscribe_goes_back_to_the_form(client: FlaskClient, web_app: Flask) -> None:
    response = client.get("/subscribe")
    assert response.status_code == 303 and response.headers["Location"].endswith("/#subscribe")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_l04_a_burst_of_signups_mails_each_address_once_at_most(
    client: FlaskClient, web_core: App
) -> None:
    """L-04: 300 sign-up POSTs from 3 addresses for 50 mailboxes within 30 s: at most one
    confirmation per mailbox, the per-client limit answers 429, nothing fails."""
    started = time.monotonic()
    statuses = [
        post_signup(client, f"l04-{n % 50}@example.com", ip=f"198.51.100.{n % 3}").status_code
        for n in range(300)
    ]
    elapsed = time.monotonic() - started
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert statuses.count(200) == 3 * 5  # SIGNUP_PER_IP: 5 an hour for each client address
    assert statuses.count(429) == 300 - 15
    subscribers = SubscriberStore(web_core.store)
    mailed = [
        subscriber.id
        for n in range(50)
        if (subscriber := subscribers.get(f"l04-{n}@example.com")) is not None
    ]
    assert confirmations(web_core) == len(mailed) <= 15
    for subscriber_id in mailed:
        assert confirmations(web_core, subscriber_id) == 1
    assert elapsed < 30, elapsed
