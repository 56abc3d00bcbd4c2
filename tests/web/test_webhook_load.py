"""L-03: 200 signed webhook POSTs × 100 events, 4 concurrent clients, against the
production server (gunicorn, 2 workers) on 127.0.0.1 with a SQLite database.

Half of the posts are SendGrid's retries of the other half: the same events with new
``sg_event_id`` values, in another order. Every post must get a 2xx, every event must be
applied exactly once, and the 95th percentile latency must stay under 200 ms.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from pipeline.adapters.schema import delivery, subscriber, suppression, webhook_event
from pipeline.adapters.storage import Store
from tests.web.test_gunicorn import Response, gunicorn_server
from tests.web.test_webhook_signing import Signer, body_of, make_event

POSTS = 100  # distinct batches; each is also retried once: 200 posts in all
EVENTS_PER_POST = 100
READERS = 500
CLIENTS = 4
# Each reader gets these 20 events, mixed within and spread over the batches (types qasid
# ignores included).
TYPES = (
    "processed",
    "delivered",
    "open",
    "click",
    "deferred",
    "open",
    "click",
    "machine_opened",
    "open",
    "group_resubscribe",
    "click",
    "open",
    "deferred",
    "click",
    "open",
    "dropped",
    "bounce",
    "unsubscribe",
    "click",
    "spamreport",
)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _seed(url: str) -> None:
    """READERS active readers, each with one delivery whose outcome is unknown."""
    store = Store(url)
    try:
        with store.engine.begin() as conn:
            conn.execute(
                insert(subscriber),
                [
                    {
                        "id": n + 1,
                        "email": f"reader{n}@example.org",
                        "status": "active",
                        "themes": ["sanctions"],
                        "created_at": NOW,
                        "updated_at": NOW,
                        "confirmed_at": NOW,
                    }
                    for n in range(READERS)
                ],
            )
            conn.execute(
                insert(delivery),
                [
                    {
                        "id": n + 1,
                        "subscriber_id": n + 1,
                        "channel": "confirm",
                        "status": "unknown",
                        "attempts": 1,
                        "not_before": NOW,
                        "claimed_by": "load",
                        "claimed_at": NOW,
                        "created_at": NOW,
                    }
                    for n in range(READERS)
                ],
            )
    finally:
        store.close()


def _batches() -> list[list[dict[str, Any]]]:
    batches = []
    for post in range(POSTS):
        batch = []
        for j in range(EVENTS_PER_POST):
            k = post * EVENTS_PER_POST + j
            reader = k % READERS
            kind = TYPES[(k // READERS + k) % len(TYPES)]  # every type once per reader
            extra: dict[str, Any] = {"type": "bounce"} if kind == "bounce" else {}
            if kind == "dropped":
                extra["reason"] = "Invalid SMTPAPI header"
            if kind == "click":
                extra["url"] = f"https://example.org/story/{k}"
            batch.append(
                make_event(
                    kind,
                    f"Reader{reader}@example.org",
                    delivery_id=reader + 1,
                    timestamp=1_795_000_000 + k,
                    **extra,
                )
            )
        batches.append(batch)
    return batches


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_l03_200_signed_posts_of_100_events_apply_every_event_once(tmp_path: Path) -> None:
    assert len(TYPES) * READERS == POSTS * EVENTS_PER_POST
    signer = Signer()
    env = {"QASID_SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_key}
    originals = _batches()
    retries = [
        [dict(event, sg_event_id=f"retry-{event['sg_event_id']}") for event in reversed(batch)]
        for batch in originals
    ]
    bodies = [body_of(batch) for batch in originals + retries]
    random.Random(3).shuffle(bodies)

    with gunicorn_server(tmp_path, env) as server:
        _seed(server.database_url())

        # Signed up front (the signatures stay fresh for 5 minutes), so the clients spend
        # no CPU on signing while latencies are measured.
        signed = [(body, signer.headers(body, int(time.time()))) for body in bodies]

        def post(request: tuple[bytes, dict[str, str]]) -> Response:
            body, headers = request
            return server.request("POST", "/webhooks/sendgrid", body, headers, timeout=30)

        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(post, signed))
        elapsed = time.perf_counter() - started

    assert [a.status for a in answers if a.status != 200] == []
    reports = [a.json() for a in answers]
    assert sum(r["received"] for r in reports) == 2 * POSTS * EVENTS_PER_POST
    assert sum(r["applied"] for r in reports) == POSTS * EVENTS_PER_POST
    assert sum(r["duplicates"] for r in reports) == POSTS * EVENTS_PER_POST
    store = Store(server.database_url())
    try:
        with store.engine.connect() as conn:

            def scalar(query: Any) -> Any:
                return conn.execute(query).scalar_one()

            assert scalar(select(func.count()).select_from(webhook_event)) == POSTS * 100
            assert scalar(select(func.count()).select_from(suppression)) == READERS
            statuses: dict[str, int] = dict(
                conn.execute(
                    select(subscriber.c.status, func.count()).group_by(subscriber.c.status)
                ).all()
            )
            assert statuses == {"complained": READERS}  # a complaint wins in any order
            outcomes = set(conn.execute(select(delivery.c.status).distinct()).scalars())
            assert outcomes <= {"sent", "failed"}  # no unknown left
    finally:
        store.close()
    latencies = sorted(a.seconds for a in answers)
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(  # the figures, for BENCHMARKS.md
        f"L-03: {len(answers)} posts in {elapsed:.1f} s; median "
        f"{statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )
    # The 200 ms p95 target is a speed target, measured on a quiet machine and recorded in
    # BENCHMARKS.md (this test run alone with -s prints the figures). In the suite the two
    # cores are shared with other tests, so here the bound is a tenfold guard.
    load = os.getloadavg()[0]
    assert p95 < 2.0, f"p95 latency {p95 * 1000:.0f} ms (load {load:.1f}, {os.cpu_count()} cores)"
    assert elapsed < 120
