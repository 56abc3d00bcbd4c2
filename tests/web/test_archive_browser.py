"""X-06: a real browser (Debian's chromium driven by Playwright, headless) opens an archive
edition built from hostile feed items (X-01..X-03): no dialog opens, no script runs, the CSP
reports nothing, no request leaves 127.0.0.1. Screenshots of the edition, the archive and a
theme page at desktop and phone widths go to test-artifacts/ (gitignored)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from pipeline.bootstrap import App
from tests.web.test_archive import hostile_edition

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="X-06 needs Debian's chromium at /usr/bin/chromium"
    ),
]

# Runs before any page script: records CSP violations (an injected script or handler that
# the escaping let through would show up here, blocked or not).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI + " " + e.sample);
});
"""

# What the escaping must guarantee in the rendered DOM.
DOM_CHECK = """() => ({
  scripts: document.querySelectorAll("script").length,
  handlers: [...document.querySelectorAll("*")].filter(
    (el) => [...el.attributes].some((a) => a.name.toLowerCase().startsWith("on"))).length,
  dangerous: document.querySelectorAll(
    "iframe, object, embed, form[action^=javascript], base, meta[http-equiv]").length,
  hrefs: [...document.querySelectorAll("a[href]")].map((a) => a.getAttribute("href")),
  images: document.querySelectorAll("img").length,
  violations: window.__violations,
})"""


@pytest.fixture
def live_server(web_app: Flask) -> Iterator[str]:
    """The real app on 127.0.0.1 in a thread (werkzeug's server)."""
    server = make_server("127.0.0.1", 0, web_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _open(browser: Any, url: str, viewport: dict[str, int], shot: Path) -> dict[str, Any]:
    context = browser.new_context(viewport=viewport)
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    seen: dict[str, list[str]] = {"dialogs": [], "console": [], "errors": [], "requests": []}

    def on_dialog(dialog: Any) -> None:
        seen["dialogs"].append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda message: seen["console"].append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("request", lambda request: seen["requests"].append(request.url))
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200
    page.wait_for_timeout(300)  # an onerror or onload handler would have fired by now
    dom = page.evaluate(DOM_CHECK)
    page.keyboard.press("Tab")  # the skip link is the first stop (keyboard use)
    focused = page.evaluate("() => document.activeElement && document.activeElement.className")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    context.close()
    return {**seen, **dom, "focused": focused}


def test_hostile_edition_runs_no_script_in_a_real_browser(live_server: str, web_core: App) -> None:
    from playwright.sync_api import sync_playwright

    edition_id = hostile_edition(web_core)
    pages = {
        "edition": f"/editions/{edition_id}",
        "archive": "/archive",
        "search": "/archive?q=story",
        "theme": "/themes/economy",
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            for name, path in pages.items():
                widths = (
                    VIEWPORTS
                    if name in ("edition", "archive")
                    else {"desktop": VIEWPORTS["desktop"]}
                )
                for width, viewport in widths.items():
                    shot = ARTIFACTS / f"x06-{name}-{width}.png"
                    seen = _open(browser, live_server + path, viewport, shot)
                    where = f"{name} at {width}"
                    assert seen["dialogs"] == [], where
                    assert seen["errors"] == [], where
                    assert seen["violations"] == [], where
                    assert not [c for c in seen["console"] if "Content Security Policy" in c]
                    assert seen["scripts"] == 0 and seen["handlers"] == 0, where
                    assert seen["dangerous"] == 0 and seen["images"] == 0, where
                    for href in seen["hrefs"]:
                        assert href.startswith(("/", "#", "http://", "https://")), href
                        assert not href.startswith("//"), href
                    assert all(r.startswith(live_server) for r in seen["requests"]), where
                    assert seen["focused"] == "skip", where
                    assert shot.stat().st_size > 1000
        finally:
            browser.close()
