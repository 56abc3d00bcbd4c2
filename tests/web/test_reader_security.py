"""CSRF on every state-changing reader route (A-01), headers and cookies (A-05)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from pipeline.bootstrap import App, build_app
from pipeline.core.subscribers import SubscriberStatus
from tests.support.app import FakeClock, settings_for_tests
from tests.web.reader_support import (
    add_subscriber,
    confirmations,
    consent_rows,
    csrf_from,
    reload,
    signup_form,
    token,
)


def _routes(core: App) -> list[tuple[str, dict[str, object]]]:
    """Every POST route of the reader that changes state, with a body that would work."""
    active = add_subscriber(core, "active@example.com")
    pending = add_subscriber(core, "pending@example.com", SubscriberStatus.PENDING)
    left = add_subscriber(core, "left@example.com", SubscriberStatus.UNSUBSCRIBED)
    from pipeline.adapters.subscriber_store import SubscriberStore

    watch = SubscriberStore(core.store).add_watchlist(active.email, "CPEC", False, core.clock())
    manage = f"/manage/{token(core, 'manage', active)}"
    return [
        ("/subscribe", signup_form("new@example.com")),
        ("/link", {"email": "active@example.com"}),
        (f"/confirm/{token(core, 'confirm', pending)}", {}),
        (f"/confirm/{token(core, 'confirm', pending)}/resend", {}),
        (
            f"{manage}/preferences",
            {"themes": ["economy"], "frequency": "weekly", "hour": "3", "timezone": "UTC"},
        ),
        (f"{manage}/pause", {}),
        (f"{manage}/resume", {}),
        (f"{manage}/watchlists", {"new-query": "IMF", "new-save": "Save"}),
        (
            f"{manage}/watchlists/{watch.id}",
            {f"w{watch.id}-query": "IMF", f"w{watch.id}-save": "Save"},
        ),
        (f"{manage}/watchlists/{watch.id}/delete", {}),
        (f"{manage}/export", {}),
        (f"{manage}/erase", {"confirm": "y"}),
        (f"{manage}/resend", {}),
        (f"/unsubscribe/{token(core, 'unsubscribe', left)}/resubscribe", {}),
    ]


def test_every_state_changing_route_refuses_a_missing_or_wrong_csrf_token(
    client: FlaskClient, web_core: App
) -> None:
    routes = _routes(web_core)
    good = csrf_from(client.get("/"))
    for path, body in routes:
        for csrf in (None, "wrong-token", good[:-4] + "abcd"):
            data = dict(body) if csrf is None else {**body, "csrf_token": csrf}
            response = client.post(path, data=data)
            assert response.status_code == 400, (path, csrf)
            html = response.get_data(as_text=True)
            assert "This form has expired" in html and "<html" in html, path
    # nothing changed anywhere
    from pipeline.adapters.subscriber_store import SubscriberStore

    people = {s.email: s for s in SubscriberStore(web_core.store).all()}
    assert set(people) == {"active@example.com", "pending@example.com", "left@example.com"}
    assert people["active@example.com"].status is SubscriberStatus.ACTIVE
    assert [w.query for w in people["active@example.com"].watchlists] == ["CPEC"]
    assert people["pending@example.com"].status is SubscriberStatus.PENDING
    assert people["left@example.com"].status is SubscriberStatus.UNSUBSCRIBED
    assert confirmations(web_core) == 0
    for subscriber in people.values():
        assert consent_rows(web_core, subscriber.id) == []


def test_a_token_from_another_session_is_refused(web_app: Flask, web_core: App) -> None:
    alice, mallory = web_app.test_client(), web_app.test_client()
    stolen = csrf_from(mallory.get("/"))
    alice.get("/")
    response = alice.post("/subscribe", data={**signup_form("x@example.com"), "csrf_token": stolen})
    assert response.status_code == 400


def test_one_click_unsubscribe_is_the_only_exempt_route(client: FlaskClient, web_core: App) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    response = client.post(f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}")
    assert response.status_code == 200
    fresh = reload(web_core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.UNSUBSCRIBED


# -- A-05 --------------------------------------------------------------------------------


@pytest.fixture
def https_app(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[Flask, App]]:
    settings = settings_for_tests(sqlite_url, tmp_path)
    settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"base_url": "https://news.example.org"})}
    )
    core = build_app(settings, clock=FakeClock())
    core.store.upgrade()
    from pipeline.web import create_app

    yield create_app(core=core), core
    core.close()


def _pages(core: App) -> dict[str, str]:
    subscriber = add_subscriber(core, "reader@example.com")
    pending = add_subscriber(core, "pending@example.com", SubscriberStatus.PENDING)
    return {
        "home": "/",
        "link": "/link",
        "manage": f"/manage/{token(core, 'manage', subscriber)}",
        "confirm": f"/confirm/{token(core, 'confirm', pending)}",
        "unsubscribe": f"/unsubscribe/{token(core, 'unsubscribe', subscriber)}",
    }


def test_reader_pages_carry_the_security_headers(client: FlaskClient, web_core: App) -> None:
    for name, path in _pages(web_core).items():
        response = client.get(path)
        assert response.status_code == 200, name
        headers = response.headers
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        html = response.get_data(as_text=True)
        assert "<script>" not in html and "style=" not in html  # nothing inline for CSP
        if name in ("manage", "confirm", "unsubscribe"):
            assert headers["Referrer-Policy"] == "no-referrer", name
            assert headers["Cache-Control"] == "no-store", name
        else:
            assert headers["Referrer-Policy"] != "unsafe-url"


def test_session_cookies_are_httponly_samesite_and_secure_over_https(
    https_app: tuple[Flask, App], client: FlaskClient
) -> None:
    plain = client.get("/").headers.get("Set-Cookie", "")
    assert "HttpOnly" in plain and "SameSite=Lax" in plain and "Secure" not in plain
    flask, _ = https_app
    secure_client = flask.test_client()
    cookie = secure_client.get("/", base_url="https://news.example.org").headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_forms_on_token_pages_work_over_https_without_a_referer(
    https_app: tuple[Flask, App],
) -> None:
    """no-referrer on token pages means browsers send no Referer: the CSRF check must not
    insist on one (Flask-WTF's SSL-strict mode would refuse every such form)."""
    flask, core = https_app
    client = flask.test_client()
    subscriber = add_subscriber(core, "reader@example.com")
    manage = f"/manage/{token(core, 'manage', subscriber)}"
    page = client.get(manage, base_url="https://news.example.org")
    response = client.post(
        f"{manage}/pause",
        data={"csrf_token": csrf_from(page)},
        base_url="https://news.example.org",
    )
    assert response.status_code == 303
    fresh = reload(core, subscriber)
    assert fresh is not None and fresh.status is SubscriberStatus.PAUSED


def test_the_one_click_response_sets_no_cookie_and_redirects_nowhere(
    client: FlaskClient, web_core: App
) -> None:
    subscriber = add_subscriber(web_core, "reader@example.com")
    response = client.post(
        f"/unsubscribe/{token(web_core, 'unsubscribe', subscriber)}",
        data={"List-Unsubscribe": "One-Click"},
    )
    assert "Set-Cookie" not in response.headers and "Location" not in response.headers
