"""End to end in a real browser (Debian's Chromium, driven by Playwright): subscribe, read the
confirmation email from the outbox, confirm, write a bad and then a good watchlist, open the
archive and an edition, leave through the link in an email. Screenshots of the home,
preferences and edition pages at desktop and phone widths go to test-artifacts/."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from werkzeug.serving import make_server

from pipeline import accounts, delivery
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.subscribers import SubscriberStatus
from pipeline.web import create_app
from tests.integration.test_delivery import NEWS, store_news
from tests.support.app import FakeClock, make_app
from tests.support.browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS, require_chromium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
READER = "e2e.reader@example.com"


class _Late:
    """A WSGI app set after the server is listening (its URL goes into the settings)."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


@pytest.fixture
def site(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[App, str]]:
    require_chromium()
    late = _Late()
    server = make_server("127.0.0.1", 0, late, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    core = make_app(sqlite_url, tmp_path, FakeClock())
    core.settings = core.settings.model_copy(
        update={"web": core.settings.web.model_copy(update={"base_url": base})}
    )
    store_news(core, *NEWS, "Pakistan and the IMF agree on a bailout review", hours_ago=5)
    end = core.clock()
    delivery.store_digest(core, None, end - timedelta(days=1), end)  # a public edition
    late.app = create_app(core=core)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield core, base
    finally:
        server.shutdown()
        thread.join(timeout=10)
        core.close()


def newest_email(core: App, to: str) -> EmailMessage:
    delivery.drain_queue(core, core.mailer())
    folder = core.settings.path(core.settings.mail.outbox_dir)
    messages = [
        cast(EmailMessage, message_from_bytes(p.read_bytes(), policy=policy.default))
        for p in sorted(folder.glob("*.eml"), key=lambda p: int(p.stem))
    ]
    mine = [m for m in messages if m["To"] == to]
    assert mine, f"no email to {to} in the outbox"
    return mine[-1]


def link_in(message: EmailMessage, path: str) -> str:
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    found = re.search(rf"https?://\S+{path}\S+", text)
    assert found, f"no {path} link in:\n{text}"
    return found.group(0)


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})


def test_a_reader_subscribes_confirms_shapes_reads_and_leaves(site: tuple[App, str]) -> None:
    from playwright.sync_api import sync_playwright

    core, base = site
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))

        def on_console(message: Any) -> None:
            # A form answered 422 (the bad query) is expected; anything else is a problem.
            if message.type == "error" and "status of 422" not in message.text:
                problems.append(f"console: {message.text}")

        page.on("console", on_console)
        try:
            # Subscribe from the home page (keyboard and labels work: fill by label).
            page.goto(f"{base}/")
            shoot(page, "home")
            page.get_by_label("Email address").fill(READER)
            page.get_by_role("button", name="Subscribe").click()
            page.wait_for_load_state()
            assert "inbox" in page.content().lower()

            # The confirmation email, from the outbox; GET shows a button, POST confirms.
            confirm_url = link_in(newest_email(core, READER), "/confirm/")
            page.goto(confirm_url)
            page.get_by_role("button", name="Confirm my subscription").click()
            page.wait_for_load_state()
            assert "You are subscribed" in page.content()
            reader = SubscriberStore(core.store).get(READER)
            assert reader is not None and reader.status is SubscriberStatus.ACTIVE

            # Preferences through the link in an email.
            accounts.request_link(core, READER)
            manage_email = newest_email(core, READER)
            page.goto(link_in(manage_email, "/manage/"))
            query = page.locator(
                "#add-watchlist ~ form textarea, #add-watchlist ~ form input[name$='query']"
            ).first
            query.fill('IMF "bailout')
            page.locator("#add-watchlist ~ form").get_by_role("button", name="Preview").click()
            page.wait_for_load_state()
            error = page.locator("[role=alert]").first.inner_text()
            assert "unclosed quote" in error and "column 5" in error
            query = page.locator(
                "#add-watchlist ~ form textarea, #add-watchlist ~ form input[name$='query']"
            ).first
            query.fill("IMF bailout OR loan")
            page.locator("#add-watchlist ~ form").get_by_role("button", name="Preview").click()
            page.wait_for_load_state()
            assert "Preview of" in page.content()
            shoot(page, "preferences")
            page.locator("#add-watchlist ~ form").get_by_role("button", name="Save").click()
            page.wait_for_load_state()
            reader = SubscriberStore(core.store).get(READER)
            assert reader is not None
            assert [w.query for w in reader.watchlists] == ["IMF bailout OR loan"]

            # The archive and an edition.
            page.goto(f"{base}/archive")
            page.locator("a[href*='/editions/']").first.click()
            page.wait_for_load_state()
            assert "/editions/" in page.url
            assert "IMF" in page.content()
            shoot(page, "edition")

            # Leave through the unsubscribe link in the email: a page with a button first.
            page.goto(link_in(manage_email, "/unsubscribe/"))
            assert SubscriberStore(core.store).get(READER).status is SubscriberStatus.ACTIVE  # type: ignore[union-attr]
            page.get_by_role("button", name="Unsubscribe").click()
            page.wait_for_load_state()
            assert "You are unsubscribed" in page.content()
            left = SubscriberStore(core.store).get(READER)
            assert left is not None and left.status is SubscriberStatus.UNSUBSCRIBED
        finally:
            browser.close()
    assert problems == []
