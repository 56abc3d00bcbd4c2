"""The production server: ``gunicorn pipeline.web.wsgi:app --workers 2`` on 127.0.0.1.

D-09: no scheduler thread in any web worker (``/healthz`` answers from both workers).
A-04: a per-address rate limit in shared storage (Redis) holds across both workers.
The access log holds no link token (pipeline/web/logs.py).

The limit exercised is the SendGrid webhook's own (``[sendgrid] webhook_rate_limit``, set to
5/hour here), because it is the per-address limit this part of the app owns. Redis keys are
kept apart from any other run by sending from a loopback address of this run's own
(127.x.y.z): Flask-Limiter keys by client address, so this run's keys name that address and
only they are deleted afterwards. ``GunicornServer`` is shared with the webhook load test.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.web.test_webhook_signing import Signer, body_of, make_event

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379"
# "<pid> status method path", then every atom that can hold a URL (for the token check)
ACCESS_FORMAT = '%(p)s %(s)s %(m)s %(U)s "%(r)s" "%(f)s" %(q)s %({raw_uri}e)s'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Response:
    status: int
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class GunicornServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    access_log: Path
    error_log: Path
    env: dict[str, str]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        source: str | None = None,
        timeout: float = 10,
    ) -> Response:
        """One request on a fresh connection (so the kernel may pick either worker)."""
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=timeout, source_address=(source, 0) if source else None
        )
        started = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        return Response(answer.status, data, time.perf_counter() - started)

    def worker_pids(self) -> set[int]:
        return {child.pid for child in psutil.Process(self.process.pid).children()}

    def access_lines(self) -> list[tuple[int, int, str, str]]:
        """(pid, status, method, path) per request served so far."""
        lines = []
        for line in self.access_log.read_text(encoding="utf-8").splitlines():
            match = re.match(r"<(\d+)> (\d{3}) (\S+) (\S+) ", line.strip())
            if match:
                pid, status, method, path = match.groups()
                lines.append((int(pid), int(status), method, path))
        return lines

    def database_url(self) -> str:
        return self.env["DATABASE_URL"]


def server_env(tmp_path: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: no QASID_* from the caller, an empty config file, a temp
    SQLite database."""
    config = tmp_path / "qasid.toml"
    config.write_text("", encoding="utf-8")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QASID_") and k not in ("DATABASE_URL", "SENDGRID_API_KEY", "PORT")
    }
    env.update(
        {
            "QASID_CONFIG": str(config),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'web.db'}",
            "QASID_WEB_SECRET_KEY": "gunicorn-test-secret",
            "QASID_MAIL_POSTAL_ADDRESS": "1 Test Street, Lahore",
            "QASID_MAIL_OUTBOX_DIR": str(tmp_path / "outbox"),
            "QASID_FEEDS_FILE": str(tmp_path / "no-feeds.toml"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@contextmanager
def gunicorn_server(
    tmp_path: Path, extra_env: Mapping[str, str] | None = None, workers: int = 2
) -> Iterator[GunicornServer]:
    """Migrate a temp database, start gunicorn, wait for /healthz; always stop it."""
    env = server_env(tmp_path, extra_env or {})
    subprocess.run(
        [sys.executable, "-m", "pipeline", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        check=True,
        timeout=60,
        capture_output=True,
    )
    port = free_port()
    access_log = tmp_path / "access.log"
    error_log = tmp_path / "error.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "pipeline.web.wsgi:app",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--access-logfile",
        str(access_log),
        "--access-logformat",
        ACCESS_FORMAT,
        "--error-logfile",
        str(error_log),
        "--graceful-timeout",
        "5",
    ]
    output = (tmp_path / "server.out").open("wb")  # the app's own log lines
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, start_new_session=True, stdout=output, stderr=output
    )
    server = GunicornServer("127.0.0.1", port, process, access_log, error_log, env)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                log = (tmp_path / "server.out").read_text(errors="replace")
                if error_log.exists():
                    log += error_log.read_text(errors="replace")
                pytest.fail(f"gunicorn exited with {process.returncode}:\n{log[-3000:]}")
            try:
                if server.request("GET", "/healthz", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("gunicorn did not answer /healthz within 30 s")
            time.sleep(0.1)
        # /healthz answered from one worker; wait until every worker has booted.
        while len(server.worker_pids()) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        yield server
    finally:
        _stop(process)
        output.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # graceful: the master stops its workers
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: only this server
        process.wait(timeout=5)


# -- one server for D-09 and A-04 (starting gunicorn is the slow part) ----------------------

LIMIT = 5  # webhook posts per hour per client address, for A-04


@dataclass
class Production:
    server: GunicornServer
    signer: Signer
    redis: Any  # a client, or None when Redis is not reachable (A-04 then skips)


def _redis_or_none() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        return None
    return client


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    signer = Signer()
    client = _redis_or_none()
    env = {
        "QASID_SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_key,
        "QASID_SENDGRID_WEBHOOK_RATE_LIMIT": f"{LIMIT}/hour",
    }
    if client is not None:
        env["QASID_WEB_RATELIMIT_STORAGE"] = REDIS_URL
    with gunicorn_server(tmp_path_factory.mktemp("gunicorn"), env) as server:
        yield Production(server, signer, client)


# -- D-09 ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)  # starting gunicorn twice on shared cores
def test_d09_no_scheduler_thread_in_either_gunicorn_worker(production: Production) -> None:
    server = production.server
    workers = server.worker_pids()
    assert len(workers) == 2
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 15
    with ThreadPoolExecutor(8) as pool:
        while set(seen) != workers and time.monotonic() < deadline:
            for answer in pool.map(lambda _: server.request("GET", "/healthz"), range(32)):
                assert answer.status == 200
                body = answer.json()
                seen[body["pid"]] = body
    assert set(seen) == workers, "both workers should have answered /healthz"
    for body in seen.values():
        assert body["ok"] is True
        assert body["scheduler_threads"] == 0


# -- A-04 ----------------------------------------------------------------------------------


def _own_loopback_address() -> str:
    """A loopback address no other run uses at the same time (127.0.0.0/8 is all local)."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(100, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def _delete_keys(client: Any, address: str) -> int:
    keys = list(client.scan_iter(match=f"*/{address}/*", count=1000))
    return int(client.delete(*keys)) if keys else 0


@pytest.mark.slow
@pytest.mark.timeout(300)  # starting gunicorn twice on shared cores
def test_a04_rate_limit_holds_across_two_workers_with_redis(production: Production) -> None:
    client = production.redis
    if client is None:
        if os.environ.get("QASID_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis required but not reachable at {REDIS_URL}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    server, signer = production.server, production.signer
    address, other = _own_loopback_address(), _own_loopback_address()
    workers = server.worker_pids()

    def post(n: int, source: str = address) -> int:
        body = body_of([make_event("delivered", f"r{n}@example.org")])
        headers = signer.headers(body, int(time.time()))
        return server.request("POST", "/webhooks/sendgrid", body, headers, source).status

    def limited_by() -> set[int]:
        return {
            pid
            for pid, status, _, path in server.access_lines()
            if status == 429 and path == "/webhooks/sendgrid"
        }

    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 20
        with ThreadPoolExecutor(4) as pool:
            while time.monotonic() < deadline:
                statuses += pool.map(post, range(len(statuses), len(statuses) + 8))
                if len(statuses) >= 3 * LIMIT and limited_by() == workers:
                    break
        elsewhere = post(-1, other)
    finally:
        removed = _delete_keys(client, address) + _delete_keys(client, other)
    counts = Counter(statuses)
    assert counts[200] == LIMIT, counts  # five in total, not five per worker
    assert counts[429] == len(statuses) - LIMIT, counts
    assert limited_by() == workers  # each worker refused once the shared count was reached
    assert elsewhere == 200  # another client address has its own allowance
    assert removed >= 2  # this run's counters were in Redis, and are gone


# -- no link token in the access log ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)  # starting gunicorn twice on shared cores
def test_the_access_log_holds_no_link_token(production: Production) -> None:
    server = production.server
    token = "eyJzIjoxfQ.Zx9-k_Q.S3cr3t-Sig_nature"
    referer = {"Referer": f"http://127.0.0.1/manage/{token}/preferences"}
    for method, path in [
        ("GET", f"/unsubscribe/{token}"),
        ("POST", f"/unsubscribe/{token}"),  # a mail provider's one-click
        ("GET", f"/confirm/{token}?token={token}"),
        ("GET", f"/editions/1/{token}"),
    ]:
        assert server.request(method, path, headers=referer).status in (400, 404), path
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:  # each worker writes its own lines
        text = server.access_log.read_text(encoding="utf-8")
        text = text[: text.rfind("\n") + 1]  # whole lines: a worker may be mid-line
        if sum("[token]" in line for line in text.splitlines()) >= 4:
            break
        time.sleep(0.1)
    lines = [line for line in text.splitlines() if "[token]" in line]
    assert len(lines) == 4, text[-2000:]
    assert token not in text
    assert any('"POST /unsubscribe/[token] HTTP/1.1"' in line for line in lines)
    assert all('"http://127.0.0.1/manage/[token]/preferences"' in line for line in lines), lines
