"""A real SMTP server for tests: aiosmtpd on 127.0.0.1, an ephemeral port, in a thread.

    with SmtpServer() as server:
        settings = SmtpSettings(host="127.0.0.1", port=server.port)
        ... send ...
        [message] = server.messages          # ReceivedMessage: envelope + raw bytes
        server.rcpt_replies["gone@example.com"] = "550 5.1.1 <gone@example.com>: user unknown"
        server.data_action = "drop"          # close the connection once the message is in
        server.data_action = "stall"         # answer only after ``stall_seconds``
        server.data_reply = "451 4.3.0 try again later"

TLS and AUTH: pass ``tls_context`` (STARTTLS offered; ``require_starttls`` refuses
plain-text transactions), ``implicit_tls`` for SMTPS, and ``users`` for AUTH PLAIN/LOGIN
(only after TLS), ``idle_timeout`` to close idle connections early.
``self_signed_certificate`` makes a certificate for 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly the bytes of the DATA section, dot-unstuffed
    queue_id: str

    def message(self) -> EmailMessage:
        return cast(EmailMessage, message_from_bytes(self.data, policy=policy.default))


class _EphemeralController(Controller):
    """aiosmtpd's Controller, bound to port 0; the real port is read back once listening."""

    def _trigger_server(self) -> None:
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpServer:
    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        users: dict[str, str] | None = None,
        idle_timeout: float = 300.0,
    ) -> None:
        self.host = host
        self.rcpt_replies: dict[str, str] = {}  # lower-cased address -> reply line
        self.data_reply: str | None = None  # answer the end of DATA with this
        self.data_action: Literal["drop", "stall"] | None = None
        self.stall_seconds = 5.0
        self.messages: list[ReceivedMessage] = []
        self.dropped: list[ReceivedMessage] = []  # received whole, then connection closed
        self.sessions = 0
        self._lock = threading.Lock()
        self._users = users
        kwargs: dict[str, Any] = {"decode_data": False, "timeout": idle_timeout}
        if tls_context is not None and not implicit_tls:
            kwargs.update(tls_context=tls_context, require_starttls=require_starttls)
        if users is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=True)
        self._controller = _EphemeralController(
            _Handler(self),
            hostname=host,
            port=0,
            ssl_context=tls_context if implicit_tls else None,
            server_hostname="smtp.test",
            **kwargs,
        )

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> Self:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _authenticate(
        self, server: SMTPProtocol, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self._users is None:
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        return AuthResult(success=self._users.get(login) == password, handled=False)

    def _record(self, envelope: Envelope, *, dropped: bool) -> ReceivedMessage:
        with self._lock:
            queue_id = f"Q{len(self.messages) + len(self.dropped) + 1:05d}"
            content = envelope.original_content or b""
            message = ReceivedMessage(
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                data=content if isinstance(content, bytes) else content.encode(),
                queue_id=queue_id,
            )
            (self.dropped if dropped else self.messages).append(message)
        return message


class _Handler:
    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: SMTPProtocol,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        with self.owner._lock:
            self.owner.sessions += 1
        return responses

    async def handle_RCPT(
        self,
        server: SMTPProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        reply = self.owner.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPProtocol, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        if owner.data_action == "drop":
            owner._record(envelope, dropped=True)
            cast(asyncio.Transport, server.transport).abort()
            return "421 4.3.0 connection dropped by the test server"
        if owner.data_action == "stall":
            await asyncio.sleep(owner.stall_seconds)
        if owner.data_reply:
            return owner.data_reply
        message = owner._record(envelope, dropped=False)
        return f"250 2.0.0 Ok: queued as {message.queue_id}"


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate PEM, key PEM) for ``host``, valid for a day; also the CA to trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context
