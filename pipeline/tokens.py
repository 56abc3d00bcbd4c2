"""Signed tokens for links in emails: bound to one subscriber and one purpose.

itsdangerous signs ``[subscriber id, email fingerprint]`` with a salt per purpose, so a
token for one purpose never works for another, and one issued before an email change no
longer matches. Unsubscribe tokens never expire (a 400-day-old email must still let its
reader leave); every other purpose has a maximum age. Old keys can be listed for rotation:
new tokens are signed with the first, any listed key verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

# purpose → maximum age in seconds (None: never expires)
PURPOSES: dict[str, int | None] = {
    "unsubscribe": None,
    "manage": 60 * 60 * 24 * 30,  # preference links from emails
    "view": None,  # "view in browser" of a personal digest
    "confirm": 60 * 60 * 48,  # double opt-in
}


class TokenError(Exception):
    """The token is bad, for another purpose, stale, or expired (``expired`` says which)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True)
class TokenSubject:
    subscriber_id: int
    fingerprint: str  # of the email the token was issued to


@lru_cache(maxsize=1024)  # an email's links are signed one after another for one address
def fingerprint(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]


_TIMESTAMP = struct.Struct(">Q")
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# Text that JSON writes as it is, between quotes.
_JSON_AS_IS = re.compile(r"[A-Za-z0-9 ._:/-]*")
# Below this many bytes of JSON a token is not compressed (see _TokenSigner).
_COMPRESS_FROM = 96


def _timestamp() -> int:
    """Seconds since the epoch, as itsdangerous stamps them (tests move it)."""
    return int(time.time())


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class _TokenSigner:
    """``URLSafeTimedSerializer(key, salt).dumps`` with the key derived once.

    A send job signs three links per email; itsdangerous builds a serializer, derives the
    key (SHA-1 of salt + "signer" + secret) and a fresh HMAC for each, and tries zlib on
    every payload: about 40 µs a token. This writes its format (compact JSON, a leading dot
    and zlib when that is shorter, timestamp, HMAC-SHA1, URL-safe base64) from a keyed HMAC
    copied per token. zlib is tried only from ``_COMPRESS_FROM`` bytes: a link's payload
    (id, 16 hex digits, a short extra) is shorter, and compression seldom shortens so little
    text. When it would have, the token differs from itsdangerous's only by being
    uncompressed, and verifies the same. Reading stays with itsdangerous; tests compare the
    bytes with itsdangerous's (and check the uncompressed exceptions verify).
    """

    def __init__(self, secret: str, salt: str) -> None:
        derived = hashlib.sha1(salt.encode() + b"signer" + secret.encode()).digest()
        self._mac = hmac.new(derived, digestmod=hashlib.sha1)
        self._stamped: tuple[int, bytes] = (-1, b"")  # a second and its encoded stamp

    def dumps(self, data: Any) -> str:
        return self.dumps_json(_COMPACT_JSON(data).encode())

    def dumps_json(self, text: bytes) -> str:
        """``dumps`` of the value whose compact JSON is ``text``."""
        payload = _b64(text)
        if len(text) >= _COMPRESS_FROM:
            compressed = zlib.compress(text)
            if len(compressed) < len(text) - 1:
                payload = b"." + _b64(compressed)
        now = _timestamp()
        if self._stamped[0] != now:  # a send signs thousands of links in the same second
            self._stamped = (now, b"." + _b64(_TIMESTAMP.pack(now).lstrip(b"\x00")))
        value = payload + self._stamped[1]
        mac = self._mac.copy()
        mac.update(value)
        return (value + b"." + _b64(mac.digest())).decode()


class Tokens:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys or not keys[0]:
            raise ValueError("at least one secret key is needed")
        self.keys = list(keys)
        self._signers = {
            purpose: _TokenSigner(self.keys[0], f"qasid.{purpose}") for purpose in PURPOSES
        }

    def _serializer(self, purpose: str) -> URLSafeTimedSerializer:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        # itsdangerous signs with the last key and verifies with any: put the newest last.
        return URLSafeTimedSerializer(list(reversed(self.keys)), salt=f"qasid.{purpose}")

    def make(self, purpose: str, subscriber_id: int, email: str, extra: str = "") -> str:
        signer = self._signers.get(purpose)
        if signer is None:
            raise ValueError(f"unknown token purpose {purpose!r}")
        mark = fingerprint(email)
        if type(subscriber_id) is int and _JSON_AS_IS.fullmatch(extra):
            # what the compact JSON of the three is: the fingerprint is hex digits, and
            # the extra (an edition id, or nothing) holds nothing JSON escapes
            return signer.dumps_json(f'[{subscriber_id},"{mark}","{extra}"]'.encode())
        return signer.dumps([subscriber_id, mark, extra])

    def read(self, purpose: str, token: str) -> tuple[TokenSubject, str]:
        """The subject (and extra payload) of a valid token; TokenError otherwise."""
        try:
            data = self._serializer(purpose).loads(token, max_age=PURPOSES[purpose])
        except SignatureExpired as error:
            raise TokenError("this link has expired", expired=True) from error
        except BadSignature as error:
            raise TokenError("this link is not valid") from error
        if not (isinstance(data, list) and len(data) == 3 and isinstance(data[0], int)):
            raise TokenError("this link is not valid")
        return TokenSubject(int(data[0]), str(data[1])), str(data[2])


def load_or_create_secret(path: Path) -> str:
    """A per-installation secret for development and the demo, kept in var/ (0600)."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret, encoding="utf-8")
    return secret
