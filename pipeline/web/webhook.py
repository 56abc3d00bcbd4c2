"""POST /webhooks/sendgrid: SendGrid's signed Event Webhook.

The contract, in the order the checks run:

- No CSRF (SendGrid holds no session), and a generous per-address rate limit
  (``[sendgrid] webhook_rate_limit``); SendGrid retries a 429 like any non-2xx.
- 503 when ``[sendgrid] webhook_public_key`` is not set: qasid cannot tell SendGrid from
  anyone else, so it applies nothing, and SendGrid keeps retrying for 24 hours, so events
  are not lost while the key is being configured. Logged as an error on every request.
- 413 when the body is over ``[sendgrid] webhook_max_bytes``, before any verification or
  parsing (by Content-Length, or while reading a chunked body).
- 403 when the signature or its timestamp does not hold: missing or malformed headers, a
  body altered on the way (a proxy that re-serialises the JSON included), a wrong key, or a
  timestamp more than ``webhook_max_age`` seconds away ("stale signature"). Nothing is
  applied and the reason is logged. Never a 500 for any of these.
- 200 for a verified body: its events are applied once each (a repeat changes nothing), or,
  when it is not a batch of events at all, the body is quarantined, so that SendGrid does
  not retry something qasid will never read. The JSON answer counts what happened.
- 503 when the database fails while recording: nothing was kept, SendGrid retries.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from pipeline import events
from pipeline.adapters.event_store import EventStore
from pipeline.core.errors import StorageError
from pipeline.web.context import core
from pipeline.web.security import csrf, limiter

log = logging.getLogger(__name__)

blueprint = Blueprint("webhook", __name__)


def _rate_limit() -> str:
    return core().settings.sendgrid.webhook_rate_limit


def _answer(status: int, **body: object) -> ResponseReturnValue:
    response = jsonify(ok=200 <= status < 300, **body)
    response.headers["Cache-Control"] = "no-store"
    return response, status


@blueprint.post("/webhooks/sendgrid")
@limiter.limit(_rate_limit)
@csrf.exempt
def sendgrid_events() -> ResponseReturnValue:
    app = core()
    settings = app.settings.sendgrid
    client = request.remote_addr or "-"
    if not settings.webhook_public_key:
        log.error(
            "SendGrid webhook from %s refused: sendgrid.webhook_public_key is not set, so "
            "events cannot be verified (SendGrid will retry them for 24 h)",
            client,
        )
        return _answer(503, error="webhook verification key not configured")

    cap = settings.webhook_max_bytes
    if request.content_length is not None and request.content_length > cap:
        log.warning(
            "SendGrid webhook from %s refused: body of %d bytes is over the %d-byte limit",
            client,
            request.content_length,
            cap,
        )
        return _answer(413, error="body too large")
    request.max_content_length = cap  # a chunked body is cut off while being read
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        log.warning("SendGrid webhook from %s refused: chunked body over %d bytes", client, cap)
        return _answer(413, error="body too large")

    try:
        events.verify_signature(
            body,
            request.headers.get(events.SIGNATURE_HEADER),
            request.headers.get(events.TIMESTAMP_HEADER),
            public_key=settings.webhook_public_key,
            now=app.clock().timestamp(),
            max_age=settings.webhook_max_age,
        )
    except events.SignatureError as error:
        log.warning(
            "SendGrid webhook from %s refused (403): %s (%d bytes)", client, error, len(body)
        )
        return _answer(403, error=error.reason)

    try:
        report = events.apply_batch(EventStore(app.store), body, app.clock())
    except StorageError as error:
        log.error("SendGrid webhook: batch not recorded, SendGrid will retry: %s", error)
        return _answer(503, error="could not record the events; retry later")
    if report.quarantined and not report.received:
        log.warning("SendGrid webhook: signed body quarantined unread (%d bytes)", len(body))
    log.info("SendGrid webhook: %s", report.line())
    return _answer(200, **report.as_dict())


def register(flask: Flask) -> None:
    flask.register_blueprint(blueprint)
