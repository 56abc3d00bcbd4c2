"""Reader accounts: what a person does with their subscription on the web.

Sign up (double opt-in), confirm, shape preferences and watchlists through a magic link,
pause, leave with one click, come back, export and erase their data. Each function takes
the qasid ``App`` and plain values; the web layer only parses forms and renders pages.

Rules kept here (RELIABILITY.md, M and A tables):

- No enumeration (A-03): ``signup`` and ``request_link`` return an outcome for logs and
  tests, but the web answers every outcome with the same page. Email is only ever queued
  in the delivery ledger, never sent inline, so every path costs about the same.
- At most one confirmation per address per 24 hours (M-07), one manage-link email per
  hour; the check and the insert share one transaction (``SubscriberStore.queue_once``).
- Suppressed addresses (M-05): an address that unsubscribed, bounced or complained gets
  nothing from the sign-up form, not even a confirmation; its owner comes back through the
  resubscribe button behind the unsubscribe link of any earlier email (the token proves
  they hold the mailbox). An address whose data was erased is kept only as a hash in
  ``suppression`` and needs a fresh double opt-in (M-08).
- Links (fact 10): every token is signed for one purpose and bound to the subscriber id
  and the address it was sent to, so a link issued before an email change or an erase no
  longer opens anything. Confirmation links are one-time (their hashes go to
  ``used_token``): a replayed confirmation cannot re-subscribe someone who left since.
  Manage links stay valid for 30 days and may be reused, because every email carries one
  and a link scanner or a second click must not lock the reader out.
- Every change of consent (signup, confirm, unsubscribe, resubscribe) writes a consent row
  with time, IP, user agent, text version and source, in the same transaction.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from itsdangerous import SignatureExpired, URLSafeTimedSerializer

from pipeline.adapters.event_store import EventStore
from pipeline.adapters.render import EmailRenderer, Recipient, RenderedEmail
from pipeline.adapters.subscriber_store import ConsentRecord, SubscriberStore
from pipeline.bootstrap import App
from pipeline.core.errors import StorageError
from pipeline.core.query import format_query, parse_query
from pipeline.core.subscribers import (
    Frequency,
    Subscriber,
    SubscriberError,
    SubscriberStatus,
    Watchlist,
    check_frequency,
    check_hour,
    check_themes,
)
from pipeline.core.tagger import THEME_IDS
from pipeline.subscriptions import check_timezone, normalise_email
from pipeline.tokens import TokenError, TokenSubject, fingerprint

log = logging.getLogger(__name__)

TEXT_VERSION = "2026-11"  # the consent text on the sign-up form; bump it when the text changes
CONFIRM_INTERVAL = timedelta(hours=24)  # at most one confirmation email per address (M-07)
LINK_INTERVAL = timedelta(hours=1)  # at most one manage-link email per address
DEFAULT_TIMEZONE = "Asia/Karachi"
MAX_TOKEN_LENGTH = 512  # longer path segments are not our tokens: refused before decoding

Status = SubscriberStatus
LEFT = (Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED)
RECEIVING = (Status.ACTIVE, Status.PAUSED)


def email_hash(email: str) -> str:
    """The suppression key of an address: SHA-256 hex of the trimmed, lower-cased address
    (the same key ``pipeline.events`` uses for provider events)."""
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Visitor:
    """Who made a request, for the consent log."""

    ip: str = ""
    user_agent: str = ""
    source: str = "web"

    def consent(self, action: str) -> ConsentRecord:
        return ConsentRecord(
            action=action,
            ip=self.ip,
            user_agent=self.user_agent,
            text_version=TEXT_VERSION,
            source=self.source,
        )


@dataclass(frozen=True)
class Preferences:
    themes: tuple[str, ...]
    frequency: Frequency
    hour: int
    timezone: str


def check_preferences(
    themes: Sequence[str], frequency: str, hour: int, timezone: str
) -> Preferences:
    """Validated preferences; SubscriberError names the field otherwise."""
    chosen = check_themes(themes, THEME_IDS)
    if not chosen:
        raise SubscriberError("themes", "choose at least one theme")
    return Preferences(
        chosen, check_frequency(frequency), check_hour(hour), check_timezone(timezone)
    )


def check_query(query: str) -> str:
    """The canonical form of a watchlist query; QueryError (with a column) otherwise."""
    return format_query(parse_query(query))


# -- sign-up and links by address ------------------------------------------------------


class SignupOutcome(StrEnum):
    QUEUED = "queued"  # a confirmation email is in the ledger
    THROTTLED = "throttled"  # pending, but a confirmation went out in the last 24 hours
    RECEIVING = "receiving"  # already active or paused: nothing new
    SUPPRESSED = "suppressed"  # unsubscribed, bounced, complained: nothing is sent


def signup(
    app: App,
    email: str,
    preferences: Preferences,
    visitor: Visitor,
    watchlist: str = "",
) -> SignupOutcome:
    """Double opt-in: a new (or erased) address becomes pending with a consent row and a
    queued confirmation. The answer to the person is the same whatever happens here."""
    address = normalise_email(email)
    canonical = check_query(watchlist) if watchlist.strip() else ""
    now = app.clock()

    def attempt() -> tuple[str, int | None]:
        return SubscriberStore(app.store).sign_up(
            address,
            email_hash(address),
            themes=preferences.themes,
            frequency=preferences.frequency,
            hour=preferences.hour,
            timezone=preferences.timezone,
            record=visitor.consent("signup"),
            watchlist_query=canonical,
            confirm_since=now - CONFIRM_INTERVAL,
            now=now,
        )

    try:
        outcome, subscriber_id = attempt()
    except StorageError:  # two first sign-ups of one address at once: the row exists now
        outcome, subscriber_id = attempt()
    if outcome == "queued":
        log.info("signup: confirmation queued for subscriber %s", subscriber_id)
    return SignupOutcome(outcome)


class LinkOutcome(StrEnum):
    LINK_QUEUED = "link_queued"  # a manage-link email is in the ledger
    CONFIRM_QUEUED = "confirm_queued"  # pending: the confirmation again
    THROTTLED = "throttled"  # one was sent recently
    NOTHING = "nothing"  # unknown, left, or erased: nothing is sent


def request_link(app: App, email: str) -> LinkOutcome:
    """ "Send me a link to my preferences": same answer whatever the address is."""
    address = normalise_email(email)
    people = SubscriberStore(app.store)
    subscriber = people.get(address)
    if subscriber is None or subscriber.status in LEFT:
        return LinkOutcome.NOTHING
    if subscriber.status is Status.PENDING:
        sent = resend_confirmation(app, subscriber)
        return LinkOutcome.CONFIRM_QUEUED if sent is ResendOutcome.SENT else LinkOutcome.THROTTLED
    return LinkOutcome.LINK_QUEUED if queue_manage_link(app, subscriber) else LinkOutcome.THROTTLED


def queue_manage_link(app: App, subscriber: Subscriber) -> bool:
    """Queue an email (ledger channel "link") holding a fresh manage link, at most one an
    hour. ``pipeline.delivery.compose`` renders it (channel "link")."""
    now = app.clock()
    return SubscriberStore(app.store).queue_once(subscriber.id, "link", now - LINK_INTERVAL, now)


def link_email(renderer: EmailRenderer, recipient: Recipient) -> RenderedEmail:
    """The manage-link email (templates/email/link.*): one link, nothing from any feed."""
    return renderer.manage_link(recipient)


# -- links by token ---------------------------------------------------------------------


class InvalidLink(Exception):
    """A token that is tampered with, for another purpose, or no longer matches anyone."""


@dataclass(frozen=True)
class OpenedLink:
    subscriber: Subscriber
    expired: bool  # signed by us, for this subscriber, but past its maximum age
    token_hash: str


def _expired_subject(error: TokenError) -> TokenSubject | None:
    """The subject of a token whose signature is good but whose age is not (itsdangerous
    checks the signature before the age and keeps the payload on SignatureExpired)."""
    cause = error.__cause__
    if not isinstance(cause, SignatureExpired) or cause.payload is None:
        return None
    try:
        data = URLSafeTimedSerializer("payload only").load_payload(cause.payload)
    except Exception:
        return None
    if not (isinstance(data, list) and len(data) == 3 and isinstance(data[0], int)):
        return None
    return TokenSubject(int(data[0]), str(data[1]))


def open_link(app: App, purpose: str, token: str) -> OpenedLink:
    """Who a link belongs to. InvalidLink when it is not ours, not for this purpose, or
    was issued to an address the subscriber no longer has (or to an erased subscriber)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidLink("this link is not valid")
    expired = False
    try:
        subject, _ = app.tokens.read(purpose, token)
    except TokenError as error:
        found = _expired_subject(error) if error.expired else None
        if found is None:
            raise InvalidLink(str(error)) from error
        subject, expired = found, True
    subscriber = SubscriberStore(app.store).by_id(subject.subscriber_id)
    if subscriber is None or fingerprint(subscriber.email) != subject.fingerprint:
        raise InvalidLink("this link is no longer valid")
    return OpenedLink(subscriber, expired, token_hash(token))


def link_used(app: App, link: OpenedLink) -> bool:
    """Whether this one-time link was used already."""
    return SubscriberStore(app.store).token_used(link.token_hash)


def make_token(app: App, purpose: str, subscriber: Subscriber) -> str:
    return app.tokens.make(purpose, subscriber.id, subscriber.email)


class ConfirmOutcome(StrEnum):
    CONFIRMED = "confirmed"
    ALREADY = "already"  # active or paused: confirmed before
    USED = "used"  # this very link confirmed once already (replay)
    CLOSED = "closed"  # the subscriber left since the link was sent


def confirm(app: App, link: OpenedLink, visitor: Visitor) -> ConfirmOutcome:
    """Finish the double opt-in (the caller has refused expired links)."""
    subscriber = link.subscriber
    if subscriber.status in RECEIVING:
        return ConfirmOutcome.ALREADY
    if subscriber.status is not Status.PENDING:
        return ConfirmOutcome.CLOSED
    outcome = SubscriberStore(app.store).transition(
        subscriber.id,
        to=Status.ACTIVE,
        allowed_from=(Status.PENDING,),
        now=app.clock(),
        record=visitor.consent("confirm"),
        confirmed=True,
        one_time=(link.token_hash, "confirm"),
        clear_suppression=email_hash(subscriber.email),
    )
    if outcome == "done":
        log.info("confirmed: subscriber %d", subscriber.id)
        return ConfirmOutcome.CONFIRMED
    if outcome == "used":
        return ConfirmOutcome.USED
    fresh = SubscriberStore(app.store).by_id(subscriber.id)  # changed under us
    return ConfirmOutcome.ALREADY if fresh and fresh.status in RECEIVING else ConfirmOutcome.CLOSED


class ResendOutcome(StrEnum):
    SENT = "sent"
    RECENT = "recent"  # one went out in the last 24 hours
    ALREADY = "already"  # confirmed already
    CLOSED = "closed"  # left since


def resend_confirmation(app: App, subscriber: Subscriber) -> ResendOutcome:
    if subscriber.status in RECEIVING:
        return ResendOutcome.ALREADY
    if subscriber.status is not Status.PENDING:
        return ResendOutcome.CLOSED
    now = app.clock()
    queued = SubscriberStore(app.store).queue_once(
        subscriber.id, "confirm", now - CONFIRM_INTERVAL, now
    )
    return ResendOutcome.SENT if queued else ResendOutcome.RECENT


# -- preferences and watchlists ----------------------------------------------------------


def update_preferences(app: App, subscriber: Subscriber, preferences: Preferences) -> None:
    SubscriberStore(app.store).update_preferences(
        subscriber.id,
        themes=preferences.themes,
        frequency=preferences.frequency,
        hour=preferences.hour,
        timezone=preferences.timezone,
        now=app.clock(),
    )


def pause(app: App, subscriber: Subscriber) -> bool:
    """Stop digests and alerts without leaving (active → paused)."""
    outcome = SubscriberStore(app.store).transition(
        subscriber.id, to=Status.PAUSED, allowed_from=(Status.ACTIVE,), now=app.clock()
    )
    return outcome == "done"


def resume(app: App, subscriber: Subscriber) -> bool:
    outcome = SubscriberStore(app.store).transition(
        subscriber.id, to=Status.ACTIVE, allowed_from=(Status.PAUSED,), now=app.clock()
    )
    return outcome == "done"


def save_watchlist(
    app: App, subscriber: Subscriber, query: str, instant: bool, watchlist_id: int | None = None
) -> Watchlist:
    """Add a watchlist, or change one of the subscriber's own. QueryError or
    SubscriberError (the limit, a duplicate, not theirs) say what is wrong."""
    canonical = check_query(query)
    people = SubscriberStore(app.store)
    if watchlist_id is None:
        return people.add_watchlist(subscriber.email, canonical, instant, app.clock())
    return people.edit_watchlist(subscriber.id, watchlist_id, canonical, instant)


def remove_watchlist(app: App, subscriber: Subscriber, watchlist_id: int) -> bool:
    return SubscriberStore(app.store).remove_watchlist_of(subscriber.id, watchlist_id)


# -- leaving and coming back --------------------------------------------------------------


def unsubscribe(app: App, subscriber: Subscriber, visitor: Visitor) -> bool:
    """Stop everything now. True when this call changed the status (a repeat is a no-op)."""
    outcome = SubscriberStore(app.store).transition(
        subscriber.id,
        to=Status.UNSUBSCRIBED,
        allowed_from=(Status.ACTIVE, Status.PAUSED, Status.PENDING),
        now=app.clock(),
        record=visitor.consent("unsubscribe"),
    )
    if outcome == "done":
        log.info("unsubscribed: subscriber %d (%s)", subscriber.id, visitor.source)
    return outcome == "done"


class ResubscribeOutcome(StrEnum):
    ACTIVE = "active"  # back, at once
    CONFIRM = "confirm"  # a fresh double opt-in: a confirmation is (or was just) sent
    ALREADY = "already"  # still subscribed


def resubscribe(app: App, subscriber: Subscriber, visitor: Visitor) -> ResubscribeOutcome:
    """Come back from the unsubscribe page. Someone who unsubscribed is active again at
    once; an address that bounced, complained or is on the suppression list must confirm
    afresh (a confirmation is queued, at most one a day)."""
    if subscriber.status in RECEIVING:
        return ResubscribeOutcome.ALREADY
    people = SubscriberStore(app.store)
    now = app.clock()
    if subscriber.status is Status.PENDING:
        resend_confirmation(app, subscriber)
        return ResubscribeOutcome.CONFIRM
    suppressed = people.suppression_reason(email_hash(subscriber.email)) is not None
    if subscriber.status is Status.UNSUBSCRIBED and not suppressed:
        outcome = people.transition(
            subscriber.id,
            to=Status.ACTIVE,
            allowed_from=(Status.UNSUBSCRIBED,),
            now=now,
            record=visitor.consent("resubscribe"),
        )
        if outcome == "done":
            return ResubscribeOutcome.ACTIVE
    else:
        people.transition(
            subscriber.id,
            to=Status.PENDING,
            allowed_from=LEFT,
            now=now,
            record=visitor.consent("resubscribe"),
        )
    fresh = people.by_id(subscriber.id)
    if fresh is not None and fresh.status is Status.PENDING:
        resend_confirmation(app, fresh)
        return ResubscribeOutcome.CONFIRM
    return ResubscribeOutcome.ALREADY


# -- the data itself -------------------------------------------------------------------


def export(app: App, subscriber: Subscriber) -> dict[str, Any]:
    """Everything stored about this subscriber (and nobody else), ready for JSON."""
    data = SubscriberStore(app.store).export(subscriber.id) or {}
    now: datetime = app.clock()
    return {"exported_at": now.isoformat(), "site": app.settings.digest.site_name, **data}


def erase(app: App, subscriber: Subscriber) -> bool:
    """Delete the subscriber's personal rows and the provider events that name the
    address; keep only the hash of the address so it is never mailed again without a fresh
    double opt-in."""
    key = email_hash(subscriber.email)
    EventStore(app.store).forget(key)  # first: if the erase then fails, a retry finds them
    gone = SubscriberStore(app.store).erase(subscriber.id, key, app.clock())
    if gone:
        log.info("erased: subscriber %d", subscriber.id)
    return gone
