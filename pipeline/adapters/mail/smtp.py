"""The SMTP backend: smtplib to a relay, with STARTTLS or implicit TLS and optional AUTH.

How each failure is classified (the ledger's next status in brackets):

- connection refused, DNS failure, connect or greeting timeout, 4xx greeting [retry];
  the rest of a batch is not attempted (the server is not there).
- TLS certificate or handshake error, STARTTLS or AUTH not offered, 535 bad credentials,
  530 authentication required [retry + fatal]: the configuration is wrong, stop the run.
  STARTTLS is never skipped when the server does not offer it.
- MAIL FROM, RCPT TO or DATA answered 4xx [retry]; 5xx [failed]. A 5xx RCPT with an
  addressing status (5.1.1 user unknown, 5.1.2 bad domain, 5.1.3 bad syntax, 5.1.6 moved,
  5.1.10 null MX, 5.2.1 disabled), or a bare 550/551/553 saying the user is unknown, also
  sets ``suppress``.
- the connection drops or times out before the DATA command was answered with 354 [retry]:
  the server cannot have queued a message it never received.
- the connection drops or times out after the 354, while the message or its final reply is
  in flight [unknown]: the server may have queued it (the ambiguous window of RELIABILITY 8).
- the final reply after the message: 250 [sent], 4xx [retry], 5xx [failed].

A connection is kept open between sends and reused; one that the server closed while idle is
reopened once, transparently, as long as the failure came before the message was sent.
"""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from pipeline.adapters.mail.base import not_attempted
from pipeline.core.mail import (
    OutgoingEmail,
    SendOutcome,
    SendResult,
    build_mime,
    envelope_recipient,
    parse_address,
    recipient_problem,
)
from pipeline.settings import SmtpSettings

log = logging.getLogger(__name__)

_ENHANCED_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_SUPPRESS_STATUS = {"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.2.1"}
_UNKNOWN_USER = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|"
    r"invalid (recipient|mailbox)|mailbox (unavailable|not found)|recipient address rejected",
    re.IGNORECASE,
)
_QUEUED_AS = re.compile(r"queued as ([A-Za-z0-9._-]{1,128})", re.IGNORECASE)
_FATAL_CODES = {530, 534, 535, 538}


class _ConnectFailed(Exception):
    """Opening or preparing the connection failed; ``result`` says how to treat it."""

    def __init__(self, fatal: bool, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.fatal = fatal
        self.status = status


class _Dropped(Exception):
    """The connection broke before the message was handed over (nothing was sent)."""


class SmtpMailer:
    """Sends through the SMTP server in ``[smtp]``; one connection, reused between sends."""

    def __init__(self, settings: SmtpSettings, *, helo_name: str = "localhost") -> None:
        if settings.tls and settings.starttls:
            raise ValueError("[smtp] tls and starttls exclude each other")
        self.settings = settings
        self.helo_name = settings.helo_name or helo_name
        self._connection: smtplib.SMTP | None = None

    # -- the Mailer protocol ---------------------------------------------------------------

    def send(self, email: OutgoingEmail) -> SendResult:
        return self._send(email)[0]

    def send_batch(self, emails: Sequence[OutgoingEmail]) -> list[SendResult]:
        """One connection for the whole batch. When the server cannot be reached, or the
        configuration is wrong, the emails after the first are not attempted."""
        results: list[SendResult] = []
        for index, email in enumerate(emails):
            result, unreachable = self._send(email)
            results.append(result)
            if unreachable or result.fatal:
                results.extend(not_attempted(rest, result) for rest in emails[index + 1 :])
                break
        return results

    def after_fork(self) -> None:
        """In a forked helper: forget the connection inherited from the job's process
        without a QUIT (the connection is still the job's); the helper opens its own."""
        self._connection = None

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- one email -------------------------------------------------------------------------

    def _send(self, email: OutgoingEmail) -> tuple[SendResult, bool]:
        """(result, True when the server could not be reached at all)."""
        problem = recipient_problem(email.to)
        if problem:
            return SendResult(email.delivery_id, SendOutcome.FAILED, error=problem), False
        payload = build_mime(email).as_bytes()
        sender = parse_address(email.from_addr).addr_spec
        recipient = envelope_recipient(email.to)
        for attempt in (1, 2):
            reused = self._connection is not None
            try:
                connection = self._connect()
            except _ConnectFailed as failure:
                return self._connect_failure(email, failure), True
            try:
                return self._transaction(connection, email, sender, recipient, payload), False
            except _Dropped as dropped:
                self._discard()
                if reused and attempt == 1:
                    log.debug("smtp: idle connection was closed (%s); reconnecting", dropped)
                    continue
                return (
                    SendResult(
                        email.delivery_id,
                        SendOutcome.RETRY,
                        error=f"SMTP server {self._where()} closed the connection before the "
                        f"message was sent: {dropped}",
                    ),
                    False,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(
        self,
        connection: smtplib.SMTP,
        email: OutgoingEmail,
        sender: str,
        recipient: str,
        payload: bytes,
    ) -> SendResult:
        try:
            code, reply = connection.mail(sender)
            if code != 250:
                return self._refused(connection, email, "MAIL FROM", code, reply)
            code, reply = connection.rcpt(recipient)
            if code not in (250, 251):
                return self._refused(connection, email, "RCPT TO", code, reply)
            code, reply = connection.docmd("DATA")
            if code != 354:
                return self._refused(connection, email, "DATA", code, reply)
        except OSError as error:  # smtplib's exceptions are OSErrors too
            raise _Dropped(_describe(error)) from error
        # From here on the server may queue the message even if we never hear back.
        try:
            connection.send(_dot_stuff(payload) + b".\r\n")
            code, reply = connection.getreply()
        except OSError as error:
            self._discard()
            log.warning(
                "smtp: delivery %s is unknown: %s after the message was sent",
                email.delivery_id,
                _describe(error),
            )
            return SendResult(
                email.delivery_id,
                SendOutcome.UNKNOWN,
                error=f"no answer from SMTP server {self._where()} after the message was "
                f"sent: {_describe(error)}",
            )
        text = _text(reply)
        if code == 250:
            queued = _QUEUED_AS.search(text)
            return SendResult(
                email.delivery_id,
                SendOutcome.SENT,
                provider_message_id=queued.group(1) if queued else email.message_id,
                status=code,
            )
        return self._classify(email, "end of DATA", code, text)

    def _refused(
        self, connection: smtplib.SMTP, email: OutgoingEmail, step: str, code: int, reply: bytes
    ) -> SendResult:
        if code == 421 or code < 0:
            self._discard()  # 421: the server is closing the connection
        else:
            try:
                connection.rset()
            except (OSError, smtplib.SMTPException):
                self._discard()
        return self._classify(email, step, code, _text(reply))

    def _classify(self, email: OutgoingEmail, step: str, code: int, text: str) -> SendResult:
        error = f"SMTP {step} answered {code} {text}".rstrip()
        if code in _FATAL_CODES:
            return SendResult(
                email.delivery_id, SendOutcome.RETRY, error=error, fatal=True, status=code
            )
        if 400 <= code < 500 or code < 0:
            return SendResult(email.delivery_id, SendOutcome.RETRY, error=error, status=code)
        suppress = step == "RCPT TO" and _says_address_is_bad(code, text)
        return SendResult(
            email.delivery_id, SendOutcome.FAILED, error=error, suppress=suppress, status=code
        )

    # -- the connection --------------------------------------------------------------------

    def _connect(self) -> smtplib.SMTP:
        if self._connection is not None:
            return self._connection
        settings = self.settings
        connection: smtplib.SMTP | None = None
        try:
            context = ssl.create_default_context(cafile=settings.ca_file or None)
            if settings.tls:
                connection = smtplib.SMTP_SSL(
                    settings.host,
                    settings.port,
                    local_hostname=self.helo_name,
                    timeout=settings.timeout,
                    context=context,
                )
            else:
                connection = smtplib.SMTP(
                    settings.host,
                    settings.port,
                    local_hostname=self.helo_name,
                    timeout=settings.timeout,
                )
            connection.ehlo_or_helo_if_needed()
            if settings.starttls:
                if not connection.has_extn("starttls"):
                    raise _ConnectFailed(
                        True, "the server does not offer STARTTLS ([smtp] starttls)"
                    )
                connection.starttls(context=context)
                connection.ehlo()
            if settings.username:
                connection.login(settings.username, settings.password)
        except _ConnectFailed:
            _close_quietly(connection)
            raise
        except smtplib.SMTPAuthenticationError as error:
            _close_quietly(connection)
            fatal = error.smtp_code >= 500
            raise _ConnectFailed(
                fatal,
                f"login as [smtp] username {settings.username!r} refused: "
                f"{error.smtp_code} {_text(error.smtp_error)}",
                error.smtp_code,
            ) from error
        except smtplib.SMTPNotSupportedError as error:
            _close_quietly(connection)
            raise _ConnectFailed(True, f"{error} (check [smtp] username, starttls, tls)") from error
        except smtplib.SMTPConnectError as error:  # the greeting was not 220
            _close_quietly(connection)
            raise _ConnectFailed(
                False, f"greeting {error.smtp_code} {_text(error.smtp_error)}", error.smtp_code
            ) from error
        except smtplib.SMTPResponseException as error:  # EHLO/HELO or STARTTLS refused
            _close_quietly(connection)
            raise _ConnectFailed(
                error.smtp_code >= 500,
                f"{error.smtp_code} {_text(error.smtp_error)}",
                error.smtp_code,
            ) from error
        except ssl.SSLError as error:  # certificate or handshake: never fall back to plain
            _close_quietly(connection)
            raise _ConnectFailed(True, f"TLS failed: {error}") from error
        except OSError as error:  # refused, unreachable, DNS, timeouts, disconnects
            _close_quietly(connection)
            raise _ConnectFailed(False, _describe(error)) from error
        self._connection = connection
        return connection

    def _connect_failure(self, email: OutgoingEmail, failure: _ConnectFailed) -> SendResult:
        message = f"SMTP server {self._where()}: {failure}"
        if failure.fatal:
            log.error("smtp: %s", message)
        return SendResult(
            email.delivery_id,
            SendOutcome.RETRY,
            error=message,
            fatal=failure.fatal,
            status=failure.status,
        )

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        _close_quietly(connection)

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"


def _says_address_is_bad(code: int, text: str) -> bool:
    enhanced = _ENHANCED_STATUS.match(text)
    if enhanced:
        return ".".join(enhanced.groups()) in _SUPPRESS_STATUS
    return code in (550, 551, 553) and bool(_UNKNOWN_USER.search(text))


def _dot_stuff(payload: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2): a line starting with '.' gets another '.'."""
    stuffed = re.sub(rb"(?m)^\.", b"..", payload)
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(reply.split())[:500]


def _describe(error: BaseException) -> str:
    if isinstance(error, socket.timeout | TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


def _close_quietly(connection: smtplib.SMTP | None) -> None:
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.close()
