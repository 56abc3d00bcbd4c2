"""Helpers for the reader's page tests: CSRF tokens from forms, subscribers in any state,
links as the emails carry them, and tokens signed in the past."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from flask.testing import FlaskClient
from itsdangerous.timed import TimestampSigner
from sqlalchemy import func, select
from werkzeug.test import TestResponse

import pipeline.tokens
from pipeline.adapters.schema import consent, delivery
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.subscribers import Subscriber, SubscriberStatus
from pipeline.core.tagger import THEME_IDS
from pipeline.subscriptions import subscribe

CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
DAY = 24 * 3600


def csrf_from(response: TestResponse) -> str:
    found = CSRF.search(response.get_data(as_text=True))
    assert found, "no CSRF token in the page"
    return found.group(1)


def fresh_csrf(client: FlaskClient, path: str = "/", **kw: Any) -> str:
    """A CSRF token valid for this client's session (read from a page's form)."""
    return csrf_from(client.get(path, **kw))


def signup_form(email: str, **fields: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "email": email,
        "themes": list(THEME_IDS),
        "frequency": "daily",
        "hour": "7",
        "timezone": "Asia/Karachi",
        "watchlist": "",
    }
    form.update(fields)
    return form


def post_signup(
    client: FlaskClient, email: str, ip: str = "192.0.2.10", token: str | None = None, **fields: Any
) -> TestResponse:
    environ = {"REMOTE_ADDR": ip}
    token = token or fresh_csrf(client, environ_base=environ)
    return client.post(
        "/subscribe",
        data={"csrf_token": token, **signup_form(email, **fields)},
        environ_base=environ,
        headers={"User-Agent": "pytest-browser/1.0"},
    )


def add_subscriber(
    core: App, email: str, status: SubscriberStatus = SubscriberStatus.ACTIVE, **prefs: Any
) -> Subscriber:
    subscriber, _ = subscribe(core, email, status=status, **prefs)
    return subscriber


def reload(core: App, subscriber: Subscriber) -> Subscriber | None:
    return SubscriberStore(core.store).by_id(subscriber.id)


def token(core: App, purpose: str, subscriber: Subscriber) -> str:
    return core.tokens.make(purpose, subscriber.id, subscriber.email)


@contextmanager
def signed_ago(seconds: float) -> Iterator[None]:
    """Tokens made inside carry a timestamp ``seconds`` in the past (tokens read the real
    clock, not the app's)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time() - seconds))
        patch.setattr(pipeline.tokens, "_timestamp", lambda: int(time.time() - seconds))
        yield


def count_rows(core: App, table: Any, **where: Any) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with core.store.engine.begin() as conn:
        return int(conn.execute(query).scalar_one())


def confirmations(core: App, subscriber_id: int | None = None) -> int:
    where: dict[str, Any] = {"channel": "confirm"}
    if subscriber_id is not None:
        where["subscriber_id"] = subscriber_id
    return count_rows(core, delivery, **where)


def consent_rows(core: App, subscriber_id: int) -> list[Mapping[str, Any]]:
    with core.store.engine.begin() as conn:
        rows = conn.execute(
            select(consent).where(consent.c.subscriber_id == subscriber_id).order_by(consent.c.id)
        ).all()
    return [row._mapping for row in rows]


def title_of(response: TestResponse) -> str:
    found = re.search(r"<h1>(.*?)</h1>", response.get_data(as_text=True), re.S)
    return found.group(1).strip() if found else ""
