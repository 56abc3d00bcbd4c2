"""`qasid demo` end to end: the bundled snapshots polled, tagged, digested and delivered to the
outbox, the public edition in the archive, and (by default) the web app served on
127.0.0.1 at the URL it prints, until SIGINT or SIGTERM."""

from __future__ import annotations

import email
import email.policy
import html
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import demo
from pipeline.bootstrap import build_app
from pipeline.cli import main
from pipeline.demo import DEMO_READERS
from pipeline.editorial import load_theme_infos
from pipeline.settings import PROJECT_ROOT, Settings, load_settings
from pipeline.web import create_app

REPO = Path(__file__).resolve().parents[2]
BUNDLED = Path(str(resources.files("pipeline.demo_data")))
READERS = sorted(reader["email"] for reader in DEMO_READERS)

# One extra snapshot with hostile markup in its title and summary (the bundled snapshots
# hold none), about Gwadar and CPEC so the analyst's watchlist "CPEC OR Gwadar" picks it.
HOSTILE_MARK = "envoys discuss CPEC security"
HOSTILE_FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Hostile Wire</title><link>https://hostile.example/</link>
<description>a test feed</description>
<item>
<title>Gwadar &lt;script&gt;alert("qasid-xss")&lt;/script&gt; port: Pakistan and US {mark}</title>
<link>https://hostile.example/gwadar-cpec</link>
<guid isPermaLink="false">hostile-gwadar-1</guid>
<pubDate>{published}</pubDate>
<description><![CDATA[<p>Pakistani and US officials met at Gwadar on CPEC security.
<script>alert("qasid-xss")</script><img src="x" onerror="alert('qasid-xss')">
<a href="javascript:alert('qasid-xss')">more</a></p>]]></description>
</item></channel></rss>
"""
# Script elements a page may carry: only the app's own files under /static/.
FOREIGN_SCRIPT = re.compile(r"<script(?![^>]*\ssrc=\"/static/)", re.IGNORECASE)
CONTEXT = re.compile(r'<p class="context"[^>]*>(.*?)</p>', re.DOTALL)
WEB_APP_LINE = re.compile(r"^web app: (http://127\.0\.0\.1:(\d+))/ ")


def _bundled_feed_paths() -> list[str]:
    listing = tomllib.loads((BUNDLED / "feeds.toml").read_text(encoding="utf-8"))
    return [feed["url"].split("{port}", 1)[1] for feed in listing["feed"]]


def demo_environment(tmp_path: Path) -> dict[str, str | None]:
    """The environment changes for a hermetic demo: config/qasid.toml, the outbox and the
    signing key in tmp_path, and none of the developer's or CI's settings variables (other
    QASID_ variables, such as CI's QASID_REQUIRE_POSTGRES, name no section and are ignored
    by the settings loader; they stay)."""
    sections = {name for name in Settings.model_fields if name != "root"}
    read_by_settings = {"DATABASE_URL", "SENDGRID_API_KEY", "PORT", "QASID_CONFIG"}
    changes: dict[str, str | None] = {
        name: None
        for name in os.environ
        if name in read_by_settings
        or (name.startswith("QASID_") and name[6:].split("_", 1)[0].lower() in sections)
    }
    changes.update(
        {
            "QASID_MAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
            "QASID_WEB_SECRET_KEY": "demo-test-secret",  # not var/secret.key in the checkout
        }
    )
    return changes


def read_outbox(outbox: Path) -> dict[str, EmailMessage]:
    messages: dict[str, EmailMessage] = {}
    for path in sorted(outbox.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        [(_, address)] = getaddresses([str(message["To"])])
        messages[address] = message
    return messages


def _normalised(text: str) -> str:
    return " ".join(html.unescape(text).split())


def check_email(message: EmailMessage, contexts: set[str]) -> str:
    """The checks every demo email passes; returns its HTML part."""
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and rich is not None
    text, page = plain.get_content(), rich.get_content()
    assert text.strip() and "<html" in page.lower()
    unsubscribe = str(message["List-Unsubscribe"])
    assert re.search(r"<https?://[^>]+/unsubscribe/[^>]+>", unsubscribe), unsubscribe
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    # A theme section opens with that theme's context paragraph, in both parts.
    shown = {_normalised(paragraph) for paragraph in CONTEXT.findall(page)}
    assert shown & contexts, "no theme section with its context paragraph"
    assert any(context in " ".join(text.split()) for context in shown & contexts)
    # Nothing from a feed can run in the HTML part.
    assert not FOREIGN_SCRIPT.search(page)
    assert not re.search(r"\son[a-z]+\s*=", page, re.IGNORECASE)
    assert "javascript:" not in page.lower()
    return page


def one_click_url(message: EmailMessage) -> str:
    found = re.search(r"<(https?://[^>]+/unsubscribe/[^>]+)>", str(message["List-Unsubscribe"]))
    assert found
    return found.group(1)


@pytest.fixture
def demo_with_hostile_feed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The bundled demo data plus one hostile snapshot (the bundled files are unchanged)."""
    data = tmp_path / "demo_data"
    shutil.copytree(BUNDLED, data)
    published = format_datetime(datetime.now(UTC) - timedelta(hours=1))
    (data / "feeds" / "hostile.rss").write_text(
        HOSTILE_FEED.format(mark=HOSTILE_MARK, published=published), encoding="utf-8"
    )
    with (data / "feeds.toml").open("a", encoding="utf-8") as listing:
        listing.write(
            '\n[[feed]]\nurl = "http://127.0.0.1:{port}/hostile.rss"\ntitle = "Hostile Wire"\n'
            'language = "en"\ncountry = "PK"\nkind = "newspaper"\n'
        )
    monkeypatch.setattr(demo, "demo_data", lambda: data)
    return data


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_no_serve_delivers_digests_and_archives_the_edition(
    tmp_path: Path, demo_with_hostile_feed: Path
) -> None:
    workdir, outbox = tmp_path / "work", tmp_path / "outbox"
    env = demo_environment(tmp_path)
    env["QASID_FETCH_PARSE_WORKERS"] = "0"  # in-process: no parser processes forked from pytest
    result = CliRunner().invoke(
        main, ["demo", "--no-serve", "--workdir", str(workdir)], env=env, catch_exceptions=False
    )
    output = result.output
    assert result.exit_code == 0, output

    # Every bundled feed (and the hostile one) polled without a failure.
    bundled = _bundled_feed_paths()
    polled = {
        line.split()[-1].rsplit("/", 1)[1]: line.split()[0]
        for line in output.splitlines()
        if re.match(r"^  \S+\s+\d+ new  http://127\.0\.0\.1:\d+/", line)
    }
    assert polled == {**{path.lstrip("/"): "ok" for path in bundled}, "hostile.rss": "ok"}
    feeds = len(bundled) + 1
    assert f"{feeds} feeds: {feeds} ok" in output and " 0 failed" in output
    assert "failed:" not in output

    # One email for each demo reader, each a proper digest, none carrying feed markup.
    messages = read_outbox(outbox)
    assert sorted(messages) == READERS
    contexts = {_normalised(t.context) for t in load_theme_infos(PROJECT_ROOT) if t.context}
    pages = {address: check_email(message, contexts) for address, message in messages.items()}
    assert HOSTILE_MARK in pages["analyst@example.org"]  # the hostile item did reach a digest

    # It says where the outbox and the archive are.
    database = f"sqlite:///{workdir.resolve() / 'qasid.db'}"
    assert f"emails in {outbox}/" in output
    found = re.search(r"^archive: public edition (\d+) in (\S+);", output, re.MULTILINE)
    assert found and found.group(2) == database, output
    edition_id = int(found.group(1))

    # The public edition is in the archive the web app reads.
    settings = load_settings(
        environ={"DATABASE_URL": database, "QASID_WEB_SECRET_KEY": "demo-test-secret"}
    )
    core = build_app(settings)
    try:
        client = create_app(settings, core=core).test_client()
        archive = client.get("/archive")
        assert archive.status_code == 200
        assert f"/editions/{edition_id}" in archive.get_data(as_text=True)
        edition = client.get(f"/editions/{edition_id}")
        assert edition.status_code == 200
        page = edition.get_data(as_text=True)
        assert HOSTILE_MARK in page
        assert not FOREIGN_SCRIPT.search(page) and "javascript:" not in page.lower()
    finally:
        core.close()


# -- served -----------------------------------------------------------------------------------


class DemoProcess:
    """`qasid demo` in a child process, its output read line by line on a thread."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "demo", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Ctrl-C must reach it even when the tests run with SIGINT ignored (e.g. under a
            # shell's background job): ignored signals survive exec.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("demo ended early:\n" + self.text())
            self.output.append(line)
            if found := pattern.search(line):
                return found
        raise AssertionError(f"no line matching {pattern.pattern} in {timeout} s:\n" + self.text())

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        while (line := self.lines.get(timeout=5)) is not None:
            self.output.append(line)
        return code

    def text(self) -> str:
        return "\n".join(self.output)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[type[DemoProcess]]:
    started: list[DemoProcess] = []

    class Started(DemoProcess):
        def __init__(self, *args: str, env: dict[str, str]) -> None:
            super().__init__(*args, env=env)
            started.append(self)

    yield Started
    for process in started:
        process.kill()


def _get(url: str, data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode("utf-8")


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_demo_serves_the_web_app_at_the_url_it_prints(
    tmp_path: Path, demo_process: type[DemoProcess], stop: signal.Signals
) -> None:
    env = {k: v for k, v in os.environ.items()}
    for name, value in demo_environment(tmp_path).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env["PYTHONUNBUFFERED"] = "1"
    child = demo_process("--port", "0", "--workdir", str(tmp_path / "work"), env=env)

    edition = child.wait_for(re.compile(r"^demo: public edition (\d+) in the archive"), 180)
    edition_id = int(edition.group(1))
    served = child.wait_for(WEB_APP_LINE, 60)
    base, port = served.group(1), int(served.group(2))
    assert port not in (0, 8000)  # --port 0: a free port, and the URL names the real one
    assert f"archive: {base}/archive (public edition: {base}/editions/{edition_id})" in (
        child.text()
    )

    status, home = _get(f"{base}/")
    assert status == 200 and "<form" in home
    status, archive = _get(f"{base}/archive")
    assert status == 200 and f"/editions/{edition_id}" in archive
    status, _ = _get(f"{base}/editions/{edition_id}")
    assert status == 200

    # The links in the demo's emails point at this server: one-click unsubscribe works.
    messages = read_outbox(tmp_path / "outbox")
    assert sorted(messages) == READERS
    link = one_click_url(messages["journalist@example.com"])
    assert link.startswith(f"{base}/unsubscribe/")
    status, _ = _get(link, data=b"List-Unsubscribe=One-Click")
    assert status == 200

    child.process.send_signal(stop)
    assert child.finish(timeout=60) == 0, child.text()
    assert "demo: web app stopped" in child.text()
    assert "Traceback" not in child.text()
    with pytest.raises(urllib.error.URLError):
        _get(f"{base}/")


@pytest.mark.timeout(60)
def test_a_stop_signal_landing_during_a_request_still_ends_the_demo_server() -> None:
    """The SIGTERM handler raises ``_Stop`` wherever the main thread is: inside a request,
    the server's loop must not take it for a failed request and go on serving."""
    from werkzeug.serving import make_server

    def app(environ: object, start_response: object) -> list[bytes]:
        raise demo._Stop  # as the handler does when the signal lands here

    server = make_server("127.0.0.1", 0, app)  # type: ignore[arg-type]
    stopped: list[bool] = []

    def serve() -> None:
        try:
            server.serve_forever()
        except demo._Stop:
            stopped.append(True)

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=5)
        serving.join(10)
        assert stopped == [True]
    finally:
        server.server_close()


@pytest.mark.timeout(60)
def test_demo_refuses_a_busy_port_before_running_the_pipeline(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            main,
            ["demo", "--port", str(port), "--workdir", str(tmp_path / "work")],
            env=demo_environment(tmp_path),
        )
    assert result.exit_code == 1
    assert f"cannot serve the demo on 127.0.0.1:{port}" in result.output
    assert "--port" in result.output and "--no-serve" in result.output
    assert not (tmp_path / "work").exists() and not (tmp_path / "outbox").exists()
