"""Signing SendGrid events in tests, and proof that it signs as SendGrid does.

``Signer`` makes a fresh ECDSA P-256 key pair (RELIABILITY.md W: keys are generated per
test run) and signs ``timestamp + body`` with ECDSA-SHA256, base64 signature, which is what
``sendgrid.helpers.eventwebhook.EventWebhook.verify_signature`` checks. The other webhook
test modules import it from here.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Sequence
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook

from pipeline import events

_sequence = itertools.count(1)


class Signer:
    """A key pair standing in for SendGrid's; ``public_key`` as SendGrid shows it."""

    def __init__(self, curve: ec.EllipticCurve | None = None) -> None:
        self.private_key = ec.generate_private_key(curve or ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode("ascii")

    def sign(self, body: bytes, timestamp: int | str) -> str:
        signed = str(timestamp).encode("ascii") + body
        return base64.b64encode(self.private_key.sign(signed, ec.ECDSA(hashes.SHA256()))).decode()

    def headers(self, body: bytes, timestamp: int | str) -> dict[str, str]:
        return {
            events.SIGNATURE_HEADER: self.sign(body, timestamp),
            events.TIMESTAMP_HEADER: str(timestamp),
            "Content-Type": "application/json",
        }


def make_event(
    kind: str,
    email: str,
    *,
    delivery_id: int | None = None,
    timestamp: int = 1_795_000_000,
    **extra: Any,
) -> dict[str, Any]:
    """One event as SendGrid posts it: custom args (delivery_id) at the top level."""
    number = next(_sequence)
    event: dict[str, Any] = {
        "email": email,
        "timestamp": timestamp,
        "smtp-id": f"<{number}@qasid.test>",
        "event": kind,
        "category": ["digest"],
        "sg_event_id": base64.urlsafe_b64encode(f"event-{number}".encode()).decode(),
        "sg_message_id": f"msg{number:06d}.filter0001.16648.5515E0B88.0",
    }
    if delivery_id is not None:
        event["delivery_id"] = str(delivery_id)
    event.update(extra)
    return event


def body_of(batch: Sequence[Any]) -> bytes:
    """Compact JSON, as SendGrid sends it; the bytes that get signed."""
    return json.dumps(list(batch), separators=(",", ":")).encode()


def test_signer_signs_what_the_sendgrid_helper_verifies() -> None:
    signer = Signer()
    body = body_of([make_event("delivered", "reader@example.org")])
    signature = signer.sign(body, 1_795_000_000)
    helper = EventWebhook(signer.public_key)
    assert helper.verify_signature(body.decode(), signature, "1795000000") is True
    assert helper.verify_signature(body.decode() + " ", signature, "1795000000") is False


def test_the_helper_raises_on_a_malformed_signature_so_it_must_be_caught() -> None:
    # RELIABILITY.md fact 7: verify_signature raises instead of returning False.
    helper = EventWebhook(Signer().public_key)
    with pytest.raises((ValueError, TypeError)):
        helper.verify_signature("[]", "abc", "1795000000")  # bad base64 padding
    with pytest.raises(TypeError):
        helper.verify_signature("[]", None, "1795000000")


def test_verify_signature_accepts_the_signers_format_with_the_time_window() -> None:
    signer = Signer()
    body = body_of([make_event("processed", "reader@example.org")])
    signed = events.verify_signature(
        body,
        signer.sign(body, 1_795_000_000),
        "1795000000",
        public_key=signer.public_key,
        now=1_795_000_100,
        max_age=300,
    )
    assert signed == 1_795_000_000


def test_a_body_that_is_not_utf8_is_still_verified_over_its_bytes() -> None:
    signer = Signer()
    body = b"\xff\xfe not text"
    events.verify_signature(
        body,
        signer.sign(body, 100),
        "100",
        public_key=signer.public_key,
        now=100,
        max_age=300,
    )
    with pytest.raises(events.SignatureError, match="bad signature"):
        events.verify_signature(
            body + b"!",
            signer.sign(body, 100),
            "100",
            public_key=signer.public_key,
            now=100,
            max_age=300,
        )
