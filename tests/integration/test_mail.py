"""Mail backends against real parts: .eml files on disk, aiosmtpd on 127.0.0.1, and the
``sendgrid`` package against a local server that validates each request against SendGrid's
published API description (RELIABILITY M-01, X-05, D-03..D-06 at the mailer's level)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import cast

import pytest

from pipeline.adapters.mail import build_mailer
from pipeline.adapters.mail.outbox import OutboxMailer
from pipeline.adapters.mail.sendgrid_api import SendGridMailer
from pipeline.adapters.mail.smtp import SmtpMailer
from pipeline.core.errors import ConfigError
from pipeline.core.mail import OutgoingEmail, SendOutcome, build_mime
from pipeline.settings import SendGridSettings, SmtpSettings, load_settings
from tests.support.mail_samples import UNSUBSCRIBE_BASE, make_email
from tests.support.sendgrid_stub import Reply, SendGridStub, validate_mail_send
from tests.support.smtp_server import SmtpServer, self_signed_certificate, server_tls_context

pytestmark = pytest.mark.timeout(30)

CONTRACT_HEADERS = ("Message-ID", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post")


def parsed(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, message_from_bytes(raw, policy=policy.default))


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    return cast(EmailMessage, part).get_content().replace("\r\n", "\n")


def assert_is_the_contract_message(message: EmailMessage, email: OutgoingEmail) -> None:
    """M-01: multipart/alternative, both parts, every header, the personal parts in both."""
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    token = f"tok{email.delivery_id}"
    assert message["List-Unsubscribe"] == (
        f"<{UNSUBSCRIBE_BASE}{token}>, <mailto:unsubscribe+{token}@qasid.example.org>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Qasid daily digest <daily.qasid.example.org>"
    assert message["Message-ID"] == f"<delivery-{email.delivery_id}@qasid.example.org>"
    assert message["From"] == "Qasid digest <digest@qasid.example.org>"
    assert message["Reply-To"] == "editors@qasid.example.org"
    assert message["To"] == email.to
    assert message["Subject"] == email.subject
    assert message["Date"].datetime == email.date
    for subtype in ("plain", "html"):
        body = body_of(message, subtype)
        assert f"Hello reader {email.delivery_id}," in body
        assert UNSUBSCRIBE_BASE + token in body
        assert "1 Example Road, Lahore" in body
    assert "\n.\n.a line that starts with a dot" in body_of(message, "plain")


def same_except_boundary(received: bytes, sent: bytes) -> bool:
    """The bytes match once each side's random MIME boundary is neutralised."""
    a, b = parsed(received).get_boundary(), parsed(sent).get_boundary()
    assert a is not None and b is not None
    return received.replace(a.encode(), b"B") == sent.replace(b.encode(), b"B")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- outbox --------------------------------------------------------------------------------


def test_outbox_writes_one_contract_eml_per_email(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path / "outbox")
    emails = [make_email("1"), make_email("2", to="second@example.com")]
    results = mailer.send_batch(emails)
    assert [r.outcome for r in results] == [SendOutcome.SENT, SendOutcome.SENT]
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["1.eml", "2.eml"]
    for email, result in zip(emails, results, strict=True):
        assert result.provider_message_id == f"{email.delivery_id}.eml"
        raw = (tmp_path / "outbox" / f"{email.delivery_id}.eml").read_bytes()
        assert same_except_boundary(raw, build_mime(email).as_bytes())
        assert_is_the_contract_message(parsed(raw), email)


def test_outbox_resend_of_a_delivery_overwrites_its_file(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path)
    mailer.send(make_email("5", subject="First attempt"))
    result = mailer.send(make_email("5", subject="Second attempt"))
    assert result.outcome is SendOutcome.SENT
    assert [p.name for p in tmp_path.iterdir()] == ["5.eml"]
    message = parsed((tmp_path / "5.eml").read_bytes())
    assert message["Subject"] == "Second attempt"
    assert message["Message-ID"] == "<delivery-5@qasid.example.org>"


def test_outbox_never_leaves_a_half_written_eml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailer = OutboxMailer(tmp_path)
    mailer.send(make_email("9", subject="The good version"))
    good = (tmp_path / "9.eml").read_bytes()

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    results = mailer.send_batch([make_email("9", subject="Never seen"), make_email("10")])
    assert [r.outcome for r in results] == [SendOutcome.RETRY, SendOutcome.RETRY]
    assert all(r.fatal for r in results)
    assert "No space left on device" in results[0].error
    assert results[1].error.startswith("not attempted")
    assert [p.name for p in tmp_path.iterdir()] == ["9.eml"]  # no temp file, no 10.eml
    assert (tmp_path / "9.eml").read_bytes() == good


def test_outbox_that_cannot_be_created_is_fatal(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    result = OutboxMailer(tmp_path / "taken" / "outbox").send(make_email())
    assert (result.outcome, result.fatal) == (SendOutcome.RETRY, True)
    assert "[mail] outbox_dir" in result.error


def test_outbox_fails_a_bad_recipient_and_goes_on(tmp_path: Path) -> None:
    results = OutboxMailer(tmp_path).send_batch(
        [make_email("1", to="a@example.com, b@example.com"), make_email("2")]
    )
    assert [r.outcome for r in results] == [SendOutcome.FAILED, SendOutcome.SENT]
    assert [p.name for p in tmp_path.iterdir()] == ["2.eml"]


# -- SMTP ----------------------------------------------------------------------------------


def smtp_mailer(server: SmtpServer, **overrides: object) -> SmtpMailer:
    fields: dict[str, object] = {"host": "127.0.0.1", "port": server.port, "timeout": 2.0}
    fields.update(overrides)
    return SmtpMailer(SmtpSettings.model_validate(fields), helo_name="qasid.example.org")


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> Iterator[SmtpMailer]:
    mailer = smtp_mailer(smtp_server)
    yield mailer
    mailer.close()


def test_smtp_messages_arrive_whole_with_every_header(
    smtp_server: SmtpServer, smtp: SmtpMailer
) -> None:
    emails = [make_email("1"), make_email("2", to="second@example.com")]
    results = smtp.send_batch(emails)
    assert [r.outcome for r in results] == [SendOutcome.SENT, SendOutcome.SENT]
    assert [r.provider_message_id for r in results] == ["Q00001", "Q00002"]
    assert smtp_server.sessions == 1  # one connection for the batch
    for email, received in zip(emails, smtp_server.messages, strict=True):
        assert received.mail_from == "digest@qasid.example.org"
        assert received.rcpt_tos == (email.to,)
        assert same_except_boundary(received.data, build_mime(email).as_bytes())
        assert_is_the_contract_message(received.message(), email)


def test_smtp_unknown_user_fails_and_suppresses_while_the_batch_goes_on(
    smtp_server: SmtpServer, smtp: SmtpMailer
) -> None:
    smtp_server.rcpt_replies["gone@example.com"] = (
        "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
    )
    smtp_server.rcpt_replies["busy@example.com"] = "450 4.2.1 Mailbox busy, try later"
    smtp_server.rcpt_replies["policy@example.com"] = "550 5.7.1 Message rejected as spam"
    emails = [
        make_email("1", to="gone@example.com"),
        make_email("2", to="busy@example.com"),
        make_email("3", to="policy@example.com"),
        make_email("4", to="fine@example.com"),
    ]
    gone, busy, policy_, fine = smtp.send_batch(emails)
    assert (gone.outcome, gone.suppress, gone.status) == (SendOutcome.FAILED, True, 550)
    assert "User unknown" in gone.error
    assert (busy.outcome, busy.suppress) == (SendOutcome.RETRY, False)
    assert (policy_.outcome, policy_.suppress) == (SendOutcome.FAILED, False)
    assert fine.outcome is SendOutcome.SENT
    assert [m.rcpt_tos for m in smtp_server.messages] == [("fine@example.com",)]
    assert smtp_server.sessions == 1


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ("451 4.3.0 Try again later", SendOutcome.RETRY),
        ("554 5.6.0 Content rejected", SendOutcome.FAILED),
    ],
)
def test_smtp_final_reply_after_data_is_classified(
    smtp_server: SmtpServer, smtp: SmtpMailer, reply: str, outcome: SendOutcome
) -> None:
    smtp_server.data_reply = reply
    result = smtp.send(make_email())
    assert (result.outcome, result.status, result.suppress) == (outcome, int(reply[:3]), False)
    smtp_server.data_reply = None
    assert smtp.send(make_email("2")).outcome is SendOutcome.SENT  # connection still usable


def test_smtp_connection_dropped_after_data_is_unknown(
    smtp_server: SmtpServer, smtp: SmtpMailer
) -> None:
    smtp_server.data_action = "drop"
    result = smtp.send(make_email())
    assert result.outcome is SendOutcome.UNKNOWN
    assert "after the message was sent" in result.error
    assert len(smtp_server.dropped) == 1  # the server did get it: truly ambiguous
    smtp_server.data_action = None
    assert smtp.send(make_email("2")).outcome is SendOutcome.SENT  # reconnects


def test_smtp_no_final_reply_within_the_timeout_is_unknown(smtp_server: SmtpServer) -> None:
    smtp_server.data_action, smtp_server.stall_seconds = "stall", 3.0
    mailer = smtp_mailer(smtp_server, timeout=0.5)
    started = time.monotonic()
    result = mailer.send(make_email())
    assert result.outcome is SendOutcome.UNKNOWN
    assert "timed out" in result.error
    assert time.monotonic() - started < 2.0
    mailer.close()


def test_smtp_server_down_is_retry_and_the_batch_stops() -> None:
    mailer = SmtpMailer(SmtpSettings(host="127.0.0.1", port=closed_port(), timeout=1.0))
    results = mailer.send_batch([make_email("1"), make_email("2"), make_email("3")])
    assert [r.outcome for r in results] == [SendOutcome.RETRY] * 3
    assert not any(r.fatal for r in results)
    assert "refused" in results[0].error.lower()
    assert all(r.error.startswith("not attempted") for r in results[1:])


def test_smtp_reconnects_when_the_server_closed_an_idle_connection() -> None:
    with SmtpServer(idle_timeout=0.3) as server:
        mailer = smtp_mailer(server)
        assert mailer.send(make_email("1")).outcome is SendOutcome.SENT
        time.sleep(0.6)  # the server closes the idle connection
        assert mailer.send(make_email("2")).outcome is SendOutcome.SENT
        assert (server.sessions, len(server.messages)) == (2, 2)
        mailer.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def test_smtp_starttls_and_auth(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    users = {"qasid": "s3cret"}
    with SmtpServer(
        tls_context=server_tls_context(cert, key), require_starttls=True, users=users
    ) as server:
        good = smtp_mailer(
            server, starttls=True, ca_file=str(cert), username="qasid", password="s3cret"
        )
        assert good.send(make_email()).outcome is SendOutcome.SENT
        assert len(server.messages) == 1
        good.close()

        wrong = smtp_mailer(
            server, starttls=True, ca_file=str(cert), username="qasid", password="wrong"
        )
        results = wrong.send_batch([make_email("2"), make_email("3")])
        assert [(r.outcome, r.fatal) for r in results] == [(SendOutcome.RETRY, True)] * 2
        assert "535" in results[0].error and "[smtp] username" in results[0].error

        untrusted = smtp_mailer(server, starttls=True, username="qasid", password="s3cret")
        result = untrusted.send(make_email("4"))
        assert (result.outcome, result.fatal) == (SendOutcome.RETRY, True)
        assert "certificate" in result.error.lower()
        assert len(server.messages) == 1


def test_smtp_implicit_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    with SmtpServer(tls_context=server_tls_context(cert, key), implicit_tls=True) as server:
        mailer = smtp_mailer(server, tls=True, ca_file=str(cert))
        assert mailer.send(make_email()).outcome is SendOutcome.SENT
        mailer.close()
        assert len(server.messages) == 1


def test_smtp_starttls_is_never_skipped(smtp_server: SmtpServer) -> None:
    mailer = smtp_mailer(smtp_server, starttls=True)  # this server offers no STARTTLS
    result = mailer.send(make_email())
    assert (result.outcome, result.fatal) == (SendOutcome.RETRY, True)
    assert "STARTTLS" in result.error
    assert smtp_server.messages == []


# -- SendGrid ------------------------------------------------------------------------------


def sendgrid_mailer(stub: SendGridStub, **overrides: object) -> SendGridMailer:
    fields: dict[str, object] = {"host": stub.url, "api_key": stub.api_key, "timeout": 2.0}
    fields.update(overrides)
    return SendGridMailer(SendGridSettings.model_validate(fields))


def test_sendgrid_payload_passes_the_published_schema_and_carries_the_contract(
    sendgrid_stub: SendGridStub,
) -> None:
    email = make_email("1")
    result = sendgrid_mailer(sendgrid_stub).send(email)
    [request] = sendgrid_stub.requests
    assert (request.status, request.errors) == (202, [])
    assert result.outcome is SendOutcome.SENT
    assert result.provider_message_id == request.message_id
    payload = request.payload
    assert "custom_args" not in payload  # typed string top level: on the personalization
    assert request.headers["authorization"] == "Bearer SG.test-key"
    assert request.headers["user-agent"].startswith("sendgrid/")
    [delivery] = sendgrid_stub.deliveries()
    assert delivery.custom_args == {"delivery_id": "1", "edition_id": "2026-03-03-daily"}
    assert delivery.headers == {
        "Message-ID": "<delivery-1@qasid.example.org>",
        "List-Id": "Qasid daily digest <daily.qasid.example.org>",
        "List-Unsubscribe": (
            "<https://qasid.example.org/u/tok1>, <mailto:unsubscribe+tok1@qasid.example.org>"
        ),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert [part["type"] for part in payload["content"]] == ["text/plain", "text/html"]
    assert payload["reply_to"] == {"email": "editors@qasid.example.org"}
    assert payload["from"] == {"email": "digest@qasid.example.org", "name": "Qasid digest"}
    for body in (delivery.text, delivery.html):
        assert "Hello reader 1," in body and UNSUBSCRIBE_BASE + "tok1" in body
    assert delivery.subject == email.subject


def test_sendgrid_identical_content_shares_one_request(sendgrid_stub: SendGridStub) -> None:
    emails = [make_email(str(i), to=f"reader{i}@example.com") for i in range(5)]
    emails.insert(2, make_email("99", subject="Instant alert: sanctions"))
    results = sendgrid_mailer(sendgrid_stub).send_batch(emails)
    assert all(r.outcome is SendOutcome.SENT for r in results)
    assert [len(r.payload["personalizations"]) for r in sendgrid_stub.requests] == [5, 1]
    deliveries = {d.to: d for d in sendgrid_stub.deliveries()}
    for i in range(5):
        delivery = deliveries[f"reader{i}@example.com"]
        assert delivery.custom_args["delivery_id"] == str(i)
        assert f"{UNSUBSCRIBE_BASE}tok{i}" in delivery.text
        assert f"<{UNSUBSCRIBE_BASE}tok{i}>" in delivery.headers["List-Unsubscribe"]
    assert len({r.provider_message_id for r in results}) == 2


def test_sendgrid_batches_respect_batch_size(sendgrid_stub: SendGridStub) -> None:
    emails = [make_email(str(i), to=f"reader{i}@example.com") for i in range(7)]
    sendgrid_mailer(sendgrid_stub, batch_size=3).send_batch(emails)
    assert [len(r.payload["personalizations"]) for r in sendgrid_stub.requests] == [3, 3, 1]


def test_sendgrid_429_returns_retry_with_the_delay_then_sends_once(
    sendgrid_stub: SendGridStub,
) -> None:
    sendgrid_stub.script(Reply.rate_limited(retry_after=1))
    mailer = sendgrid_mailer(sendgrid_stub)
    email = make_email("1")
    first = mailer.send(email)
    assert (first.outcome, first.retry_after, first.status) == (SendOutcome.RETRY, 1.0, 429)
    second = mailer.send(email)  # what the ledger does once not_before has passed
    assert second.outcome is SendOutcome.SENT
    assert [r.status for r in sendgrid_stub.requests] == [429, 202]
    assert [d.to for d in sendgrid_stub.deliveries()] == ["reader@example.com"]


def test_sendgrid_429_with_ratelimit_reset_stops_the_batch(sendgrid_stub: SendGridStub) -> None:
    now = 1_800_000_000.0
    sendgrid_stub.script(Reply.rate_limited(reset_at=now + 2))
    mailer = SendGridMailer(
        SendGridSettings(host=sendgrid_stub.url, api_key=sendgrid_stub.api_key), clock=lambda: now
    )
    emails = [make_email("1"), make_email("2", subject="Other content")]
    results = mailer.send_batch(emails)
    assert [(r.outcome, r.retry_after) for r in results] == [(SendOutcome.RETRY, 2.0)] * 2
    assert len(sendgrid_stub.requests) == 1  # the second was not attempted


def test_sendgrid_500_is_unknown(sendgrid_stub: SendGridStub) -> None:
    sendgrid_stub.always = Reply.server_error()
    result = sendgrid_mailer(sendgrid_stub).send(make_email())
    assert (result.outcome, result.status) == (SendOutcome.UNKNOWN, 500)


def test_sendgrid_no_answer_within_the_timeout_is_unknown(sendgrid_stub: SendGridStub) -> None:
    sendgrid_stub.script(Reply(202, stall=3.0))
    started = time.monotonic()
    result = sendgrid_mailer(sendgrid_stub, timeout=0.5).send(make_email())
    assert result.outcome is SendOutcome.UNKNOWN
    assert "timed out" in result.error
    assert time.monotonic() - started < 2.0
    assert len(sendgrid_stub.requests) == 1  # written once, never silently re-sent


def test_sendgrid_400_for_one_recipient_fails_only_that_one(sendgrid_stub: SendGridStub) -> None:
    emails = [make_email(str(i), to=f"reader{i}@example.com") for i in range(50)]
    emails[17] = make_email("17", to="not-an-email")
    results = sendgrid_mailer(sendgrid_stub).send_batch(emails)
    assert results[17].outcome is SendOutcome.FAILED
    assert "personalizations.17.to.0.email" in results[17].error
    assert [r.outcome for i, r in enumerate(results) if i != 17] == [SendOutcome.SENT] * 49
    assert [r.status for r in sendgrid_stub.requests] == [400, 202]
    assert len(sendgrid_stub.deliveries()) == 49


def test_sendgrid_400_without_a_field_is_narrowed_down(sendgrid_stub: SendGridStub) -> None:
    bad = {"errors": [{"field": None, "message": "something in this request"}]}
    sendgrid_stub.script(Reply(400, body=bad), Reply(202), Reply(400, body=bad))
    emails = [make_email(str(i), to=f"reader{i}@example.com") for i in range(3)]
    results = sendgrid_mailer(sendgrid_stub).send_batch(emails)
    # 3 rejected -> [0] sent, [1, 2] rejected -> [1] and [2] each sent alone.
    assert [r.outcome for r in results] == [SendOutcome.SENT] * 3
    assert [len(r.payload["personalizations"]) for r in sendgrid_stub.requests] == [3, 1, 2, 1, 1]


def test_sendgrid_401_is_fatal_and_nothing_is_sent(sendgrid_stub: SendGridStub) -> None:
    mailer = SendGridMailer(SendGridSettings(host=sendgrid_stub.url, api_key="SG.revoked"))
    results = mailer.send_batch([make_email("1"), make_email("2", subject="Other")])
    assert [(r.outcome, r.fatal) for r in results] == [(SendOutcome.RETRY, True)] * 2
    assert results[0].status == 401 and "[sendgrid] api_key" in results[0].error
    assert len(sendgrid_stub.requests) == 1
    assert sendgrid_stub.deliveries() == []


def test_sendgrid_unreachable_is_retry(sendgrid_stub: SendGridStub) -> None:
    mailer = SendGridMailer(
        SendGridSettings(host=f"http://127.0.0.1:{closed_port()}", api_key="SG.x", timeout=1)
    )
    results = mailer.send_batch([make_email("1"), make_email("2", subject="Other")])
    assert [r.outcome for r in results] == [SendOutcome.RETRY] * 2
    assert not any(r.fatal for r in results)
    assert "not reached" in results[0].error


def test_sendgrid_sandbox_mode(sendgrid_stub: SendGridStub) -> None:
    sendgrid_mailer(sendgrid_stub, sandbox_mode=True).send(make_email())
    [request] = sendgrid_stub.requests
    assert request.payload["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert request.status == 202


def test_sendgrid_header_injection_stays_in_one_field(sendgrid_stub: SendGridStub) -> None:
    email = make_email(
        subject="Breaking\r\nBcc: victim@example.net",
        from_addr="Qasid\r\nBcc: victim@example.net <digest@qasid.example.org>",
        headers={"X-Edition": "7\r\nBcc: victim@example.net"},
    )
    assert sendgrid_mailer(sendgrid_stub).send(email).outcome is SendOutcome.SENT
    [request] = sendgrid_stub.requests
    assert request.payload["subject"] == "Breaking Bcc: victim@example.net"
    assert request.payload["from"]["name"] == "Qasid Bcc: victim@example.net"
    assert sendgrid_stub.deliveries()[0].headers["X-Edition"] == "7 Bcc: victim@example.net"


def test_the_stub_rejects_what_sendgrid_rejects(sendgrid_stub: SendGridStub) -> None:
    assert validate_mail_send({})
    assert validate_mail_send({"from": {"email": "a@example.org"}, "personalizations": []})
    top_level = {
        "from": {"email": "a@example.org"},
        "personalizations": [{"to": [{"email": "b@example.org"}]}],
        "custom_args": {"delivery_id": "1"},
    }
    [error] = validate_mail_send(top_level)
    assert error["field"] == "custom_args"
    del top_level["custom_args"]
    assert validate_mail_send(top_level) == []


# -- choosing a backend --------------------------------------------------------------------


def test_build_mailer_follows_the_mail_backend_setting(
    tmp_path: Path, sendgrid_stub: SendGridStub
) -> None:
    outbox = build_mailer(load_settings(environ={}, root=tmp_path))
    assert isinstance(outbox, OutboxMailer)
    assert outbox.outbox_dir == tmp_path / "var" / "outbox"

    environ = {
        "QASID_MAIL_BACKEND": "sendgrid",
        "QASID_SENDGRID_HOST": sendgrid_stub.url,
        "SENDGRID_API_KEY": sendgrid_stub.api_key,
    }
    mailer = build_mailer(load_settings(environ=environ, root=tmp_path))
    assert isinstance(mailer, SendGridMailer)
    assert mailer.send(make_email()).outcome is SendOutcome.SENT
    assert len(sendgrid_stub.deliveries()) == 1

    smtp = build_mailer(load_settings(environ={"QASID_MAIL_BACKEND": "smtp"}, root=tmp_path))
    assert isinstance(smtp, SmtpMailer)
    assert smtp.helo_name == "localhost"  # the domain of the default from_address


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"QASID_MAIL_BACKEND": "sendgrid"}, "sendgrid.api_key"),
        ({"QASID_MAIL_BACKEND": "smtp", "QASID_SMTP_USERNAME": "u"}, "smtp.password"),
        ({"QASID_MAIL_BACKEND": "smtp", "QASID_SMTP_PASSWORD": "p"}, "smtp.username"),
        (
            {"QASID_MAIL_BACKEND": "smtp", "QASID_SMTP_TLS": "true", "QASID_SMTP_STARTTLS": "1"},
            "smtp.tls",
        ),
        (
            {
                "QASID_MAIL_BACKEND": "smtp",
                "QASID_SMTP_HOST": "mail.example.org",
                "QASID_SMTP_USERNAME": "u",
                "QASID_SMTP_PASSWORD": "p",
            },
            "smtp.starttls",
        ),
        ({"QASID_MAIL_BACKEND": "smtp", "QASID_SMTP_CA_FILE": "missing.pem"}, "smtp.ca_file"),
        ({"QASID_MAIL_BACKEND": "pigeon"}, "mail.backend"),
        ({"QASID_SENDGRID_HOST": "api.sendgrid.com"}, "sendgrid.host"),
        ({"QASID_SENDGRID_HOST": "https://api.sendgrid.com/v3"}, "sendgrid.host"),
        ({"QASID_SENDGRID_BATCH_SIZE": "1001"}, "sendgrid.batch_size"),
        ({"QASID_MAIL_FROM_ADDRESS": "digest"}, "mail.from_address"),
        ({"QASID_MAIL_FROM_ADDRESS": "a@example.org, b@example.org"}, "mail.from_address"),
    ],
)
def test_a_wrong_mail_setting_names_its_key(
    tmp_path: Path, environ: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_mailer(load_settings(environ=environ, root=tmp_path))
    assert caught.value.key == key
    assert str(caught.value).startswith(key)


def test_sendgrid_429_without_a_delay_still_stops_the_batch(sendgrid_stub: SendGridStub) -> None:
    sendgrid_stub.script(Reply(429, body={"errors": [{"field": None, "message": "slow down"}]}))
    emails = [make_email("1"), make_email("2", subject="Other content")]
    results = sendgrid_mailer(sendgrid_stub).send_batch(emails)
    assert [(r.outcome, r.retry_after) for r in results] == [(SendOutcome.RETRY, None)] * 2
    assert results[1].error == "not attempted: SendGrid answered 429: slow down"
    assert len(sendgrid_stub.requests) == 1
