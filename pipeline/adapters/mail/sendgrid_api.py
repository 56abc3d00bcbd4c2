"""The SendGrid backend: v3 mail/send through the official ``sendgrid`` package.

Request shape. Each email is one personalization carrying its recipient, its headers
(Message-ID, List-Id, List-Unsubscribe, List-Unsubscribe-Post, extras), its custom_args
(``delivery_id`` plus the email's own, e.g. ``edition_id``) and its substitutions. Custom
args go on the personalization, never top level: SendGrid's published description types a
top-level ``custom_args`` as a string and rejects the helper's object there (see
shared/testdata/sendgrid-oai/README.md).

Batching. ``send_batch`` puts emails with equal ``content_key`` (sender, reply-to, subject,
text and html *before* substitution) into one request of up to ``[sendgrid] batch_size``
(at most 1000) personalizations. Anything personal (the unsubscribe link, a greeting) must
then be a substitution tag in the shared content; emails rendered with personal text
inline simply do not share content and go one per request. Nothing else is merged.

Classification of one request (the ledger's next status in brackets):

- 2xx: [sent], ``provider_message_id`` = the X-Message-Id header.
- 429: [retry] with ``retry_after`` from Retry-After, else X-RateLimit-Reset. No sleeping
  in here: the batch stops and the rest come back ``retry`` with the same delay, and the
  ledger's ``not_before`` honours it.
- 401, 403: [retry + fatal], a bad or under-privileged API key; 404, 405: [retry + fatal],
  ``[sendgrid] host`` does not serve the API. Nothing was sent; stop the run.
- 400, 413: [failed] with SendGrid's error text. For a request with several
  personalizations the culprit is found first: errors naming ``personalizations.N`` fail
  those emails and the rest is sent again; an error naming a shared field fails them all;
  an error naming nothing (or 413) splits the request in halves. A 400 means nothing in the
  request was sent, so sending the rest again cannot double anyone.
- 5xx: [unknown]. There is no idempotency key (RELIABILITY 8).
- No connection (refused, DNS, a timeout or reset while connecting or writing the request):
  [retry]; the batch stops. A timeout or reset after the request was written: [unknown].
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
import urllib.error
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from python_http_client.exceptions import HTTPError as ApiHTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    CustomArg,
    From,
    Header,
    Mail,
    MailSettings,
    Personalization,
    ReplyTo,
    SandBoxMode,
    Substitution,
    To,
)

from pipeline.adapters.mail.base import not_attempted, stops_batch
from pipeline.core.mail import (
    OutgoingEmail,
    SendOutcome,
    SendResult,
    clean_body,
    clean_header_text,
    envelope_recipient,
    group_by_content,
    list_headers,
    parse_address,
    recipient_problem,
)
from pipeline.settings import SendGridSettings

log = logging.getLogger(__name__)

_PERSONALIZATION_FIELD = re.compile(r"^personalizations[.\[](\d+)")


@dataclass(frozen=True)
class _Answer:
    """What came back for one request: an HTTP status, or a transport failure."""

    status: int | None
    headers: Mapping[str, str]
    body: bytes
    failure: str = ""  # set when no HTTP answer came
    written: bool = True  # False: the request never fully left (nothing can have been sent)


class SendGridMailer:
    """Sends through SendGrid's v3 mail/send at ``[sendgrid] host``.

    ``clock`` (seconds since the epoch) turns X-RateLimit-Reset into a delay.
    """

    def __init__(
        self, settings: SendGridSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        if not settings.api_key:
            raise ValueError("[sendgrid] api_key is empty")
        self.settings = settings
        self.clock = clock
        self.api = SendGridAPIClient(api_key=settings.api_key, host=settings.host)
        # python-http-client passes this timeout to every request it builds; never pass
        # per-call request_headers: the client keeps them for later calls.
        self.api.client.timeout = settings.timeout

    def send(self, email: OutgoingEmail) -> SendResult:
        return self.send_batch([email])[0]

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(emails)
        sendable: list[int] = []
        for index, email in enumerate(emails):
            problem = recipient_problem(email.to) or _content_problem(email)
            if problem:
                results[index] = SendResult(email.delivery_id, SendOutcome.FAILED, error=problem)
            else:
                sendable.append(index)
        candidates = [emails[index] for index in sendable]
        stop: SendResult | None = None
        for group in group_by_content(candidates, self.settings.batch_size):
            members = [sendable[position] for position in group]
            if stop is not None:
                for index in members:
                    results[index] = not_attempted(emails[index], stop)
                continue
            group_results, unreachable = self._send_group([emails[index] for index in members])
            for index, result in zip(members, group_results, strict=True):
                results[index] = result
            stop = next((r for r in group_results if unreachable or stops_batch(r)), None)
        done = [result for result in results if result is not None]
        assert len(done) == len(emails)
        return done

    def close(self) -> None:
        """Nothing to release: python-http-client opens a connection per request."""

    # -- one request -----------------------------------------------------------------------

    def _send_group(self, emails: Sequence[OutgoingEmail]) -> tuple[list[SendResult], bool]:
        """Results for one request's emails, and whether SendGrid could not be reached."""
        answer = self._post(build_payload(emails, sandbox_mode=self.settings.sandbox_mode))
        ids = [email.delivery_id for email in emails]
        if answer.status is None:
            if not answer.written:
                error = f"SendGrid {self.settings.host} not reached: {answer.failure}"
                return [SendResult(i, SendOutcome.RETRY, error=error) for i in ids], True
            error = f"no answer from SendGrid after the request was sent: {answer.failure}"
            log.warning("sendgrid: %d deliveries unknown: %s", len(ids), answer.failure)
            return [SendResult(i, SendOutcome.UNKNOWN, error=error) for i in ids], False
        status = answer.status
        if 200 <= status < 300:
            message_id = _header(answer.headers, "X-Message-Id") or None
            return [
                SendResult(i, SendOutcome.SENT, provider_message_id=message_id, status=status)
                for i in ids
            ], False
        errors = _errors(answer.body)
        text = "; ".join(
            f"{field}: {message}" if field else message for field, message in errors
        ) or (answer.body.decode("utf-8", "replace")[:300] or http.client.responses.get(status, ""))
        error = f"SendGrid answered {status}: {text}"
        if status == 429:
            delay = self._retry_after(answer.headers)
            return [
                SendResult(i, SendOutcome.RETRY, error=error, retry_after=delay, status=status)
                for i in ids
            ], False
        if status in (401, 403, 404, 405):
            hint = "[sendgrid] api_key" if status in (401, 403) else "[sendgrid] host"
            log.error("sendgrid: %s (check %s)", error, hint)
            return [
                SendResult(
                    i, SendOutcome.RETRY, error=f"{error} (check {hint})", fatal=True, status=status
                )
                for i in ids
            ], False
        if status >= 500:
            log.warning("sendgrid: %d deliveries unknown: %s", len(ids), error)
            return [SendResult(i, SendOutcome.UNKNOWN, error=error, status=status) for i in ids], (
                False
            )
        if status in (400, 413) and len(emails) > 1:
            return self._find_culprits(emails, status, errors)
        return [SendResult(i, SendOutcome.FAILED, error=error, status=status) for i in ids], False

    def _find_culprits(
        self, emails: Sequence[OutgoingEmail], status: int, errors: list[tuple[str, str]]
    ) -> tuple[list[SendResult], bool]:
        """A request with several personalizations was rejected as a whole (nothing sent):
        fail only the emails the errors point at and send the others again."""
        blamed: dict[int, list[str]] = {}
        shared = False
        for field, message in errors:
            match = _PERSONALIZATION_FIELD.match(field)
            if match and int(match.group(1)) < len(emails):
                blamed.setdefault(int(match.group(1)), []).append(f"{field}: {message}")
            elif field and field != "null":
                shared = True
        if blamed:
            results: list[SendResult | None] = [None] * len(emails)
            for index, messages in blamed.items():
                results[index] = SendResult(
                    emails[index].delivery_id,
                    SendOutcome.FAILED,
                    error=f"SendGrid answered {status}: {'; '.join(messages)}",
                    status=status,
                )
            rest = [index for index in range(len(emails)) if index not in blamed]
            unreachable = False
            if rest:
                again, unreachable = self._send_group([emails[index] for index in rest])
                for index, result in zip(rest, again, strict=True):
                    results[index] = result
            return [result for result in results if result is not None], unreachable
        if shared:  # a field every personalization shares (from, content, ...)
            text = "; ".join(f"{field}: {message}" for field, message in errors)
            return [
                SendResult(
                    email.delivery_id,
                    SendOutcome.FAILED,
                    error=f"SendGrid answered {status}: {text}",
                    status=status,
                )
                for email in emails
            ], False
        middle = len(emails) // 2
        first, unreachable = self._send_group(emails[:middle])
        stop = next((r for r in first if unreachable or stops_batch(r)), None)
        if stop is not None:
            return first + [not_attempted(email, stop) for email in emails[middle:]], unreachable
        second, unreachable = self._send_group(emails[middle:])
        return first + second, unreachable

    def _post(self, payload: dict[str, Any]) -> _Answer:
        try:
            response = self.api.send(payload)
        except ApiHTTPError as error:
            return _Answer(error.status_code, _plain_headers(error.headers), error.body or b"")
        except urllib.error.URLError as error:
            # urllib wraps only what fails before the request is fully written (connect,
            # TLS, send); nothing can have been sent.
            return _Answer(None, {}, b"", failure=_reason(error.reason), written=False)
        except (OSError, http.client.HTTPException) as error:
            # Raised while waiting for or reading the answer: the request was sent.
            return _Answer(None, {}, b"", failure=_reason(error))
        return _Answer(response.status_code, _plain_headers(response.headers), b"")

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        retry_after = _header(headers, "Retry-After")
        if retry_after:
            try:
                return max(0.0, float(retry_after))
            except ValueError:
                try:
                    return max(0.0, parsedate_to_datetime(retry_after).timestamp() - self.clock())
                except (TypeError, ValueError):
                    pass
        reset = _header(headers, "X-RateLimit-Reset")
        if reset:
            try:
                return max(0.0, float(reset) - self.clock())
            except ValueError:
                pass
        return None


def build_payload(emails: Sequence[OutgoingEmail], *, sandbox_mode: bool = False) -> dict[str, Any]:
    """The mail/send body for emails that share ``content_key`` (the first one's content is
    used): one personalization per email, in order."""
    first = emails[0]
    sender = parse_address(first.from_addr)
    mail = Mail(
        from_email=_email(From, sender.addr_spec, sender.display_name),
        subject=clean_header_text(first.subject),
    )
    text, html = clean_body(first.text), clean_body(first.html)
    if text:
        mail.add_content(text, "text/plain")
    if html:
        mail.add_content(html, "text/html")
    if first.reply_to:
        reply_to = parse_address(first.reply_to)
        mail.reply_to = _email(ReplyTo, reply_to.addr_spec, reply_to.display_name)
    for index, email in enumerate(emails):
        personalization = Personalization()
        personalization.add_to(_email(To, envelope_recipient(email.to), ""))
        for name, value in list_headers(email):
            personalization.add_header(Header(name, value))
        personalization.add_custom_arg(CustomArg("delivery_id", email.delivery_id))
        for key, value in email.custom_args.items():
            personalization.add_custom_arg(CustomArg(key, value))
        for tag, value in email.substitutions.items():
            personalization.add_substitution(Substitution(tag, value))
        mail.add_personalization(personalization, index=index)
    if sandbox_mode:
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
    payload: dict[str, Any] = mail.get()
    return payload


def _email(kind: Any, address: str, name: str) -> Any:
    """A helper Email object set field by field: its constructor would re-parse the address
    with parseaddr and drop anything without an '@' (then SendGrid should judge it)."""
    email = kind()
    email.email = address
    if name:
        email.name = name
    return email


def _content_problem(email: OutgoingEmail) -> str | None:
    if not clean_header_text(email.subject):
        return "empty subject"
    if not clean_body(email.text) and not clean_body(email.html):
        return "empty email: no text and no html"
    return None


def _errors(body: bytes) -> list[tuple[str, str]]:
    """SendGrid's ``{"errors": [{"field", "message"}]}`` as (field, message) pairs."""
    try:
        document = json.loads(body)
    except ValueError:
        return []
    items = document.get("errors") if isinstance(document, dict) else None
    if not isinstance(items, list):
        return []
    pairs = []
    for item in items:
        if isinstance(item, dict):
            field = item.get("field")
            pairs.append(("" if field in (None, "null") else str(field), str(item.get("message"))))
    return pairs


def _plain_headers(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    return {str(name).lower(): str(value) for name, value in headers.items()}


def _header(headers: Mapping[str, str], name: str) -> str:
    return headers.get(name.lower(), "").strip()


def _reason(error: object) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__
