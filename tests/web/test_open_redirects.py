"""No open redirects (issue 5, Safety): every redirect the web app issues goes to a page of
this site (a same-origin path, or the configured base URL), whatever ``next=``-style
parameter, Host or X-Forwarded-Host header a request carries.

The app takes no redirect target from a request: its redirects are the sign-up form's
``GET /subscribe``, the preference forms' post/redirect/get on a manage link, the editor's
login, logout and dashboard, and the router's own (``merge_slashes``: ``/editions//1`` goes to
``/editions/1``). The crawl below sends the parameters to every route, so a route that starts
following one, or a new redirect, is caught.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App, build_app
from pipeline.core.subscribers import SubscriberStatus
from pipeline.web import create_app
from tests.support.app import FakeClock, settings_for_tests
from tests.web.reader_support import add_subscriber, csrf_from, token

PASSWORD = "correct horse battery staple"
BASE_URL = "https://news.example.org"

# Targets an attacker would put in a link; browsers read "\" as "/" and drop tabs and
# newlines, so "/\evil.example" and "/\t/evil.example" are "//evil.example" to them.
EVIL = (
    "https://evil.example",
    "//evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "https:evil.example",
    "%2F%2Fevil.example",
    "javascript:alert(1)",
)
# Names such parameters go by: the app reads none of them.
NEXT_NAMES = (
    "next",
    "next_url",
    "return_to",
    "returnTo",
    "return",
    "redirect",
    "redirect_to",
    "redirect_uri",
    "url",
    "continue",
    "back",
    "dest",
    "destination",
    "target",
    "to",
    "r",
)


def assert_on_site(location: str) -> None:
    """``location`` as a browser reads it stays on this site: a reference with neither
    scheme nor host (same origin), or a URL under the configured base URL."""
    seen = re.sub(r"[\t\n\r]", "", location).strip("\x00 ").replace("\\", "/")
    parts = urlsplit(seen)
    if parts.scheme or parts.netloc or seen.startswith("//"):
        assert seen == BASE_URL or seen.startswith(BASE_URL + "/"), location
    assert "evil" not in location.split("?", 1)[0].lower(), location  # a query may keep it


def assert_redirects_on_site(response: TestResponse, expected: str) -> None:
    assert response.status_code in (301, 302, 303, 307, 308), response.status_code
    location = response.headers["Location"]
    assert_on_site(location)
    assert location == expected or location.startswith(expected), (location, expected)


def with_next(path: str, target: str) -> str:
    return f"{path}?{urlencode({name: target for name in NEXT_NAMES})}"


@pytest.fixture
def core(sqlite_url: str, tmp_path: Path) -> Iterator[App]:
    settings = settings_for_tests(sqlite_url, tmp_path)
    web = settings.web.model_copy(update={"editor_password": PASSWORD, "base_url": BASE_URL})
    app = build_app(settings.model_copy(update={"web": web}), clock=FakeClock())
    app.store.upgrade()
    yield app
    app.close()


@pytest.fixture
def flask_app(core: App) -> Flask:
    flask = create_app(core=core)
    flask.config.update(TESTING=True)
    return flask


def _client(flask_app: Flask, address: str) -> FlaskClient:
    client = flask_app.test_client()
    client.environ_base["REMOTE_ADDR"] = address  # its own rate-limit bucket
    return client


def _editor_csrf(client: FlaskClient, page_path: str = "/editor/login") -> str:
    page = client.get(page_path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


@pytest.mark.parametrize("target", EVIL)
def test_every_redirect_goes_to_this_site_whatever_next_says(
    flask_app: Flask, core: App, target: str
) -> None:
    octet = EVIL.index(target) + 10
    client = _client(flask_app, f"198.51.100.{octet}")
    evil = {name: target for name in NEXT_NAMES}

    # Sign-up: GET /subscribe goes back to the form on the home page.
    assert_redirects_on_site(client.get(with_next("/subscribe", target)), "/#subscribe")

    # The manage link's forms: post/redirect/get back to the same manage page.
    subscriber = add_subscriber(core, f"reader{octet}@example.com")
    watch = SubscriberStore(core.store).add_watchlist(subscriber.email, "CPEC", False, core.clock())
    manage = f"/manage/{token(core, 'manage', subscriber)}"
    csrf = csrf_from(client.get(manage))
    posts = [
        (
            f"{manage}/preferences",
            {"themes": ["economy"], "frequency": "weekly", "hour": "3", "timezone": "UTC"},
        ),
        (f"{manage}/pause", {}),
        (f"{manage}/resume", {}),
        (f"{manage}/watchlists", {"new-query": "IMF", "new-save": "Save"}),
        (
            f"{manage}/watchlists/{watch.id}",
            {f"w{watch.id}-query": "Gwadar", f"w{watch.id}-save": "Save"},
        ),
        (f"{manage}/watchlists/{watch.id}/delete", {}),
    ]
    for path, body in posts:
        response = client.post(with_next(path, target), data={**body, **evil, "csrf_token": csrf})
        assert_redirects_on_site(response, f"{manage}#")

    # The editor: the dashboard sends strangers to the login form, login to the dashboard,
    # an editor already signed in from the login form to the dashboard, logout to login.
    editor = _client(flask_app, f"203.0.113.{octet}")
    assert_redirects_on_site(editor.get(with_next("/editor", target)), "/editor/login")
    assert_redirects_on_site(editor.get(with_next("/editor/", target)), "/editor/login")
    login = editor.post(
        with_next("/editor/login", target),
        data={"csrf_token": _editor_csrf(editor), "password": PASSWORD, **evil},
    )
    assert_redirects_on_site(login, "/editor")
    assert_redirects_on_site(editor.get(with_next("/editor/login", target)), "/editor")
    signed_in_csrf = _editor_csrf(editor, "/editor/")  # the login made a fresh session
    logout = editor.post(
        with_next("/editor/logout", target), data={"csrf_token": signed_in_csrf, **evil}
    )
    assert_redirects_on_site(logout, "/editor/login")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Host": "evil.example"},
        {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    ],
    ids=["plain", "host", "forwarded-host"],
)
def test_the_routers_own_redirects_are_relative(
    flask_app: Flask, core: App, headers: dict[str, str]
) -> None:
    """Werkzeug answers a path with doubled slashes that matches a route after merging them
    with a 308 to the merged path. It must not name the request's Host: a shared cache
    keeping that permanent redirect would send everyone to whatever Host someone sent."""
    client = _client(flask_app, "198.51.100.200")
    subscriber = add_subscriber(core, "doubled@example.com")
    manage = token(core, "manage", subscriber)
    cases = {
        "/editions//1": "/editions/1",
        "//themes//sanctions": "/themes/sanctions",
        "///themes///sanctions": "/themes/sanctions",
        f"/manage//{manage}": f"/manage/{manage}",
    }
    for raw, merged in cases.items():
        for query in ("", urlencode({name: "https://evil.example" for name in NEXT_NAMES})):
            # PATH_INFO as a server hands it over (the test client would read "//x" as a host).
            response = client.get(
                "/",
                query_string=query,
                headers=headers,
                environ_overrides={"PATH_INFO": raw},
            )
            assert response.status_code == 308, (raw, response.status_code)
            location = response.headers["Location"]
            assert_on_site(location)
            assert location == merged + (f"?{query}" if query else ""), (raw, location)
            assert "://" not in response.get_data(as_text=True)  # no absolute link in its body


def _crawl_targets(core: App) -> list[tuple[str, str]]:
    """Every rule of the app with its arguments filled in: (rule, path)."""
    active = add_subscriber(core, "crawl@example.com")
    pending = add_subscriber(core, "crawl-pending@example.com", SubscriberStatus.PENDING)
    watch = SubscriberStore(core.store).add_watchlist(active.email, "IMF", False, core.clock())
    tokens = {
        "/confirm/": token(core, "confirm", pending),
        "/manage/": token(core, "manage", active),
        "/unsubscribe/": token(core, "unsubscribe", active),
        "/editions/": core.tokens.make("view", active.id, active.email, "1"),
    }
    flask = create_app(core=core)
    targets = []
    for rule in flask.url_map.iter_rules():
        path = rule.rule
        prefix = next((p for p in tokens if path.startswith(p)), None)
        path = path.replace("<token>", tokens[prefix] if prefix else "x")
        path = path.replace("<int:watchlist_id>", str(watch.id))
        path = path.replace("<int:edition_id>", "1").replace("<theme_id>", "sanctions")
        path = path.replace("<path:filename>", "style.css")
        assert "<" not in path, path
        targets.append((rule.rule, path))
    return targets


def test_no_route_follows_a_redirect_parameter(flask_app: Flask, core: App) -> None:
    """Every route, by GET and by POST (with a valid CSRF token and the parameters in both
    query and form), for a stranger and for a signed-in editor: any redirect stays on site,
    and only the known redirecting routes redirect at all."""
    redirecting = {
        "/subscribe",
        "/manage/<token>/preferences",
        "/manage/<token>/pause",
        "/manage/<token>/resume",
        "/manage/<token>/watchlists",
        "/manage/<token>/watchlists/<int:watchlist_id>",
        "/manage/<token>/watchlists/<int:watchlist_id>/delete",
        "/editor/login",
        "/editor/logout",
        "/editor",
        "/editor/",
    }
    targets = _crawl_targets(core)
    stranger = _client(flask_app, "198.51.100.201")
    editor = _client(flask_app, "198.51.100.202")
    editor.post("/editor/login", data={"csrf_token": _editor_csrf(editor), "password": PASSWORD})
    seen: set[str] = set()
    for client in (stranger, editor):
        csrf = csrf_from(client.get("/"))
        for target in EVIL:
            evil = {name: target for name in NEXT_NAMES}
            for rule, path in targets:
                for response in (
                    client.get(with_next(path, target)),
                    client.post(with_next(path, target), data={**evil, "csrf_token": csrf}),
                ):
                    if "Location" in response.headers:
                        assert_on_site(response.headers["Location"])
                        seen.add(rule)
    assert seen <= redirecting, seen - redirecting
    # the crawl did reach redirects (the stranger's dashboard, the sign-up form's GET, ...)
    assert {"/subscribe", "/editor", "/editor/login", "/editor/logout"} <= seen
