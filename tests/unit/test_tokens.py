"""Signed link tokens: the fast signer writes exactly what itsdangerous writes."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from pipeline.tokens import PURPOSES, TokenError, Tokens, fingerprint

keys = st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3)
extras = st.one_of(
    st.just(""),
    st.text(max_size=30),
    st.text("0123456789", max_size=9),  # an edition id: the fast path
    st.text("ab", min_size=40, max_size=200),
)


@settings(max_examples=300, deadline=None)
@given(
    keys=keys,
    purpose=st.sampled_from(sorted(PURPOSES)),
    subscriber_id=st.integers(min_value=0, max_value=2**53),
    email=st.emails(),
    extra=extras,
    now=st.integers(min_value=0, max_value=2**32),
)
def test_tokens_are_byte_identical_to_itsdangerous_and_read_back(
    keys: list[str],
    purpose: str,
    subscriber_id: int,
    email: str,
    extra: str,
    now: int,
) -> None:
    tokens = Tokens(keys)
    reference = URLSafeTimedSerializer(list(reversed(keys)), salt=f"qasid.{purpose}")
    with mock.patch("time.time", return_value=now + 0.5):
        expected = reference.dumps([subscriber_id, fingerprint(email), extra])
        made = tokens.make(purpose, subscriber_id, email, extra)
    payload = json.dumps(
        [subscriber_id, fingerprint(email), extra], ensure_ascii=False, separators=(",", ":")
    )
    if expected.startswith(".") and len(payload.encode()) < 96:
        # itsdangerous zlib'd a short payload; ours is plain and must still verify
        assert URLSafeTimedSerializer(keys[0], salt=f"qasid.{purpose}").loads(made) == [
            subscriber_id,
            fingerprint(email),
            extra,
        ]
    else:
        assert made == expected
    if PURPOSES[purpose] is None:  # expiring purposes would be stale at a random `now`
        subject, read_extra = tokens.read(purpose, made)
        assert (subject.subscriber_id, subject.fingerprint, read_extra) == (
            subscriber_id,
            fingerprint(email),
            extra,
        )


def test_a_compressible_payload_is_compressed_as_itsdangerous_does() -> None:
    tokens = Tokens(["secret"])
    extra = "x" * 500
    made = tokens.make("view", 7, "a@example.org", extra)
    assert made.startswith(".")  # itsdangerous marks a zlib payload with a leading dot
    assert tokens.read("view", made)[1] == extra


def test_a_token_for_one_purpose_fails_for_another_and_unknown_purposes_are_refused() -> None:
    tokens = Tokens(["secret"])
    made = tokens.make("manage", 1, "a@example.org")
    with pytest.raises(TokenError):
        tokens.read("unsubscribe", made)
    with pytest.raises(ValueError, match="unknown token purpose"):
        tokens.make("reset", 1, "a@example.org")


def test_new_tokens_are_signed_with_the_first_key_and_old_keys_still_verify() -> None:
    old = Tokens(["old"]).make("unsubscribe", 3, "a@example.org")
    rotated = Tokens(["new", "old"])
    assert rotated.read("unsubscribe", old)[0].subscriber_id == 3
    fresh = rotated.make("unsubscribe", 3, "a@example.org")
    assert Tokens(["new"]).read("unsubscribe", fresh)[0].subscriber_id == 3
    with pytest.raises(TokenError):
        Tokens(["old"]).read("unsubscribe", fresh)


def test_the_mailto_unsubscribe_link_names_the_token_as_urllib_quotes_it() -> None:
    from urllib.parse import quote

    from pipeline.delivery import _unsubscribe_mailto

    made = Tokens(["secret"]).make("unsubscribe", 7, "a@example.org", "x" * 40)
    for token in (made, "a.b_c-d~e", "odd token/é", ""):
        url = f"https://qasid.example/unsubscribe/{token}"
        expected = quote(f"unsubscribe {url.rsplit('/', 1)[-1]}")
        assert _unsubscribe_mailto("qasid.example", url) == (
            f"mailto:unsubscribe@qasid.example?subject={expected}"
        )
