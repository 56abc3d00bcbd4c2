"""No link token in logs: the request lines of the servers (werkzeug for ``qasid serve``,
gunicorn in production: see test_gunicorn) and the app's own error lines. ``qasid serve``."""

from __future__ import annotations

import http.client
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, url_for
from werkzeug.serving import make_server

from pipeline.web import logs
from tests.web.test_gunicorn import ROOT, free_port, server_env

TOKEN = "eyJzIjoxfQ.Zx9-k_Q.S3cr3t-Sig_nature"  # the shape of an itsdangerous token


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/manage/TOK", "/manage/[token]"),
        ("/manage/TOK/watchlists/3/delete", "/manage/[token]/watchlists/3/delete"),
        ("/confirm/TOK/resend", "/confirm/[token]/resend"),
        ("POST /unsubscribe/TOK HTTP/1.1", "POST /unsubscribe/[token] HTTP/1.1"),
        ("/unsubscribe/TOK?source=page", "/unsubscribe/[token]?source=page"),
        ("/editions/42/TOK", "/editions/42/[token]"),
        ("https://news.example/app/manage/TOK#w", "https://news.example/app/manage/[token]#w"),
        ('"GET /link?token=TOK&x=1 HTTP/1.1"', '"GET /link?token=[token]&x=1 HTTP/1.1"'),
        ("token=TOK", "token=[token]"),
        # public pages and other URLs are left as they are
        ("/editions/42", "/editions/42"),
        ("/editions/42/", "/editions/42/"),
        ("/archive?q=manage&theme=economy", "/archive?q=manage&theme=economy"),
        ("/themes/economy", "/themes/economy"),
        ("/manage/", "/manage/"),
    ],
)
def test_redact_replaces_the_token_and_nothing_else(text: str, expected: str) -> None:
    assert logs.redact(text.replace("TOK", TOKEN)) == expected


def test_every_route_with_a_token_is_redacted(web_app: Flask) -> None:
    """Routes and redaction stay in step: a new token route must be covered."""
    routes = [r for r in web_app.url_map.iter_rules() if "token" in r.arguments]
    assert len(routes) >= 10
    values = {"token": TOKEN, "edition_id": 7, "watchlist_id": 3}
    with web_app.test_request_context(base_url="https://news.example/app"):
        for rule in routes:
            url = url_for(rule.endpoint, **{k: values[k] for k in rule.arguments}, _external=True)
            assert TOKEN in url
            assert TOKEN not in logs.redact(url), rule.rule
            assert logs.TOKEN_MARK in logs.redact(url), rule.rule


def test_the_filter_redacts_messages_and_both_kinds_of_arguments() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "Exception on /manage/" + TOKEN + " [%s]", ("POST",), None
    )
    assert logs.RedactTokens().filter(record)
    assert record.getMessage() == "Exception on /manage/[token] [POST]"
    atoms = {"r": f"GET /confirm/{TOKEN} HTTP/1.1", "s": "200", "b": 512}
    record = logging.LogRecord("x", logging.INFO, __file__, 1, '"%(r)s" %(s)s', (atoms,), None)
    logs.RedactTokens().filter(record)
    assert record.getMessage() == '"GET /confirm/[token] HTTP/1.1" 200'
    assert record.args is atoms and atoms["b"] == 512  # changed in place


@pytest.fixture
def served(web_app: Flask) -> Iterator[int]:
    """The app on werkzeug's server (as ``qasid serve`` runs it), on a free port."""
    server = make_server("127.0.0.1", 0, web_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_werkzeug_request_lines_carry_no_token(
    served: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="werkzeug")
    for method, path in [
        ("GET", f"/unsubscribe/{TOKEN}"),
        ("POST", f"/unsubscribe/{TOKEN}"),
        ("GET", f"/manage/{TOKEN}?token={TOKEN}"),
        ("GET", f"/editions/1/{TOKEN}"),
    ]:
        conn = http.client.HTTPConnection("127.0.0.1", served, timeout=10)
        try:
            conn.request(method, path)
            conn.getresponse().read()
        finally:
            conn.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert len(lines) == 4, lines
    assert all(TOKEN not in line and "[token]" in line for line in lines), lines
    assert TOKEN not in caplog.text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_qasid_serve_serves_the_app_and_logs_requests_without_tokens(tmp_path: Path) -> None:
    env = server_env(tmp_path, {})
    refused = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "qasid db upgrade" in refused.stderr
    subprocess.run(
        [sys.executable, "-m", "pipeline", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text(errors="replace")
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", f"/unsubscribe/{TOKEN}")
                    status = conn.getresponse().status
                    conn.close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, log.read_text(errors="replace")
                    time.sleep(0.2)
            assert status == 404  # not a valid token: the friendly 404 page
        finally:
            process.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
    text = log.read_text(errors="replace")
    assert f"web app: http://127.0.0.1:{port}/" in text
    assert "GET /unsubscribe/[token] HTTP/1.1" in text
    assert TOKEN not in text
