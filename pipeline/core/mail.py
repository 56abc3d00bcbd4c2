"""One outgoing email, what sending it can end in, and its RFC 5322 form. Pure: no I/O.

The delivery ledger builds one ``OutgoingEmail`` per (subscriber, edition) row and hands it to
a ``Mailer`` (``pipeline.adapters.mail``). The mailer answers with a ``SendResult`` whose
``outcome`` maps one-to-one onto the ledger's next status:

    sent     the provider (or the outbox) accepted it      -> status 'sent'
    retry    nothing was sent; safe to send again           -> back to 'queued' (not_before)
    failed   permanently rejected; sending again won't help -> 'failed' (suppress if asked)
    unknown  it may or may not have gone out                -> 'unknown' (reconcile, RELIABILITY 8)

``fatal`` on a result means the backend itself is unusable (bad API key, TLS refused, outbox
not writable): stop the run; the email was not sent (its outcome is always ``retry``).

Header injection (RELIABILITY X-05) cannot happen: every header value is cleaned of control
characters (CR, LF, NUL, ...) and Unicode line separators before it is set, addresses are
parsed into one ``Address`` each, and the URLs in ``List-Unsubscribe`` are checked when the
email is built.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Protocol, cast
from urllib.parse import urlsplit

# SendGrid's per-request personalization cap (and the mail/send schema's maxItems).
MAX_PERSONALIZATIONS = 1000
# SendGrid: custom_args and substitutions may each total at most 10,000 bytes per
# personalization. Outbox and SMTP have no such limit; checking it everywhere keeps an email
# that works on one backend working on all of them.
MAX_PERSONAL_BYTES = 10_000
# RFC 5322 line limit is 998 octets; a URL has to fit on one header line with its brackets.
MAX_URL_LENGTH = 900

# policy.SMTP writes CRLF. cte_type 7bit: every part is quoted-printable or base64, so the
# message is safe for servers without 8BITMIME. refold_source none: List-Unsubscribe is set
# raw and folded by us between its URLs, because the header folder would otherwise turn a
# long URL into an RFC 2047 encoded-word, which no mail client reads as a URL.
MIME_POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none")

_DELIVERY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # printable ASCII without ':' (RFC 5322 ftext)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NAME_ADDR = re.compile(r"^(?P<name>.*?)\s*<(?P<addr>[^<>]*)>$")
_UNSAFE_IN_ADDRESS = re.compile(r"[\s,;<>()\[\]\"\\:]")
# not a URL character allowed inside <...> in a header: printable ASCII but <>,"\ (one
# class, three times faster than the two it replaced)
_URL_UNSAFE = re.compile(r"[^!#-+\--;=?-\[\]-~]")

# Headers the message builder owns; an email's extra ``headers`` may not set them.
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Reply-To",
        "Sender",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Received",
        "Return-Path",
        "DKIM-Signature",
    )
)


class SendOutcome(StrEnum):
    """What one send attempt ended in. The values are the ledger's vocabulary."""

    SENT = "sent"  # accepted by the provider, or written to the outbox
    RETRY = "retry"  # nothing was sent: try again later (honour retry_after)
    FAILED = "failed"  # permanently rejected: never send this one again
    UNKNOWN = "unknown"  # ambiguous: the request was written, no answer came back


@dataclass(frozen=True, slots=True)
class SendResult:
    """The answer for one email.

    provider_message_id: SendGrid's X-Message-Id, the SMTP server's queue id (or the
        Message-ID when the server names none), or the outbox file name.
    error: what went wrong, in words (the provider's own text where it gave one).
    retry_after: seconds the provider asked us to wait (Retry-After / X-RateLimit-Reset);
        None when it said nothing and the caller's back-off applies.
    suppress: the provider says this address must not be mailed again (unknown user,
        mailbox gone). The ledger suppresses the subscriber.
    fatal: the backend is unusable (bad credentials, TLS refused, outbox not writable):
        stop the whole run. A fatal result is always ``retry``: nothing was sent.
    status: the provider's code, an HTTP status or an SMTP reply code, for logs.
    """

    delivery_id: str
    outcome: SendOutcome
    provider_message_id: str | None = None
    error: str = ""
    retry_after: float | None = None
    suppress: bool = False
    fatal: bool = False
    status: int | None = None

    def __post_init__(self) -> None:
        if self.fatal and self.outcome is not SendOutcome.RETRY:
            raise ValueError("a fatal result means nothing was sent: its outcome is 'retry'")


_FROZEN_MAPPINGS = ("headers", "custom_args", "substitutions")


@dataclass(frozen=True, kw_only=True)
class OutgoingEmail:
    """One finished email for one recipient, ready for any backend.

    delivery_id: the ledger row's id ([A-Za-z0-9._-], at most 64 characters). It names the
        outbox file, derives the Message-ID and travels in SendGrid's custom_args.
    to: one bare address (no display name, no list).
    from_addr / reply_to: "addr@domain" or "Display Name <addr@domain>".
    subject / text / html: the content; any ``substitutions`` tag in them is replaced by
        the tag's value for this recipient (see ``personalize``).
    date: when the email is sent, timezone-aware.
    list_unsubscribe_url: the RFC 8058 one-click URL (https; plain http only on a loopback
        host, for local demos).
    list_unsubscribe_mailto: "mailto:..." (optional; DESIGN.md wants both).
    list_id: the List-Id value; empty means ``<qasid.{domain of from_addr}>``.
    message_id: empty means ``message_id_for(delivery_id, from_addr)``, stable per delivery.
    headers: extra headers (not the ones in RESERVED_HEADERS).
    custom_args: string pairs that travel with the email at SendGrid (e.g. edition_id);
        ``delivery_id`` is always added by the SendGrid mailer and may not be given here.
    substitutions: tag -> value for this recipient. Emails whose subject, text and html are
        equal before substitution can share one SendGrid request (``group_by_content``).
        Values are inserted verbatim: give HTML-escaped values for tags used in the html.

    Raises ValueError for a malformed field that comes from code or configuration (sender,
    URLs, ids, header names). A bad *recipient* does not raise: mailers answer ``failed``
    for it (see ``recipient_problem``), so one bad row never stops a batch.
    """

    delivery_id: str
    to: str
    from_addr: str
    subject: str
    text: str
    html: str
    date: datetime
    list_unsubscribe_url: str
    list_unsubscribe_mailto: str = ""
    list_id: str = ""
    reply_to: str | None = None
    message_id: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    custom_args: Mapping[str, str] = field(default_factory=dict)
    substitutions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _DELIVERY_ID.fullmatch(self.delivery_id):
            raise ValueError(
                f"delivery_id {self.delivery_id!r}: use 1-64 of [A-Za-z0-9._-], "
                "starting with a letter or digit"
            )
        sender = parse_address(self.from_addr)  # raises ValueError
        if self.reply_to:
            parse_address(self.reply_to)
        if self.date.tzinfo is None or self.date.utcoffset() is None:
            raise ValueError("date must be timezone-aware")
        check_unsubscribe_url(self.list_unsubscribe_url)
        if self.list_unsubscribe_mailto:
            check_unsubscribe_mailto(self.list_unsubscribe_mailto)
        for name in self.headers:
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid RFC 5322 field name")
            if name.lower() in RESERVED_HEADERS or name.lower().startswith("x-sg-"):
                raise ValueError(f"header {name!r} is set by the mailer, not by the email")
        if "delivery_id" in self.custom_args:
            raise ValueError("custom_args: delivery_id is added by the mailer")
        _check_string_pairs("custom_args", self.custom_args, allow_empty_key=False)
        _check_string_pairs("substitutions", self.substitutions, allow_empty_key=False)
        for name in _FROZEN_MAPPINGS:
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        if not self.message_id:
            object.__setattr__(
                self, "message_id", message_id_for(self.delivery_id, sender.addr_spec)
            )
        elif not re.fullmatch(r"<[!-;=?-~]+@[!-;=?-~]+>", self.message_id):
            raise ValueError(f"message_id {self.message_id!r} is not <left@right>")
        object.__setattr__(self, "list_id", _list_id(self.list_id, sender.domain))

    # Emails cross processes (composed by the send queue's helpers, sent by the job), and
    # a mapping proxy does not pickle: plain dicts travel, proxies again on arrival.
    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        for name in _FROZEN_MAPPINGS:
            state[name] = dict(state[name])
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        for name in _FROZEN_MAPPINGS:
            state[name] = MappingProxyType(cast(dict[str, str], state[name]))
        self.__dict__.update(state)

    @property
    def content_key(self) -> tuple[str, str | None, str, str, str]:
        """Equal for emails that can share one request: same sender and the same content
        before substitution."""
        return (self.from_addr, self.reply_to, self.subject, self.text, self.html)


def _check_string_pairs(what: str, pairs: Mapping[str, str], *, allow_empty_key: bool) -> None:
    size = 0
    for key, value in pairs.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"{what}: keys and values must be strings ({key!r}: {value!r})")
        if not key and not allow_empty_key:
            raise ValueError(f"{what}: empty key")
        # UTF-8 bytes; ASCII (links, tokens, most reasons) is one byte a character
        size += (len(key) if key.isascii() else len(key.encode())) + (
            len(value) if value.isascii() else len(value.encode())
        )
    if size > MAX_PERSONAL_BYTES:
        raise ValueError(f"{what}: {size} bytes, more than SendGrid's {MAX_PERSONAL_BYTES}")


def clean_header_text(value: str) -> str:
    """One line of header text: control characters (CR, LF, NUL, tab...) and Unicode line
    separators become spaces, runs of whitespace one space, and lone surrogates U+FFFD."""
    value = _CONTROL.sub(" ", value)
    value = _SPACES.sub(" ", value).strip()
    return _SURROGATE.sub("\ufffd", value)


def clean_body(value: str) -> str:
    """Body text safe to encode: one newline convention, no NUL, no lone surrogates."""
    value = value.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return _SURROGATE.sub("\ufffd", value)


@lru_cache(maxsize=256)  # every email of a job parses the same sender; Address is immutable
def parse_address(value: str) -> Address:
    """Parse "addr@domain" or "Name <addr@domain>" into one Address; the display name is
    cleaned of control characters. Raises ValueError for anything else (lists, groups,
    addresses without a domain)."""
    cleaned = clean_header_text(value)
    match = _NAME_ADDR.match(cleaned)
    name, addr = (match["name"], match["addr"].strip()) if match else ("", cleaned)
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not addr or "@" not in addr or _UNSAFE_IN_ADDRESS.search(addr):
        raise ValueError(f"{value!r} is not one email address")
    local, _, domain = addr.rpartition("@")
    try:
        return Address(display_name=name, username=local, domain=_ascii_domain(domain))
    except (ValueError, IndexError) as error:
        raise ValueError(f"{value!r} is not one email address: {error}") from error


def _ascii_domain(domain: str) -> str:
    """IDNA-encode an internationalised domain so it fits in 7-bit headers."""
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as error:
        raise ValueError(f"domain {domain!r} cannot be IDNA-encoded") from error


def recipient_problem(to: str) -> str | None:
    """Why ``to`` cannot be a recipient, or None. Only what would corrupt the message or the
    envelope is refused here (control characters, several addresses, a display name, a
    non-ASCII local part); whether the address exists is for the provider to say."""
    if not to or to != to.strip() or _UNSAFE_IN_ADDRESS.search(to) or _CONTROL.search(to):
        return f"recipient {to!r} is not one bare address"
    local, at, domain = to.rpartition("@")
    if at and not local.isascii():
        return f"recipient {to!r} has a non-ASCII local part (SMTPUTF8 is not supported)"
    if not to.isascii() and at:
        try:
            _ascii_domain(domain)
        except ValueError as error:
            return f"recipient {to!r}: {error}"
    return None


def envelope_recipient(to: str) -> str:
    """The recipient as it goes on the wire: the domain IDNA-encoded."""
    local, at, domain = to.rpartition("@")
    return f"{local}@{_ascii_domain(domain)}" if at else to


def check_unsubscribe_url(url: str) -> None:
    """RFC 8058 wants https. Plain http is accepted only for a loopback host (local demo)."""
    if len(url) > MAX_URL_LENGTH or _URL_UNSAFE.search(url):
        raise ValueError(f"list_unsubscribe_url {url[:80]!r}: not a printable ASCII URL")
    # The scheme and host decide, and a send's links share them: judged once per origin
    # (what precedes the path; the whole URL when it has none).
    start = url.find("//")
    cut = url.find("/", start + 2) if start >= 0 else -1
    if not _secure_origin(url if cut < 0 else url[:cut]):
        raise ValueError(f"list_unsubscribe_url {url[:80]!r} must be an https URL")


@lru_cache(maxsize=64)
def _secure_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return True
    return parts.scheme == "http" and _is_loopback(host)


def check_unsubscribe_mailto(mailto: str) -> None:
    if (
        not mailto.lower().startswith("mailto:")
        or "@" not in mailto
        or len(mailto) > MAX_URL_LENGTH
        or _URL_UNSAFE.search(mailto)
    ):
        raise ValueError(f"list_unsubscribe_mailto {mailto[:80]!r} must be a mailto: URL")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=64)  # every email of a job has the same list and sender
def _list_id(list_id: str, sender_domain: str) -> str:
    found = clean_header_text(list_id) or f"<qasid.{_ascii_domain(sender_domain)}>"
    return found if "<" in found else f"<{found}>"


def message_id_for(delivery_id: str, from_addr: str) -> str:
    """The stable Message-ID of a delivery: ``<delivery-{id}@{domain of the sender}>``.
    A resend of the same delivery carries the same id, so duplicates are recognisable."""
    return f"<delivery-{delivery_id}@{_message_id_domain(from_addr)}>"


@lru_cache(maxsize=64)
def _message_id_domain(from_addr: str) -> str:
    return _ascii_domain(from_addr.rpartition("@")[2].rstrip(">").strip() or "localhost")


def apply_substitutions(text: str, substitutions: Mapping[str, str]) -> str:
    """Replace every tag in one left-to-right pass (a value is never re-scanned), longest
    tag first where tags overlap."""
    if not substitutions or not text:
        return text
    pattern = re.compile("|".join(re.escape(tag) for tag in sorted(substitutions, key=len)[::-1]))
    return pattern.sub(lambda match: substitutions[match.group(0)], text)


def personalize(email: OutgoingEmail) -> tuple[str, str, str]:
    """(subject, text, html) as this recipient reads them: substitutions applied, subject
    cleaned to one line, bodies with one newline convention."""
    subject = apply_substitutions(email.subject, email.substitutions)
    text = apply_substitutions(email.text, email.substitutions)
    html = apply_substitutions(email.html, email.substitutions)
    return clean_header_text(subject), clean_body(text), clean_body(html)


def list_unsubscribe_value(email: OutgoingEmail, *, fold: bool = False) -> str:
    """``<https://...>, <mailto:...>``; with ``fold`` the second URL starts a new line."""
    urls = [f"<{email.list_unsubscribe_url}>"]
    if email.list_unsubscribe_mailto:
        urls.append(f"<{email.list_unsubscribe_mailto}>")
    return (",\n " if fold else ", ").join(urls)


def list_headers(email: OutgoingEmail) -> list[tuple[str, str]]:
    """The headers a provider API must carry besides From/To/Subject/Reply-To: Message-ID,
    the list headers, then the extra headers, every value one clean line."""
    headers = [
        ("Message-ID", email.message_id),
        ("List-Id", email.list_id),
        ("List-Unsubscribe", list_unsubscribe_value(email)),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    headers.extend((name, clean_header_text(value)) for name, value in email.headers.items())
    return headers


def build_mime(email: OutgoingEmail) -> EmailMessage:
    """The RFC 5322 message: multipart/alternative (text/plain then text/html, both
    quoted-printable UTF-8), with Message-ID, Date, From, Reply-To, To, Subject, List-Id,
    List-Unsubscribe (https and mailto), List-Unsubscribe-Post and the extra headers.
    Serialise with ``message.as_bytes()``: CRLF line ends, 7-bit clean.

    Raises ValueError if the recipient is unusable (``recipient_problem``)."""
    problem = recipient_problem(email.to)
    if problem:
        raise ValueError(problem)
    subject, text, html = personalize(email)
    message = EmailMessage(policy=MIME_POLICY)
    message["Message-ID"] = email.message_id
    message["Date"] = format_datetime(email.date)
    message["From"] = parse_address(email.from_addr)
    if email.reply_to:
        message["Reply-To"] = parse_address(email.reply_to)
    message["To"] = envelope_recipient(email.to)
    message["Subject"] = subject
    message["MIME-Version"] = "1.0"
    message["List-Id"] = email.list_id
    message.set_raw("List-Unsubscribe", list_unsubscribe_value(email, fold=True))
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in email.headers.items():
        message[name] = clean_header_text(value)
    message.make_alternative()
    for body, subtype in ((text, "plain"), (html, "html")):
        part = MIMEPart(policy=MIME_POLICY)
        part.set_content(body, subtype=subtype, charset="utf-8", cte="quoted-printable")
        message.attach(cast(EmailMessage, part))  # typeshed wants EmailMessage; a part is fine
    return message


def group_by_content(emails: Sequence[OutgoingEmail], limit: int) -> list[list[int]]:
    """Indices of ``emails`` grouped by ``content_key`` (first-seen order, input order inside
    a group), each group at most ``limit`` long. One group is one provider request."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    groups: dict[tuple[str, str | None, str, str, str], list[list[int]]] = {}
    order: list[list[int]] = []
    for index, email in enumerate(emails):
        chunks = groups.setdefault(email.content_key, [])
        if not chunks or len(chunks[-1]) >= limit:
            chunks.append([])
            order.append(chunks[-1])
        chunks[-1].append(index)
    return order


def count_outcomes(results: Sequence[SendResult]) -> dict[str, int]:
    """{outcome: count} for a summary log line, in SendOutcome order, zeros left out."""
    counts = {outcome.value: 0 for outcome in SendOutcome}
    for result in results:
        counts[result.outcome.value] += 1
    return {outcome: count for outcome, count in counts.items() if count}


class Mailer(Protocol):
    """Puts finished emails into the outbox, an SMTP server or SendGrid.

    Promises, for every backend:
    - ``send`` and ``send_batch`` never raise for a problem with one email or with the
      provider; they answer a ``SendResult`` per email (bugs still propagate).
    - ``send_batch`` answers one result per email, in input order. A backend may put emails
      with equal ``content_key`` into one provider request. After a ``fatal`` result or a
      rate limit, the emails not yet attempted come back as ``retry`` (with the same
      ``fatal``/``retry_after``) without being attempted.
    - Nothing sleeps: a rate limit is returned as ``retry`` with ``retry_after``; waiting is
      the caller's (the ledger's ``not_before``).
    - A mailer is used by one thread at a time; ``close`` releases connections. A mailer
      that holds connections has ``after_fork()``, which a forked process calls first so
      that it opens its own instead of using its parent's (the send queue's helpers).
    """

    def send(self, email: OutgoingEmail) -> SendResult: ...

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]: ...

    def close(self) -> None: ...
