"""The outgoing email and its RFC 5322 form (pipeline.core.mail): no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.mail import (
    SendOutcome,
    SendResult,
    build_mime,
    count_outcomes,
    group_by_content,
    message_id_for,
    parse_address,
    recipient_problem,
)
from tests.support.mail_samples import SENT_AT, UNSUBSCRIBE_BASE, make_email


def parsed(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, message_from_bytes(raw, policy=policy.default))


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    return cast(EmailMessage, part).get_content().replace("\r\n", "\n")


def test_message_is_multipart_alternative_with_text_then_html() -> None:
    message = parsed(build_mime(make_email()).as_bytes())
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert "Hello reader 101" in body_of(message, "plain")
    assert "Hello reader 101" in body_of(message, "html")


def test_every_contract_header_is_present() -> None:
    message = parsed(build_mime(make_email()).as_bytes())
    assert message["List-Unsubscribe"] == (
        "<https://qasid.example.org/u/tok101>, <mailto:unsubscribe+tok101@qasid.example.org>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "Qasid daily digest <daily.qasid.example.org>"
    assert message["Message-ID"] == "<delivery-101@qasid.example.org>"
    assert message["From"] == "Qasid digest <digest@qasid.example.org>"
    assert message["Reply-To"] == "editors@qasid.example.org"
    assert message["To"] == "reader@example.com"
    assert message["Subject"] == "Economy and sanctions: Pakistan digest, 3 March 2026"
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime == SENT_AT


def test_unsubscribe_link_and_postal_address_are_in_both_parts() -> None:
    message = parsed(build_mime(make_email()).as_bytes())
    for subtype in ("plain", "html"):
        body = body_of(message, subtype)
        assert UNSUBSCRIBE_BASE + "tok101" in body
        assert "1 Example Road, Lahore" in body


def test_message_id_is_stable_per_delivery() -> None:
    first = build_mime(make_email("7"))
    resent = build_mime(make_email("7", date=SENT_AT + timedelta(hours=1)))
    other = build_mime(make_email("8"))
    assert first["Message-ID"] == resent["Message-ID"] == "<delivery-7@qasid.example.org>"
    assert other["Message-ID"] != first["Message-ID"]
    assert message_id_for("7", "digest@qasid.example.org") == first["Message-ID"]


def test_message_is_seven_bit_with_crlf_and_short_lines() -> None:
    email = make_email(subject="Ürdu و English — a long subject " * 5, text="ünïcödé " * 200)
    raw = build_mime(email).as_bytes()
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert parsed(raw)["Subject"] == " ".join(("Ürdu و English — a long subject " * 5).split())


def test_a_long_unsubscribe_url_stays_a_url() -> None:
    # The stdlib folder would write a long URL as an RFC 2047 encoded-word; clients then
    # cannot find the link. It must stay verbatim.
    url = UNSUBSCRIBE_BASE + "x" * 300
    raw = build_mime(make_email(list_unsubscribe_url=url)).as_bytes()
    assert f"<{url}>".encode() in raw
    assert b"=?utf-8?" not in raw.split(b"\r\n\r\n")[0].lower()
    assert parsed(raw)["List-Unsubscribe"].startswith(f"<{url}>, <mailto:")


def test_without_mailto_the_header_has_the_https_link_only() -> None:
    message = build_mime(make_email(list_unsubscribe_mailto=""))
    assert message["List-Unsubscribe"] == "<https://qasid.example.org/u/tok101>"


def test_list_id_defaults_to_the_sender_domain() -> None:
    assert make_email(list_id="").list_id == "<qasid.qasid.example.org>"
    assert make_email(list_id="daily.example.org").list_id == "<daily.example.org>"


# -- header injection ----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "Breaking\r\nBcc: victim@example.net",
        "Breaking\nBcc: victim@example.net",
        "Breaking\rBcc: victim@example.net",
        "Breaking\u2028Bcc: victim@example.net",
        "Breaking\x85Bcc: victim@example.net",
        "Breaking\r\n\r\n<script>evil</script>",
    ],
)
def test_header_injection_in_subject_adds_no_header(payload: str) -> None:
    raw = build_mime(make_email(subject=payload)).as_bytes()
    message = parsed(raw)
    assert "Bcc" not in message
    assert not any(line.lower().startswith(b"bcc:") for line in raw.split(b"\r\n"))
    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    assert message["Subject"].startswith("Breaking ")
    assert len(message.keys()) == len(build_mime(make_email()).keys())


def test_header_injection_in_the_from_name_adds_no_header() -> None:
    email = make_email(from_addr="Qasid\r\nBcc: victim@example.net <digest@qasid.example.org>")
    raw = build_mime(email).as_bytes()
    message = parsed(raw)
    assert "Bcc" not in message
    assert message["From"].addresses[0].addr_spec == "digest@qasid.example.org"
    assert message["From"].addresses[0].display_name == "Qasid Bcc: victim@example.net"


def test_header_injection_through_a_substitution_or_extra_header_adds_no_header() -> None:
    email = make_email(
        subject="Hello %%name%%",
        substitutions={"%%name%%": "Ali\r\nBcc: victim@example.net"},
        headers={"X-Edition": "7\r\nBcc: victim@example.net"},
    )
    message = parsed(build_mime(email).as_bytes())
    assert "Bcc" not in message
    assert message["Subject"] == "Hello Ali Bcc: victim@example.net"
    assert message["X-Edition"] == "7 Bcc: victim@example.net"


@pytest.mark.parametrize(
    "to",
    [
        "reader@example.com\r\nBcc: victim@example.net",
        "reader@example.com, victim@example.net",
        "Reader <reader@example.com>",
        " reader@example.com",
        "",
        "rëader@example.com",
    ],
)
def test_a_recipient_that_is_not_one_bare_address_is_refused(to: str) -> None:
    assert recipient_problem(to)
    with pytest.raises(ValueError):
        build_mime(make_email(to=to))


def test_an_internationalised_recipient_domain_is_idna_encoded() -> None:
    assert recipient_problem("reader@bücher.example") is None
    assert build_mime(make_email(to="reader@bücher.example"))["To"] == (
        "reader@xn--bcher-kva.example"
    )


def test_bodies_with_nul_lone_surrogates_and_bare_cr_still_encode() -> None:
    email = make_email(text="a\x00b \ud800 c\rd\r\ne", html="<p>\udfff</p>")
    message = parsed(build_mime(email).as_bytes())
    assert body_of(message, "plain").startswith("ab \ufffd c\nd\ne")


# -- construction checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"delivery_id": "../../etc/passwd"}, "delivery_id"),
        ({"delivery_id": ""}, "delivery_id"),
        ({"from_addr": "a@example.org, b@example.org"}, "not one email address"),
        ({"from_addr": "digest"}, "not one email address"),
        ({"reply_to": "nobody"}, "not one email address"),
        ({"date": datetime(2026, 3, 3, 7, 0)}, "timezone-aware"),
        ({"list_unsubscribe_url": "http://qasid.example.org/u/x"}, "https"),
        ({"list_unsubscribe_url": "javascript:alert(1)"}, "https"),
        ({"list_unsubscribe_url": "https://qasid.example.org/u/a b"}, "printable"),
        ({"list_unsubscribe_url": "https://qasid.example.org/u/a>,<x"}, "printable"),
        ({"list_unsubscribe_mailto": "unsubscribe@example.org"}, "mailto"),
        ({"headers": {"Bcc": "victim@example.net"}}, "set by the mailer"),
        ({"headers": {"List-Unsubscribe": "<https://evil>"}}, "set by the mailer"),
        ({"headers": {"X-Bad Name": "1"}}, "field name"),
        ({"custom_args": {"delivery_id": "9"}}, "delivery_id"),
        ({"custom_args": {"edition_id": 7}}, "strings"),
        ({"substitutions": {"%%x%%": "y" * 10_001}}, "10000"),
        ({"message_id": "not-a-message-id"}, "message_id"),
    ],
)
def test_malformed_fields_from_code_or_config_raise(
    override: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        make_email(**override)


def test_plain_http_unsubscribe_links_are_allowed_on_loopback_for_the_demo() -> None:
    for url in ("http://127.0.0.1:8000/u/x", "http://localhost:8000/u/x", "http://[::1]/u/x"):
        assert make_email(list_unsubscribe_url=url).list_unsubscribe_url == url


def test_email_mappings_are_read_only_copies() -> None:
    custom = {"edition_id": "1"}
    email = make_email(custom_args=custom)
    custom["edition_id"] = "2"
    assert email.custom_args["edition_id"] == "1"
    with pytest.raises(TypeError):
        email.custom_args["edition_id"] = "3"  # type: ignore[index]


def test_parse_address_accepts_quoted_names() -> None:
    address = parse_address('"Qasid, the digest" <digest@qasid.example.org>')
    assert (address.display_name, address.addr_spec) == (
        "Qasid, the digest",
        "digest@qasid.example.org",
    )


# -- substitutions and grouping ------------------------------------------------------------


def test_substitution_values_are_not_substituted_again() -> None:
    email = make_email(
        text="%%a%% %%b%%", html="<p>%%a%%</p>", substitutions={"%%a%%": "%%b%%", "%%b%%": "B"}
    )
    assert body_of(parsed(build_mime(email).as_bytes()), "plain").strip() == "%%b%% B"


def test_emails_group_by_content_before_substitution_within_the_limit() -> None:
    emails = [
        make_email("1"),
        make_email("2", subject="Another subject"),
        make_email("3"),
        make_email("4"),
        make_email("5", to="other@example.com"),
    ]
    assert group_by_content(emails, limit=1000) == [[0, 2, 3, 4], [1]]
    assert group_by_content(emails, limit=2) == [[0, 2], [1], [3, 4]]
    assert group_by_content([], limit=5) == []


def test_a_fatal_result_is_always_a_retry() -> None:
    with pytest.raises(ValueError):
        SendResult("1", SendOutcome.FAILED, fatal=True)
    results = [SendResult("1", SendOutcome.SENT), SendResult("2", SendOutcome.RETRY, fatal=True)]
    assert count_outcomes(results) == {"sent": 1, "retry": 1}


def test_an_email_pickles_whole_and_stays_read_only() -> None:
    import pickle
    from types import MappingProxyType

    email = make_email(custom_args={"edition_id": "7"}, substitutions={"-reason-": "You asked."})
    again = pickle.loads(pickle.dumps(email))  # send helpers hand emails to the job
    assert again == email and again.message_id == email.message_id
    assert isinstance(again.substitutions, MappingProxyType)
    with pytest.raises(TypeError):
        again.custom_args["edition_id"] = "8"  # type: ignore[index]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["https://", "http://", "https:", "ftp://", "", "//"])
    .flatmap(
        lambda scheme: st.tuples(
            st.just(scheme),
            st.sampled_from(["qasid.example", "127.0.0.1:8000", "[::1]", "u@h.example", ""]),
            st.text("/?#a.@:", max_size=6),
        )
    )
    .map("".join)
)
def test_an_unsubscribe_url_is_judged_by_its_whole_scheme_and_host(url: str) -> None:
    """Judged once per origin (the text before the path): as the whole URL's scheme and
    host would judge it."""
    from urllib.parse import urlsplit

    from pipeline.core.mail import _is_loopback, check_unsubscribe_url

    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = (parts.scheme == "https" and bool(host)) or (
        parts.scheme == "http" and _is_loopback(host)
    )
    try:
        check_unsubscribe_url(url)
    except ValueError:
        assert not secure
    else:
        assert secure
