"""The editor dashboard: closed without a password; login with CSRF, constant-time compare
and a rate limit; what the dashboard shows (escaped); logout; session and cookie rules."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert

from pipeline.adapters.delivery_store import DeliveryStore
from pipeline.adapters.schema import suppression
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App, build_app
from pipeline.core.models import FeedOutcome, FeedSource, Item
from pipeline.core.schedule import PollRecord
from pipeline.core.subscribers import Frequency, SubscriberStatus
from pipeline.web import create_app
from tests.support.app import FakeClock, settings_for_tests

PASSWORD = "correct horse battery staple"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def editor_core(database_url: str, tmp_path: Path, **web: object) -> App:
    settings = settings_for_tests(database_url, tmp_path)
    settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"editor_password": PASSWORD, **web})}
    )
    app = build_app(settings, clock=FakeClock())
    app.store.upgrade()
    return app


@pytest.fixture
def core(sqlite_url: str, tmp_path: Path) -> Iterator[App]:
    app = editor_core(sqlite_url, tmp_path)
    yield app
    app.close()


@pytest.fixture
def flask_app(core: App) -> Flask:
    flask = create_app(core=core)
    flask.config.update(TESTING=True)
    return flask


@pytest.fixture
def editor(flask_app: Flask) -> FlaskClient:
    return flask_app.test_client()


def csrf_token(client: FlaskClient, path: str = "/editor/login") -> str:
    html = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: FlaskClient, password: str = PASSWORD) -> int:
    token = csrf_token(client)
    return client.post(
        "/editor/login", data={"csrf_token": token, "password": password}
    ).status_code


def test_dashboard_is_closed_without_a_password(client: FlaskClient) -> None:
    for path in ("/editor", "/editor/", "/editor/login"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"Not found" in response.data


def test_login_flow(editor: FlaskClient) -> None:
    first = editor.get("/editor")
    assert first.status_code == 302 and first.headers["Location"].endswith("/editor/login")
    form = editor.get("/editor/login").get_data(as_text=True)
    assert '<label for="password">' in form and 'type="password"' in form
    assert 'name="csrf_token"' in form
    token = csrf_token(editor)
    wrong = editor.post("/editor/login", data={"csrf_token": token, "password": "guess"})
    assert wrong.status_code == 401 and b"not right" in wrong.data
    assert editor.get("/editor").status_code == 302
    right = editor.post("/editor/login", data={"csrf_token": token, "password": PASSWORD})
    assert right.status_code == 302 and right.headers["Location"].endswith("/editor")
    page = editor.get("/editor")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for heading in (
        "Feed health",
        "Deliveries by status",
        "Subscribers by status",
        "Suppressions",
        "Recent items, their tags and evidence",
    ):
        assert heading in html
    assert editor.get("/editor/login").status_code == 302  # signed in already


def test_login_needs_the_csrf_token(editor: FlaskClient) -> None:
    response = editor.post("/editor/login", data={"password": PASSWORD})
    assert response.status_code == 400
    assert editor.get("/editor").status_code == 302


def test_logout(editor: FlaskClient) -> None:
    assert sign_in(editor) == 302
    token = csrf_token(editor, "/editor")
    assert editor.get("/editor/logout").status_code == 405  # a link cannot sign anyone out
    out = editor.post("/editor/logout", data={"csrf_token": token})
    assert out.status_code == 302 and out.headers["Location"].endswith("/editor/login")
    assert editor.get("/editor").status_code == 302


def test_changing_the_password_signs_editors_out(editor: FlaskClient, core: App) -> None:
    assert sign_in(editor) == 302
    assert editor.get("/editor").status_code == 200
    web = core.settings.web.model_copy(update={"editor_password": "a new password"})
    core.settings = core.settings.model_copy(update={"web": web})
    assert editor.get("/editor").status_code == 302
    web = core.settings.web.model_copy(update={"editor_password": ""})
    core.settings = core.settings.model_copy(update={"web": web})
    assert editor.get("/editor").status_code == 404  # closed again


def test_a_login_expires(editor: FlaskClient) -> None:
    assert sign_in(editor) == 302
    with editor.session_transaction() as session:
        session["editor_since"] = int(time.time()) - 13 * 3600
    assert editor.get("/editor").status_code == 302


def test_a_forged_session_value_is_refused(editor: FlaskClient) -> None:
    with editor.session_transaction() as session:
        session["editor"] = "0" * 64
        session["editor_since"] = int(time.time())
    assert editor.get("/editor").status_code == 302


def test_login_is_rate_limited(editor: FlaskClient) -> None:
    token = csrf_token(editor)
    codes = [
        editor.post(
            "/editor/login", data={"csrf_token": token, "password": f"guess {n}"}
        ).status_code
        for n in range(11)
    ]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    blocked = editor.post("/editor/login", data={"csrf_token": token, "password": PASSWORD})
    assert blocked.status_code == 429  # even the right password waits
    assert editor.get("/editor/login").status_code == 200  # the form itself is not limited


def test_editor_pages_are_private(editor: FlaskClient) -> None:
    response = editor.get("/editor/login")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "noindex" in response.headers["X-Robots-Tag"]
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_session_cookie_is_secure_on_https(sqlite_url: str, tmp_path: Path) -> None:
    core = editor_core(sqlite_url, tmp_path, base_url="https://news.example.org")
    try:
        flask = create_app(core=core)
        flask.config.update(TESTING=True)
        cookie = flask.test_client().get("/editor/login").headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    finally:
        core.close()


@pytest.fixture
def stocked(core: App) -> App:
    """Feeds (one failing, with a hostile error), a tagged item, deliveries, suppressions
    and subscribers."""
    store = core.store
    ok_id, _ = store.add_feed(FeedSource(url="https://ok.example/feed", title="Dawn"), "cli", NOW)
    bad_id, _ = store.add_feed(
        FeedSource(url="javascript:alert(1)", title="<script>alert('feed')</script>"), "cli", NOW
    )
    store.record_poll(
        bad_id,
        PollRecord(
            status=FeedOutcome.HTTP_ERROR,
            message="<img src=x onerror=alert('error')> HTTP 500",
            http_status=500,
            failures=3,
            gone_count=0,
            enabled=True,
            checked_at=NOW,
            next_poll_at=NOW + timedelta(hours=1),
            succeeded=False,
        ),
    )

    @dataclass
    class Tags:
        relevant: bool = True
        us_link: bool = True
        themes: list[str] = field(default_factory=lambda: ["sanctions"])
        scores: dict[str, float] = field(default_factory=lambda: {"sanctions": 3.25})
        evidence: dict[str, list[str]] = field(
            default_factory=lambda: {
                "sanctions": ["OFAC", "<b onmouseover=alert(1)>"],
                "_pakistan": ["Karachi"],
            }
        )

    item = Item(
        guid_key="g1",
        link="https://ok.example/story",
        title="<script>alert('title')</script> OFAC lists Karachi firm",
        summary_html="",
        summary_text="",
        published=NOW,
        language="en",
    )
    store.store_items(ok_id, "https://ok.example/feed", [item], NOW, {"g1": Tags()})
    subscribers = SubscriberStore(store)
    for email, status in (
        ("a@example.org", SubscriberStatus.ACTIVE),
        ("b@example.org", SubscriberStatus.ACTIVE),
        ("c@example.org", SubscriberStatus.PENDING),
    ):
        subscriber, _ = subscribers.add(
            email,
            themes=[],
            frequency=Frequency.DAILY,
            hour=7,
            timezone="UTC",
            status=status,
            now=NOW,
        )
        DeliveryStore(store).queue_confirmation(subscriber.id, NOW)
    with store.engine.begin() as conn:
        conn.execute(
            insert(suppression),
            [
                {"email_hash": "ab" * 32, "reason": "unsubscribed", "created_at": NOW},
                {"email_hash": "cd" * 32, "reason": "bounced", "created_at": NOW},
            ],
        )
    return core


def test_dashboard_shows_health_items_deliveries_and_suppressions(
    editor: FlaskClient, stocked: App
) -> None:
    assert sign_in(editor) == 302
    html = editor.get("/editor").get_data(as_text=True)
    assert "1 feed failing (listed first)" in html
    failing = html.index("&lt;script&gt;alert(&#39;feed&#39;)&lt;/script&gt;")
    assert failing < html.index(">Dawn</a>")  # failing feeds first
    assert "http_error (500)" in html and '3 <span class="muted">(1 in all)</span>' in html
    assert "&lt;img src=x onerror=alert(&#39;error&#39;)&gt; HTTP 500" in html
    assert "OFAC lists Karachi firm" in html and "&lt;script&gt;alert(&#39;title&#39;)" in html
    assert "Sanctions" in html and "3.25" in html and "OFAC" in html
    assert "&lt;b onmouseover=alert(1)&gt;" in html
    assert "United States involved" in html
    assert "<td>queued</td><td>3</td>" in html
    assert "<td>active</td><td>2</td>" in html and "<td>pending</td><td>1</td>" in html
    assert "2 addresses will never be mailed again" in html and "bounced" in html
    assert "<script" not in html.replace('<script src="/static/', "")
    assert 'href="javascript:' not in html
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html)
