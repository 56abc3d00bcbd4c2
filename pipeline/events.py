"""SendGrid Event Webhook: verify a signed batch, decide what each event means, apply it once.

Verification (RELIABILITY.md fact 7): ECDSA P-256 over ``timestamp + raw body``, checked
with the ``sendgrid`` package's ``EventWebhook``, which verifies only: it has no time
window, and it raises on a malformed signature. This module adds both: every failure is a
``SignatureError`` with a reason, and a timestamp further than ``max_age`` seconds from now,
either way, is a "stale signature".

Once per event (W-04). SendGrid retries for 24 hours and sends duplicates, and
``sg_event_id`` is not stable across retries (sendgrid-nodejs #1435). The key of an event
is therefore the SHA-256 of a canonical form of what happened: event type, address
(lower-cased), timestamp, sg_message_id, delivery_id, bounce type, reason, status, URL,
attempt and unsubscribe group; never ``sg_event_id``. The store inserts that key with a
unique constraint and applies the effects only when the insert happened.

What an event does (``decide``, pure):

- ``processed``, ``delivered``, ``open``, ``click``: the delivery named by its
  ``delivery_id`` custom arg, if ``unknown`` (or still ``sending``), is ``sent`` (W-07).
- ``bounce`` (type ``bounce``): the subscriber is ``bounced``, the address suppressed, the
  delivery ``failed``. Type ``blocked`` (a refusal that says nothing about the address, e.g.
  the sending IP is on a block list): only the delivery ``failed``.
- ``dropped``: the delivery ``failed``; the address is also suppressed when SendGrid's
  reason is about the address (Bounced Address, Spam Reporting Address, Unsubscribed
  Address, Invalid).
- ``spamreport``: ``complained`` and suppressed; ``unsubscribe`` and
  ``group_unsubscribe``: ``unsubscribed`` and suppressed (with a consent row). Both also
  prove the message was delivered.
- ``deferred``, ``group_resubscribe`` and types qasid does not know: stored, nothing else
  (W-01). qasid's own double opt-in is the only way back in.

A suppressed status is never overwritten by a milder one; ``complained`` wins over all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import QasidError
from pipeline.core.subscribers import SubscriberStatus

if TYPE_CHECKING:  # settings imports this module to check the key: keep it light
    from pipeline.adapters.event_store import EventStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

# The fields that say what happened; sg_event_id is left out on purpose (see above).
KEY_FIELDS = (
    "event",
    "email",
    "timestamp",
    "sg_message_id",
    "delivery_id",
    "type",
    "reason",
    "status",
    "url",
    "attempt",
    "asm_group_id",
)

SUPPRESSED = frozenset(s.value for s in SubscriberStatus if s.suppressed)

# dropped reasons that are about the address, lower-cased → what the address becomes
DROP_REASONS = {
    "bounced address": SubscriberStatus.BOUNCED,
    "spam reporting address": SubscriberStatus.COMPLAINED,
    "unsubscribed address": SubscriberStatus.UNSUBSCRIBED,
    "invalid": SubscriberStatus.BOUNCED,
}

SENT_EVIDENCE = frozenset({"processed", "delivered", "open", "click"})
MAX_DELIVERY_ID = 2**31 - 1  # an INTEGER column on PostgreSQL


class SignatureError(QasidError):
    """A webhook request is not provably from SendGrid, or not recent. ``reason`` says why
    in a few words (it is safe to show); ``detail`` adds what is only for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class BatchError(QasidError):
    """A signed body that is not a batch of events (not JSON, not a list)."""


# -- keys and signatures -----------------------------------------------------------------


def parse_public_key(value: str) -> str:
    """The verification key as bare base64 DER, or ValueError saying what is wrong.

    Accepts the key as SendGrid shows it, with or without PEM armour and line breaks.
    """
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    lines = [line.strip() for line in value.strip().splitlines()]
    bare = "".join(line for line in lines if line and not line.startswith("-----"))
    bare = re.sub(r"\s+", "", bare)
    try:
        der = base64.b64decode(bare, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "is not base64; paste the verification key SendGrid shows for the signed Event Webhook"
        ) from None
    try:
        key = load_der_public_key(der)
    except (ValueError, TypeError):
        raise ValueError("is not a public key (base64 of DER, as SendGrid shows it)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("must be an ECDSA P-256 public key, as SendGrid issues")
    return bare


@lru_cache(maxsize=4)
def _verifier(public_key: str) -> Any:
    from sendgrid.helpers.eventwebhook import EventWebhook

    return EventWebhook(public_key)


def verify_signature(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    public_key: str,
    now: float,
    max_age: int,
) -> int:
    """The signed timestamp of a genuine, recent request; SignatureError otherwise.

    ``body`` must be the raw bytes as received: a proxy that re-serialises the JSON breaks
    the signature, and that is a rejection too.
    """
    if not signature or not signature.strip():
        raise SignatureError("missing signature", f"no {SIGNATURE_HEADER} header")
    if not timestamp or not timestamp.strip():
        raise SignatureError("missing timestamp", f"no {TIMESTAMP_HEADER} header")
    if not re.fullmatch(r"[0-9]{1,12}", timestamp):
        raise SignatureError("bad timestamp", f"{TIMESTAMP_HEADER} is not whole seconds")
    try:
        base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("malformed signature", "the signature is not base64") from None
    verifier = _verifier(public_key)
    try:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            valid = bool(verifier.verify_signature(text, signature, timestamp))
        else:  # EventWebhook only takes text; the signature covers the bytes
            valid = _verify_bytes(verifier.public_key, body, signature, timestamp)
    except (binascii.Error, TypeError, ValueError) as error:  # EventWebhook raises these
        raise SignatureError("malformed signature", f"{type(error).__name__}: {error}") from None
    if not valid:
        raise SignatureError(
            "bad signature", "does not match this body (wrong key, or the body was altered)"
        )
    signed = int(timestamp)
    age = now - signed
    if abs(age) > max_age:
        when = f"{age:.0f} s old" if age > 0 else f"dated {-age:.0f} s in the future"
        raise SignatureError("stale signature", f"{when}; the limit is {max_age} s either way")
    return signed


def _verify_bytes(key: Any, body: bytes, signature: str, timestamp: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(
            base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature:
        return False
    return True


# -- reading events ----------------------------------------------------------------------


def email_hash(email: str) -> str:
    """The suppression key of an address: SHA-256 hex of the trimmed, lower-cased address."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Effect:
    """What one event changes. Empty: stored, nothing else."""

    subscriber_status: SubscriberStatus | None = None
    keep_statuses: frozenset[str] = frozenset()  # statuses this change never overwrites
    suppression: str | None = None  # the suppression reason
    delivery_status: str | None = None  # "sent" or "failed", for unknown/sending rows
    detail: str = ""  # why a delivery failed
    consent_action: str | None = None


@dataclass(frozen=True)
class ProviderEvent:
    key: str
    type: str
    email: str  # trimmed, as SendGrid sent it (matched case-insensitively)
    email_hash: str | None
    occurred_at: datetime | None
    sg_event_id: str | None
    sg_message_id: str | None
    delivery_id: int | None
    payload: dict[str, Any]
    effect: Effect

    @property
    def provider_message_id(self) -> str | None:
        """The X-Message-Id of the send: sg_message_id up to its first dot."""
        return self.sg_message_id.split(".", 1)[0] if self.sg_message_id else None


@dataclass(frozen=True)
class ParsedBatch:
    events: list[ProviderEvent]
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (raw, reason)


def _canonical(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_key(event: dict[str, Any]) -> str:
    """SHA-256 hex of what happened, the same for every retry of one event."""
    pairs = []
    for name in KEY_FIELDS:
        value = _canonical(_delivery_arg(event) if name == "delivery_id" else event.get(name))
        if name in ("email", "event") and value is not None:
            value = value.lower()
        pairs.append([name, value])
    text = json.dumps(pairs, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _delivery_arg(event: dict[str, Any]) -> Any:
    """SendGrid puts custom args at the top level of each event; older integrations
    nest them under custom_args or unique_args."""
    if "delivery_id" in event:
        return event["delivery_id"]
    for nest in ("custom_args", "unique_args"):
        inner = event.get(nest)
        if isinstance(inner, dict) and "delivery_id" in inner:
            return inner["delivery_id"]
    return None


def _delivery_id(event: dict[str, Any]) -> int | None:
    value = _canonical(_delivery_arg(event))
    if value is None or not re.fullmatch(r"[0-9]{1,10}", value):
        return None
    number = int(value)
    return number if 0 < number <= MAX_DELIVERY_ID else None


def _occurred_at(event: dict[str, Any]) -> datetime | None:
    value = event.get("timestamp")
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}", value.strip()):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _short(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text[:limit] or None


def _suppress(status: SubscriberStatus, **extra: Any) -> Effect:
    keep = frozenset({status.value}) if status is SubscriberStatus.COMPLAINED else SUPPRESSED
    return Effect(subscriber_status=status, keep_statuses=keep, suppression=status.value, **extra)


def decide(event_type: str, event: dict[str, Any]) -> Effect:
    """What an event of this type means for qasid (see the module docstring)."""
    reason = str(event.get("reason") or event.get("response") or "").strip()[:500]
    if event_type in SENT_EVIDENCE:
        return Effect(delivery_status="sent")
    if event_type == "bounce":
        bounce_type = str(event.get("type") or "bounce").strip().lower()
        detail = f"{bounce_type}: {reason}" if reason else bounce_type
        if bounce_type == "blocked":
            return Effect(delivery_status="failed", detail=detail)
        return _suppress(SubscriberStatus.BOUNCED, delivery_status="failed", detail=detail)
    if event_type == "dropped":
        detail = f"dropped: {reason}" if reason else "dropped"
        status = DROP_REASONS.get(reason.lower())
        if status is None:
            return Effect(delivery_status="failed", detail=detail)
        return _suppress(status, delivery_status="failed", detail=detail)
    if event_type == "spamreport":
        return _suppress(SubscriberStatus.COMPLAINED, delivery_status="sent")
    if event_type in ("unsubscribe", "group_unsubscribe"):
        return _suppress(
            SubscriberStatus.UNSUBSCRIBED, delivery_status="sent", consent_action="unsubscribe"
        )
    return Effect()  # deferred, group_resubscribe, anything new: kept, not acted on


def parse_batch(body: bytes) -> ParsedBatch:
    """The events of a signed body. BatchError when it is not a JSON list at all;
    elements that are not events are returned in ``rejected`` (to quarantine)."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(body, parse_constant=no_constants)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise BatchError(f"not JSON: {str(error)[:200]}") from None
    if not isinstance(data, list):
        raise BatchError(f"not a list of events but a JSON {type(data).__name__}")
    events: list[ProviderEvent] = []
    rejected: list[tuple[str, str]] = []
    for index, raw in enumerate(data):
        event_type = raw.get("event") if isinstance(raw, dict) else None
        if not isinstance(event_type, str) or not event_type.strip():
            text = json.dumps(raw, ensure_ascii=False)[:100_000]
            rejected.append((text, f"element {index}: not an event object with an event type"))
            continue
        event_type = event_type.strip().lower()[:32]
        email = str(raw.get("email") or "").strip()[:320]
        events.append(
            ProviderEvent(
                key=event_key(raw),
                type=event_type,
                email=email,
                email_hash=email_hash(email) if email else None,
                occurred_at=_occurred_at(raw),
                sg_event_id=_short(raw.get("sg_event_id"), 128),
                sg_message_id=_short(raw.get("sg_message_id"), 255),
                delivery_id=_delivery_id(raw),
                payload=raw,
                effect=decide(event_type, raw),
            )
        )
    return ParsedBatch(events, rejected)


# -- applying ------------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What one webhook request did, for the response and the log."""

    received: int = 0  # events in the body
    applied: int = 0  # events seen for the first time (effects applied)
    duplicates: int = 0  # seen before: nothing changed
    quarantined: int = 0  # bodies or elements kept aside unread
    subscribers: int = 0  # subscriber statuses changed
    suppressions: int = 0  # addresses newly suppressed
    deliveries: int = 0  # ledger rows settled
    by_type: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "subscribers": self.subscribers,
            "suppressions": self.suppressions,
            "deliveries": self.deliveries,
        }

    def line(self) -> str:
        types = ", ".join(f"{name}={n}" for name, n in sorted(self.by_type.items()))
        return (
            f"{self.received} events ({types or 'none'}): {self.applied} new, "
            f"{self.duplicates} duplicate, {self.quarantined} quarantined; "
            f"{self.subscribers} subscribers changed, {self.suppressions} suppressions added, "
            f"{self.deliveries} deliveries settled"
        )


def apply_batch(events: EventStore, body: bytes, now: datetime) -> BatchReport:
    """Record a verified body: its events once each, or the whole body in quarantine.

    Raises StorageError when the database fails (then nothing was kept, and the caller
    should answer so that SendGrid retries).
    """
    report = BatchReport()
    try:
        batch = parse_batch(body)
    except BatchError as error:
        events.quarantine(body.decode("utf-8", "backslashreplace"), str(error), now)
        report.quarantined = 1
        return report
    result = events.record(batch.events, batch.rejected, now)
    report.received = len(batch.events)
    report.quarantined = len(batch.rejected)
    report.applied = sum(result.new)
    report.duplicates = report.received - report.applied
    report.subscribers = result.subscribers
    report.suppressions = result.suppressions
    report.deliveries = result.deliveries
    for event in batch.events:
        report.by_type[event.type] = report.by_type.get(event.type, 0) + 1
    return report
