"""A local SendGrid stand-in that checks every request against SendGrid's published API.

``SendGridStub`` is a real HTTP server on 127.0.0.1 (ephemeral port). ``POST /v3/mail/send``
is checked like this, in this order:

1. ``Authorization: Bearer <api_key>`` -> else 401 (SendGrid's error shape).
2. ``Content-Type: application/json`` and a JSON body -> else 400.
3. The body against the mail/send request schema of
   ``shared/testdata/sendgrid-oai/json/tsg_mail_v3.json`` (JSON Schema 2020-12, formats
   checked; ``email`` with the pattern Prism's ajv-formats uses), plus a few rules the real
   API enforces but the description does not state (non-empty personalizations, string
   custom_args values, headers SendGrid reserves) -> else 400 with
   ``{"errors": [{"field": "personalizations.3.to.0.email", "message": ...}]}``.
4. A valid request gets the next scripted ``Reply`` (``script``), else the ``always`` reply,
   else 202 with a fresh ``X-Message-Id``.

Scripted replies cover what Prism cannot: 429 with Retry-After or X-RateLimit-Reset, 500, and
a stall after the body was read (past the client's timeout)::

    stub.script(Reply.rate_limited(retry_after=1), Reply.rate_limited(retry_after=1))  # then 202
    stub.always = Reply(500)
    stub.script(Reply(202, stall=2.0))
    stub.api_key = "SG.other"            # every request now gets 401

Every request is recorded (``requests``); ``deliveries()`` lists, per personalization of every
request answered 2xx, what the recipient would get (substitutions applied).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SENDGRID_OAI_DIR = (
    Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "sendgrid-oai"
)
MAIL_SPEC = SENDGRID_OAI_DIR / "json" / "tsg_mail_v3.json"
_SPEC_URI = "urn:sendgrid-oai:tsg_mail_v3"
_REQUEST_SCHEMA = "#/components/requestBodies/PostMailSend/content/application~1json/schema"

# ajv-formats' "fast" email format, which Prism uses to validate format: email.
_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
    re.IGNORECASE,
)
# Headers the mail/send description says may not be set (compared lower-cased).
_RESERVED_HEADERS = {
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
}


def spec_available() -> bool:
    return MAIL_SPEC.is_file()


@cache
def _validator() -> Draft202012Validator:
    spec = json.loads(MAIL_SPEC.read_text(encoding="utf-8"))
    registry: Registry[Any] = Registry().with_resource(
        _SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012)
    )
    checker = FormatChecker()
    checker.checks("email")(lambda value: not isinstance(value, str) or bool(_EMAIL.match(value)))
    return Draft202012Validator(
        {"$ref": _SPEC_URI + _REQUEST_SCHEMA}, registry=registry, format_checker=checker
    )


def validate_mail_send(payload: Any) -> list[dict[str, str | None]]:
    """SendGrid-style errors for a mail/send body; empty when it is valid."""
    errors: list[dict[str, str | None]] = []
    for error in sorted(_validator().iter_errors(payload), key=lambda e: list(map(str, e.path))):
        path = ".".join(str(part) for part in error.absolute_path)
        errors.append({"field": path or None, "message": error.message})
    if errors or not isinstance(payload, dict):
        return errors
    # What the real API enforces beyond the description.
    personalizations = payload.get("personalizations", [])
    if not personalizations:
        errors.append({"field": "personalizations", "message": "at least one is required"})
    for index, personalization in enumerate(personalizations):
        for key, value in personalization.get("custom_args", {}).items():
            if not isinstance(value, str):
                errors.append(
                    {
                        "field": f"personalizations.{index}.custom_args.{key}",
                        "message": "custom_args values must be strings",
                    }
                )
        errors.extend(
            _header_errors(f"personalizations.{index}.headers", personalization.get("headers", {}))
        )
    errors.extend(_header_errors("headers", payload.get("headers", {})))
    types = [part.get("type") for part in payload.get("content", [])]
    if "text/plain" in types and types.index("text/plain") != 0:
        errors.append({"field": "content", "message": "text/plain must come first"})
    return errors


def _header_errors(where: str, headers: Mapping[str, Any]) -> list[dict[str, str | None]]:
    errors: list[dict[str, str | None]] = []
    for name, value in headers.items():
        if name.lower() in _RESERVED_HEADERS:
            errors.append({"field": f"{where}.{name}", "message": "this header is reserved"})
        elif not isinstance(value, str) or "\r" in value or "\n" in value:
            errors.append({"field": f"{where}.{name}", "message": "must be a one-line string"})
    return errors


@dataclass(frozen=True)
class Reply:
    """How the stub answers a valid request. ``stall``: having read the whole body, wait
    this many seconds before answering (the client has usually given up by then)."""

    status: int = 202
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # JSON-serialisable; None means no body
    stall: float = 0.0

    @classmethod
    def rate_limited(
        cls, *, retry_after: float | None = None, reset_at: float | None = None
    ) -> Reply:
        headers = {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0"}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        if reset_at is not None:
            headers["X-RateLimit-Reset"] = str(int(reset_at))
        return cls(429, headers, {"errors": [{"field": None, "message": "too many requests"}]})

    @classmethod
    def server_error(cls) -> Reply:
        return cls(500, body={"errors": [{"field": None, "message": "internal error"}]})


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    payload: Any  # the parsed JSON, or None
    status: int  # what the stub answered
    errors: list[dict[str, str | None]]
    message_id: str | None  # X-Message-Id given with a 2xx


@dataclass(frozen=True)
class Delivery:
    """One personalization of an accepted request, as its recipient would get it."""

    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]
    custom_args: dict[str, str]
    message_id: str | None
    from_email: str


class SendGridStub:
    def __init__(self, api_key: str = "SG.test-key", host: str = "127.0.0.1") -> None:
        self.api_key = api_key
        self.host = host
        self.always: Reply | None = None
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting and inspection ---------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Answer the next valid requests with these, in order; then the default."""
        with self._lock:
            self._script.extend(replies)

    @property
    def url(self) -> str:
        assert self._server is not None, "stub not started"
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def deliveries(self) -> list[Delivery]:
        out: list[Delivery] = []
        for record in self.requests:
            if not 200 <= record.status < 300:
                continue
            payload = record.payload
            content = {part["type"]: part["value"] for part in payload.get("content", [])}
            for personalization in payload["personalizations"]:
                subs = personalization.get("substitutions", {})
                for to in personalization["to"]:
                    out.append(
                        Delivery(
                            to=to["email"],
                            subject=_substitute(
                                personalization.get("subject", payload.get("subject", "")), subs
                            ),
                            text=_substitute(content.get("text/plain", ""), subs),
                            html=_substitute(content.get("text/html", ""), subs),
                            headers={
                                **payload.get("headers", {}),
                                **personalization.get("headers", {}),
                            },
                            custom_args=dict(personalization.get("custom_args", {})),
                            message_id=record.message_id,
                            from_email=payload["from"]["email"],
                        )
                    )
        return out

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        self._server = _Server((self.host, 0), _Handler)
        self._server.stub = self
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- called by the handler -------------------------------------------------------------

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[Reply, RecordedRequest]:
        payload: Any = None
        errors: list[dict[str, str | None]] = []
        reply: Reply
        if path.split("?")[0] != "/v3/mail/send":
            reply = _error(404, None, "not found")
        elif method != "POST":
            reply = _error(405, None, "method not allowed")
        elif headers.get("authorization") != f"Bearer {self.api_key}":
            reply = _error(
                401, None, "The provided authorization grant is invalid, expired, or revoked"
            )
        elif headers.get("content-type", "").split(";")[0].strip() != "application/json":
            reply = _error(400, None, "Content-Type should be application/json")
        else:
            try:
                payload = json.loads(body)
            except ValueError:
                reply = _error(400, None, "Bad Request (invalid_json)")
            else:
                errors = validate_mail_send(payload)
                if errors:
                    reply = Reply(400, body={"errors": errors})
                else:
                    with self._lock:
                        scripted = self._script.popleft() if self._script else None
                    reply = scripted or self.always or Reply(202)
        message_id = None
        if 200 <= reply.status < 300:
            message_id = reply.headers.get("X-Message-Id") or secrets.token_urlsafe(16)
            reply = Reply(
                reply.status, {**reply.headers, "X-Message-Id": message_id}, reply.body, reply.stall
            )
        record = RecordedRequest(
            method, path, headers, body, payload, reply.status, errors, message_id
        )
        with self._lock:
            self._records.append(record)
        return reply, record


def _error(status: int, field: str | None, message: str) -> Reply:
    return Reply(status, body={"errors": [{"field": field, "message": message}]})


def _substitute(text: str, substitutions: Mapping[str, str]) -> str:
    if not substitutions or not text:
        return text
    pattern = re.compile("|".join(re.escape(tag) for tag in sorted(substitutions, key=len)[::-1]))
    return pattern.sub(lambda match: substitutions[match.group(0)], text)


class _Server(ThreadingHTTPServer):
    stub: SendGridStub


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply, _ = self.server.stub._answer(self.command, self.path, headers, body)
        if reply.stall:
            self.server.stub._stop.wait(reply.stall)
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a stall past its timeout)

    do_POST = _handle
    do_GET = _handle
    do_PUT = _handle
    do_DELETE = _handle
    do_PATCH = _handle
