"""Browser tests: Debian's Chromium driven by Playwright (never a downloaded browser), and
the app served by a real WSGI server on 127.0.0.1 in a thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

CHROMIUM = Path("/usr/bin/chromium")
# Without these flags Chromium keeps trying to reach Google's hosts on this closed network.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def require_chromium() -> None:
    """Skip without Chromium, except where QASID_REQUIRE_BROWSER=1 (CI): there, fail."""
    if CHROMIUM.exists():
        return
    message = f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("QASID_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (ephemeral port) until the block ends; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
