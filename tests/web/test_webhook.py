"""POST /webhooks/sendgrid: RELIABILITY.md W-01..W-07 through Flask's test client.

Each test makes its own key pair; the public key goes into settings as base64 DER, as
SendGrid shows it. The app's clock is fixed, so "now" for the signature window is too.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Blueprint, Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from pipeline import events
from pipeline.adapters.delivery_store import DeliveryStatus, DeliveryStore
from pipeline.adapters.event_store import EventStore
from pipeline.adapters.schema import consent, delivery, suppression, webhook_event
from pipeline.adapters.subscriber_store import SubscriberStore
from pipeline.bootstrap import App, build_app
from pipeline.core.errors import ConfigError
from pipeline.core.subscribers import Frequency, SubscriberStatus
from pipeline.settings import SendGridSettings, load_settings
from pipeline.web import create_app
from tests.support.app import FakeClock, settings_for_tests
from tests.web.test_webhook_signing import Signer, body_of, make_event

URL = "/webhooks/sendgrid"


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _core(url: str, tmp_path: Path, clock: FakeClock, **sendgrid: Any) -> App:
    settings = settings_for_tests(url, tmp_path)
    settings = settings.model_copy(update={"sendgrid": SendGridSettings(**sendgrid)})
    app = build_app(settings, clock=clock)
    app.store.upgrade()
    return app


@pytest.fixture
def hook_core(sqlite_url: str, tmp_path: Path, clock: FakeClock, signer: Signer) -> Iterator[App]:
    app = _core(sqlite_url, tmp_path, clock, webhook_public_key=signer.public_key)
    yield app
    app.close()


@pytest.fixture
def hook_app(hook_core: App) -> Flask:
    flask = create_app(core=hook_core)
    flask.config.update(TESTING=True)  # CSRF stays on: WTF_CSRF_ENABLED is not touched
    return flask


@pytest.fixture
def hook(hook_app: Flask) -> FlaskClient:
    return hook_app.test_client()


def now_of(app: App) -> int:
    return int(app.clock().timestamp())


def post_signed(client: FlaskClient, signer: Signer, body: bytes, timestamp: int) -> Any:
    return client.post(URL, data=body, headers=signer.headers(body, timestamp))


def add_reader(app: App, email: str, status: SubscriberStatus = SubscriberStatus.ACTIVE) -> int:
    reader, _ = SubscriberStore(app.store).add(
        email,
        themes=["sanctions"],
        frequency=Frequency.DAILY,
        hour=7,
        timezone="UTC",
        status=status,
        now=app.clock(),
    )
    return reader.id


def unknown_delivery(app: App, subscriber_id: int, *, leave: str = DeliveryStatus.UNKNOWN) -> int:
    """A confirmation delivery left in ``leave`` (unknown, sending or sent)."""
    ledger = DeliveryStore(app.store)
    row_id = ledger.queue_confirmation(subscriber_id, app.clock())
    claimed = ledger.claim(app.clock(), "test-worker", 100)
    assert [r.id for r in claimed] == [row_id]
    if leave == DeliveryStatus.UNKNOWN:
        ledger.mark_unknown(row_id, "test-worker", "timeout after the request was sent")
    elif leave == DeliveryStatus.SENT:
        ledger.mark_sent(row_id, "test-worker", "earlier", app.clock())
    return row_id


def status_of(app: App, email: str) -> SubscriberStatus:
    found = SubscriberStore(app.store).get(email)
    assert found is not None
    return found.status


def delivery_row(app: App, delivery_id: int) -> Any:
    with app.store.engine.connect() as conn:
        return conn.execute(select(delivery).where(delivery.c.id == delivery_id)).one()


def count(app: App, table: Any) -> int:
    with app.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def suppressed(app: App, email: str) -> str | None:
    return EventStore(app.store).suppression_reason(events.email_hash(email))


# -- W-01: a valid signed batch ------------------------------------------------------------


def test_w01_valid_batch_is_stored_and_bounce_and_spamreport_suppress(
    hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    app = hook_core
    for email in ("bounce@example.org", "spam@example.org", "fine@example.org"):
        add_reader(app, email)
    batch = [
        make_event("bounce", "bounce@example.org", type="bounce", reason="550 5.1.1 no user"),
        make_event("spamreport", "spam@example.org"),
        make_event("delivered", "fine@example.org", response="250 OK"),
        make_event("deferred", "fine@example.org", response="421 try later", attempt="1"),
        make_event("machine_opened", "fine@example.org"),  # a type qasid does not know
    ]
    response = post_signed(hook, signer, body_of(batch), now_of(app))

    assert response.status_code == 200
    assert response.get_json() == {
        "ok": True,
        "received": 5,
        "applied": 5,
        "duplicates": 0,
        "quarantined": 0,
        "subscribers": 2,
        "suppressions": 2,
        "deliveries": 0,
    }
    stored = {row.event_type: row for row in EventStore(app.store).events()}
    assert set(stored) == {"bounce", "spamreport", "delivered", "deferred", "machine_opened"}
    # the raw events are kept, the unknown type included
    assert [stored[event["event"]].payload for event in batch] == batch
    assert stored["bounce"].email_hash == events.email_hash("bounce@example.org")
    assert status_of(app, "bounce@example.org") is SubscriberStatus.BOUNCED
    assert status_of(app, "spam@example.org") is SubscriberStatus.COMPLAINED
    assert status_of(app, "fine@example.org") is SubscriberStatus.ACTIVE
    assert suppressed(app, "bounce@example.org") == "bounced"
    assert suppressed(app, "spam@example.org") == "complained"
    assert suppressed(app, "fine@example.org") is None


def test_unsubscribe_events_unsubscribe_with_a_consent_row_and_addresses_match_any_case(
    hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    app = hook_core
    first = add_reader(app, "Mixed.Case@example.org")
    add_reader(app, "group@example.org")
    batch = [
        make_event("unsubscribe", "mixed.case@EXAMPLE.org"),
        make_event("group_unsubscribe", "group@example.org", asm_group_id=42),
    ]
    assert post_signed(hook, signer, body_of(batch), now_of(app)).status_code == 200
    assert status_of(app, "Mixed.Case@example.org") is SubscriberStatus.UNSUBSCRIBED
    assert status_of(app, "group@example.org") is SubscriberStatus.UNSUBSCRIBED
    assert suppressed(app, "MIXED.CASE@example.org") == "unsubscribed"
    with app.store.engine.connect() as conn:
        rows = conn.execute(select(consent).where(consent.c.subscriber_id == first)).all()
    assert [(r.action, r.source) for r in rows] == [("unsubscribe", "sendgrid")]


def test_a_milder_status_never_overwrites_a_complaint_but_a_complaint_wins(
    hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    app = hook_core
    add_reader(app, "a@example.org", SubscriberStatus.COMPLAINED)
    add_reader(app, "b@example.org", SubscriberStatus.UNSUBSCRIBED)
    add_reader(app, "c@example.org", SubscriberStatus.PENDING)
    batch = [
        make_event("bounce", "a@example.org", type="bounce"),
        make_event("spamreport", "b@example.org"),
        make_event("bounce", "c@example.org", type="bounce"),  # the confirmation bounced
    ]
    assert post_signed(hook, signer, body_of(batch), now_of(app)).status_code == 200
    assert status_of(app, "a@example.org") is SubscriberStatus.COMPLAINED
    assert status_of(app, "b@example.org") is SubscriberStatus.COMPLAINED
    assert status_of(app, "c@example.org") is SubscriberStatus.BOUNCED


def test_blocked_bounce_and_unrelated_drops_do_not_suppress_the_address(
    hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    app = hook_core
    add_reader(app, "blocked@example.org")
    add_reader(app, "quota@example.org")
    add_reader(app, "gone@example.org")
    batch = [
        make_event("bounce", "blocked@example.org", type="blocked", reason="IP on a blocklist"),
        make_event("dropped", "quota@example.org", reason="Recipient List over Package Quota"),
        make_event("dropped", "gone@example.org", reason="Bounced Address"),
    ]
    assert post_signed(hook, signer, body_of(batch), now_of(app)).status_code == 200
    assert status_of(app, "blocked@example.org") is SubscriberStatus.ACTIVE
    assert status_of(app, "quota@example.org") is SubscriberStatus.ACTIVE
    assert status_of(app, "gone@example.org") is SubscriberStatus.BOUNCED
    assert suppressed(app, "blocked@example.org") is None
    assert suppressed(app, "gone@example.org") == "bounced"


# -- W-02: not from SendGrid ---------------------------------------------------------------


def _forgeries(signer: Signer, body: bytes, ts: int) -> dict[str, tuple[bytes, dict[str, str]]]:
    good = signer.headers(body, ts)
    proxied = json.dumps(json.loads(body), indent=2).encode()  # same JSON, other bytes
    missing_signature = {k: v for k, v in good.items() if k != events.SIGNATURE_HEADER}
    missing_timestamp = {k: v for k, v in good.items() if k != events.TIMESTAMP_HEADER}
    return {
        "tampered body": (body.replace(b"bounce", b"bounci", 1), good),
        "wrong key": (body, Signer().headers(body, ts)),
        "non-base64 signature": (body, good | {events.SIGNATURE_HEADER: "not*base64!"}),
        "bad base64 padding": (body, good | {events.SIGNATURE_HEADER: "abc"}),
        "base64 but not a signature": (body, good | {events.SIGNATURE_HEADER: "AAAA"}),
        "missing signature header": (body, missing_signature),
        "empty signature header": (body, good | {events.SIGNATURE_HEADER: ""}),
        "missing timestamp": (body, missing_timestamp),
        "timestamp not a number": (body, good | {events.TIMESTAMP_HEADER: "12:00"}),
        "timestamp of another signature": (body, good | {events.TIMESTAMP_HEADER: str(ts + 1)}),
        "body re-serialised by a proxy": (proxied, good),
    }


FORGERY_REASONS = {
    "tampered body": "bad signature",
    "wrong key": "bad signature",
    "non-base64 signature": "malformed signature",
    "bad base64 padding": "malformed signature",
    "base64 but not a signature": "bad signature",
    "missing signature header": "missing signature",
    "empty signature header": "missing signature",
    "missing timestamp": "missing timestamp",
    "timestamp not a number": "bad timestamp",
    "timestamp of another signature": "bad signature",
    "body re-serialised by a proxy": "bad signature",
}


@pytest.mark.parametrize("forgery", sorted(FORGERY_REASONS))
def test_w02_unverifiable_requests_get_403_change_nothing_and_log_why(
    forgery: str,
    hook: FlaskClient,
    hook_core: App,
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = hook_core
    add_reader(app, "victim@example.org")
    row = unknown_delivery(app, add_reader(app, "other@example.org"))
    body = body_of(
        [
            make_event("bounce", "victim@example.org", type="bounce"),
            make_event("delivered", "other@example.org", delivery_id=row),
        ]
    )
    sent_body, headers = _forgeries(signer, body, now_of(app))[forgery]
    with caplog.at_level(logging.WARNING, logger="pipeline.web.webhook"):
        response = hook.post(URL, data=sent_body, headers=headers)

    assert response.status_code == 403
    assert response.get_json() == {"ok": False, "error": FORGERY_REASONS[forgery]}
    assert count(app, webhook_event) == 0
    assert count(app, suppression) == 0
    assert status_of(app, "victim@example.org") is SubscriberStatus.ACTIVE
    assert delivery_row(app, row).status == DeliveryStatus.UNKNOWN
    assert any(FORGERY_REASONS[forgery] in r.getMessage() for r in caplog.records)


# -- W-03: stale signatures ----------------------------------------------------------------


@pytest.mark.parametrize("offset", [-600, 600, -301, 301])
def test_w03_a_genuine_signature_outside_the_window_is_stale(
    offset: int, hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    app = hook_core
    add_reader(app, "late@example.org")
    body = body_of([make_event("bounce", "late@example.org", type="bounce")])
    response = post_signed(hook, signer, body, now_of(hook_core) + offset)
    assert response.status_code == 403
    assert response.get_json()["error"] == "stale signature"
    assert count(app, webhook_event) == 0
    assert status_of(app, "late@example.org") is SubscriberStatus.ACTIVE


@pytest.mark.parametrize("offset", [-300, 300, -5])
def test_w03_a_signature_inside_the_window_is_accepted(
    offset: int, hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    body = body_of([make_event("delivered", "x@example.org")])
    assert post_signed(hook, signer, body, now_of(hook_core) + offset).status_code == 200


# -- W-04: once per event ------------------------------------------------------------------


def test_w04_exact_replay_and_a_repeat_with_a_new_sg_event_id_apply_once(
    hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    app = hook_core
    add_reader(app, "leaver@example.org")
    row = unknown_delivery(app, add_reader(app, "maybe@example.org"))
    batch = [
        make_event("unsubscribe", "leaver@example.org"),
        make_event("processed", "maybe@example.org", delivery_id=row),
        make_event("spamreport", "maybe@example.org"),
    ]
    body = body_of(batch)
    headers = signer.headers(body, now_of(app))
    first = hook.post(URL, data=body, headers=headers).get_json()
    replay = hook.post(URL, data=body, headers=headers)  # the same request again
    retried = [dict(e, sg_event_id=e["sg_event_id"] + "-retry") for e in reversed(batch)]
    retry = post_signed(hook, signer, body_of(retried), now_of(app) + 60)

    assert (first["applied"], first["duplicates"]) == (3, 0)
    assert replay.status_code == 200 and retry.status_code == 200
    assert (replay.get_json()["applied"], replay.get_json()["duplicates"]) == (0, 3)
    assert (retry.get_json()["applied"], retry.get_json()["duplicates"]) == (0, 3)
    assert count(app, webhook_event) == 3
    assert count(app, suppression) == 2
    assert count(app, consent) == 1  # one unsubscribe recorded, not three
    assert delivery_row(app, row).status == DeliveryStatus.SENT


def test_w04_duplicates_inside_one_batch_apply_once(
    hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    event = make_event("bounce", "twice@example.org", type="bounce")
    twin = dict(event, sg_event_id="another-id")
    response = post_signed(hook, signer, body_of([event, twin, event]), now_of(hook_core))
    assert (response.get_json()["applied"], response.get_json()["duplicates"]) == (1, 2)
    assert count(hook_core, webhook_event) == 1


def test_the_event_key_ignores_sg_event_id_but_not_what_happened() -> None:
    event = make_event("click", "r@example.org", url="https://example.org/a", delivery_id=7)
    assert events.event_key(event) == events.event_key(dict(event, sg_event_id="other"))
    assert events.event_key(event) == events.event_key(dict(event, email="R@Example.org"))
    assert events.event_key(event) == events.event_key(dict(event, delivery_id=7))  # int or str
    for change in (
        {"event": "open"},
        {"email": "s@example.org"},
        {"timestamp": event["timestamp"] + 1},
        {"url": "https://example.org/b"},
        {"sg_message_id": "other.filter"},
        {"delivery_id": "8"},
    ):
        assert events.event_key(event) != events.event_key(dict(event, **change)), change


# -- W-05: size cap and unreadable bodies --------------------------------------------------


def test_w05_a_20_mb_body_gets_413_before_any_verification(
    hook: FlaskClient, hook_core: App, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_verify(*args: Any, **kwargs: Any) -> int:
        raise AssertionError("verification ran on an oversized body")

    monkeypatch.setattr(events, "verify_signature", must_not_verify)
    body = b"[" + b" " * (20 * 1024 * 1024) + b"]"
    headers = signer.headers(b"[]", now_of(hook_core))  # the body is never read
    response = hook.post(URL, data=body, headers=headers)
    assert response.status_code == 413
    assert response.get_json() == {"ok": False, "error": "body too large"}
    assert count(hook_core, webhook_event) == 0


def test_w05_a_chunked_body_over_the_cap_is_cut_off_while_read(
    hook: FlaskClient, hook_core: App, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "verify_signature", None)  # would fail loudly if reached
    size = hook_core.settings.sendgrid.webhook_max_bytes + 1
    response = hook.post(
        URL,
        input_stream=io.BytesIO(b"x" * size),
        headers=signer.headers(b"[]", now_of(hook_core)),
        environ_overrides={"wsgi.input_terminated": True},  # no Content-Length
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [b"this is not json{", b"\xff\xfe\x00binary", b'{"event": "bounce"}', b"[1, 2", b"[NaN]"],
    ids=["text", "not-utf8", "object-not-list", "truncated", "nan"],
)
def test_w05_a_signed_unreadable_body_is_accepted_and_quarantined(
    body: bytes, hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    response = post_signed(hook, signer, body, now_of(hook_core))
    assert response.status_code == 200  # so SendGrid does not retry it for 24 h
    assert response.get_json()["quarantined"] == 1
    assert count(hook_core, webhook_event) == 0
    [kept] = EventStore(hook_core.store).quarantined()
    assert kept.body == body.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    assert kept.reason.startswith("not ")


def test_w05_elements_that_are_not_events_are_quarantined_and_the_rest_applied(
    hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    add_reader(hook_core, "real@example.org")
    body = body_of(
        [
            "a string",
            {"email": "x@example.org"},  # no event type
            make_event("bounce", "real@example.org", type="bounce"),
        ]
    )
    response = post_signed(hook, signer, body, now_of(hook_core)).get_json()
    assert (response["received"], response["applied"], response["quarantined"]) == (1, 1, 2)
    assert status_of(hook_core, "real@example.org") is SubscriberStatus.BOUNCED
    reasons = [row.reason for row in EventStore(hook_core.store).quarantined()]
    assert reasons == [
        "element 0: not an event object with an event type",
        "element 1: not an event object with an event type",
    ]


def test_an_empty_batch_is_fine(hook: FlaskClient, hook_core: App, signer: Signer) -> None:
    response = post_signed(hook, signer, b"[]", now_of(hook_core))
    assert response.status_code == 200 and response.get_json()["received"] == 0


# -- W-06: CSRF is on everywhere else ------------------------------------------------------


def test_w06_webhook_accepted_while_another_post_without_a_token_gets_400(
    hook_core: App, signer: Signer
) -> None:
    flask = create_app(core=hook_core)
    assert flask.config.get("WTF_CSRF_ENABLED", True) is True
    probe = Blueprint("csrf_probe", __name__)

    @probe.post("/csrf-probe")
    def csrf_probe() -> str:  # a state-changing form route, test-only
        return "changed"

    flask.register_blueprint(probe)
    client = flask.test_client()
    body = body_of([make_event("delivered", "x@example.org")])

    refused = client.post("/csrf-probe", data={"field": "value"})
    accepted = post_signed(client, signer, body, now_of(hook_core))

    assert refused.status_code == 400
    assert b"This form has expired" in refused.data
    assert accepted.status_code == 200


# -- W-07: the ledger learns what happened to unknown sends ---------------------------------


def test_w07_events_settle_unknown_deliveries(
    hook: FlaskClient, hook_core: App, signer: Signer
) -> None:
    app = hook_core
    processed = unknown_delivery(app, add_reader(app, "p@example.org"))
    delivered = unknown_delivery(app, add_reader(app, "d@example.org"))
    dropped = unknown_delivery(app, add_reader(app, "x@example.org"))
    bounced = unknown_delivery(app, add_reader(app, "b@example.org"))
    sending = unknown_delivery(app, add_reader(app, "s@example.org"), leave="sending")
    sent = unknown_delivery(app, add_reader(app, "ok@example.org"), leave="sent")
    foreign = unknown_delivery(app, add_reader(app, "f@example.org"))
    batch = [
        make_event("processed", "p@example.org", delivery_id=processed),
        make_event("delivered", "D@example.org", delivery_id=delivered),
        make_event("dropped", "x@example.org", delivery_id=dropped, reason="Invalid SMTPAPI"),
        make_event("bounce", "b@example.org", delivery_id=bounced, type="bounce", reason="550"),
        make_event("delivered", "s@example.org", delivery_id=sending),
        make_event("bounce", "ok@example.org", delivery_id=sent, type="bounce"),
        # another app on the same SendGrid account, reusing a delivery_id of ours:
        make_event("dropped", "someone@else.example", delivery_id=foreign, reason="Invalid"),
        make_event("deferred", "f@example.org", delivery_id=foreign),
    ]
    response = post_signed(hook, signer, body_of(batch), now_of(app))
    assert response.get_json()["deliveries"] == 5

    def row(delivery_id: int) -> Any:
        return delivery_row(app, delivery_id)

    assert row(processed).status == DeliveryStatus.SENT
    assert row(processed).provider_message_id == batch[0]["sg_message_id"].split(".")[0]
    assert row(processed).sent_at is not None
    assert row(delivered).status == DeliveryStatus.SENT
    assert (row(dropped).status, row(dropped).last_error) == ("failed", "dropped: Invalid SMTPAPI")
    assert (row(bounced).status, row(bounced).last_error) == ("failed", "bounce: 550")
    assert row(sending).status == DeliveryStatus.SENT
    assert row(sent).status == DeliveryStatus.SENT  # a later bounce does not rewrite history
    assert row(foreign).status == DeliveryStatus.UNKNOWN
    assert {e.delivery_id for e in EventStore(app.store).events()} >= {processed, foreign}


def test_delivery_ids_that_cannot_be_ours_are_ignored() -> None:
    for value, expected in (
        ("12", 12),
        (12, 12),
        (" 12 ", 12),
        ("0", None),
        ("-3", None),
        ("1e3", None),
        ("99999999999", None),
        (None, None),
    ):
        event = make_event("processed", "a@example.org", delivery_id=None)
        if value is not None:
            event["delivery_id"] = value
        [parsed] = events.parse_batch(body_of([event])).events
        assert parsed.delivery_id == expected, value
    nested = make_event("processed", "a@example.org", custom_args={"delivery_id": "5"})
    assert events.parse_batch(body_of([nested])).events[0].delivery_id == 5


# -- configuration and the edges of the contract -------------------------------------------


def test_no_verification_key_means_503_nothing_applied_and_an_error_logged(
    sqlite_url: str, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = _core(sqlite_url, tmp_path, clock)
    try:
        client = create_app(core=app).test_client()
        signer = Signer()
        body = body_of([make_event("bounce", "a@example.org", type="bounce")])
        with caplog.at_level(logging.ERROR, logger="pipeline.web.webhook"):
            response = post_signed(client, signer, body, now_of(app))
        assert response.status_code == 503
        assert count(app, webhook_event) == 0
        assert any(
            "sendgrid.webhook_public_key is not set" in r.getMessage() for r in caplog.records
        )
    finally:
        app.close()


def test_only_post_is_served(hook: FlaskClient) -> None:
    assert hook.get(URL).status_code == 405


def test_the_rate_limit_is_per_client_and_configurable(
    sqlite_url: str, tmp_path: Path, clock: FakeClock, signer: Signer
) -> None:
    app = _core(
        sqlite_url,
        tmp_path,
        clock,
        webhook_public_key=signer.public_key,
        webhook_rate_limit="3/minute",
    )
    try:
        client = create_app(core=app).test_client()
        body = body_of([make_event("delivered", "a@example.org")])
        codes = [post_signed(client, signer, body, now_of(app)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        other = client.post(
            URL,
            data=body,
            headers=signer.headers(body, now_of(app)),
            environ_base={"REMOTE_ADDR": "127.0.0.9"},
        )
        assert other.status_code == 200
    finally:
        app.close()


def test_settings_take_the_key_as_sendgrid_shows_it_and_name_a_bad_one(tmp_path: Path) -> None:
    config = tmp_path / "qasid.toml"
    config.write_text("", encoding="utf-8")
    signer = Signer()
    pem = (
        signer.private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for given in (signer.public_key, f"  {signer.public_key}\n", pem):
        env = {"QASID_SENDGRID_WEBHOOK_PUBLIC_KEY": given}
        assert load_settings(config, environ=env).sendgrid.webhook_public_key == signer.public_key

    rsa_der = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    bad = {
        "not-a-key!": "is not base64",
        base64.b64encode(b"random bytes").decode(): "is not a public key",
        base64.b64encode(rsa_der).decode(): "must be an ECDSA P-256",
        Signer(ec.SECP384R1()).public_key: "must be an ECDSA P-256",
    }
    for value, message in bad.items():
        with pytest.raises(ConfigError) as caught:
            load_settings(config, environ={"QASID_SENDGRID_WEBHOOK_PUBLIC_KEY": value})
        assert caught.value.key == "sendgrid.webhook_public_key"
        assert message in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={"QASID_SENDGRID_WEBHOOK_RATE_LIMIT": "lots"})
    assert caught.value.key == "sendgrid.webhook_rate_limit"
    defaults = load_settings(config, environ={}).sendgrid
    assert (defaults.webhook_public_key, defaults.webhook_max_age) == ("", 300)
