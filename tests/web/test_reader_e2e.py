"""The whole loop through real parts: sign up on the page, drain the ledger with the outbox
mailer, read the .eml, follow its confirmation link, its preferences link and, as a mail
provider would, its List-Unsubscribe one-click URL."""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient

from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.subscribers import SubscriberStatus
from pipeline.delivery import drain_queue
from tests.web.reader_support import csrf_from, post_signup, title_of


def _outbox(core: App) -> list[EmailMessage]:
    folder = Path(core.settings.path(core.settings.mail.outbox_dir))
    return [
        cast(EmailMessage, message_from_bytes(p.read_bytes(), policy=policy.default))
        for p in sorted(folder.glob("*.eml"))
    ]


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def _path(url: str) -> str:
    return urlsplit(url).path


def test_sign_up_confirm_from_the_email_manage_and_leave_with_one_click(
    client: FlaskClient, web_app: Flask, web_core: App
) -> None:
    response = post_signup(client, "reader@example.com", watchlist="IMF loan", hour="5")
    assert title_of(response) == "Check your inbox"
    # submitted again before confirming: the latest choices win, still one email
    assert post_signup(client, "reader@example.com", ip="192.0.2.11", hour="6").status_code == 200

    summary = drain_queue(web_core, web_core.mailer())
    assert summary.sent == 1  # two sign-ups, one confirmation
    [message] = _outbox(web_core)
    assert message["To"] == "reader@example.com"
    assert message["Subject"] == "Confirm your subscription to qasid"
    base = web_core.settings.web.base_url
    [confirm_url] = re.findall(re.escape(base) + r"/confirm/[A-Za-z0-9_.\-]+", _text(message))
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None and confirm_url in str(html_part.get_content())

    page = client.get(_path(confirm_url))
    assert page.status_code == 200 and "Confirm my subscription" in page.get_data(as_text=True)
    people = SubscriberStore(web_core.store)
    pending = people.get("reader@example.com")
    assert pending is not None and pending.status is SubscriberStatus.PENDING
    done = client.post(_path(confirm_url), data={"csrf_token": csrf_from(page)})
    assert title_of(done) == "You are subscribed"
    active = people.get("reader@example.com")
    assert active is not None and active.status is SubscriberStatus.ACTIVE
    assert [w.query for w in active.watchlists] == ["IMF loan"] and active.hour == 6

    # the footer's preferences link opens the manage page
    manage_urls = re.findall(
        re.escape(base) + r"/manage/[A-Za-z0-9_.\-]+", str(html_part.get_content())
    )
    manage_url = manage_urls[0]
    manage = client.get(_path(manage_url))
    assert manage.status_code == 200 and "IMF loan" in manage.get_data(as_text=True)

    # a mail provider's one-click POST to the List-Unsubscribe URL, no cookies
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [one_click] = re.findall(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]))
    provider = web_app.test_client(use_cookies=False)
    left = provider.post(_path(one_click), data={"List-Unsubscribe": "One-Click"})
    assert left.status_code == 200 and "Location" not in left.headers
    gone = people.get("reader@example.com")
    assert gone is not None and gone.status is SubscriberStatus.UNSUBSCRIBED
    # and the person can come back from the page behind the same link
    page = client.get(_path(one_click))
    assert title_of(page) == "You are not subscribed"
    back = client.post(_path(one_click) + "/resubscribe", data={"csrf_token": csrf_from(page)})
    assert title_of(back) == "Welcome back"


def test_the_manage_link_email_holds_the_link_and_nothing_from_any_feed(web_core: App) -> None:
    """``accounts.link_email`` is what ``delivery.compose`` renders for the "link" channel."""
    from pipeline import accounts
    from pipeline.adapters.render import Recipient
    from pipeline.delivery import load_editorial

    renderer = load_editorial(web_core, []).renderer
    manage = f"{web_core.settings.web.base_url}/manage/abc.def"
    rendered = accounts.link_email(
        renderer,
        Recipient(
            reason="You receive this because you asked for a link.",
            manage_url=manage,
            unsubscribe_url=f"{web_core.settings.web.base_url}/unsubscribe/xyz",
        ),
    )
    assert rendered.subject == "Your link to manage qasid"
    assert manage in rendered.text and f'href="{manage}"' in rendered.html
    assert "/unsubscribe/xyz" in rendered.text and "1 Test Street, Lahore" in rendered.text
