"""Bearer tokens: HMAC-SHA256 signed, expiring claims; pure (the caller passes ``now``).

A token reads ``v1.<base64url claims JSON>.<base64url HMAC>``. The signature covers the
version and the claims. Verification refuses a wrong shape, a signature that does not
match (compared in constant time), and a token past its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec

from ucloud.errors import Unauthorized

VERSION = "v1"


class Claims(msgspec.Struct, frozen=True, kw_only=True):
    sub: str  # user name
    realm: str
    iat: int  # issued at, unix seconds
    exp: int  # expires at, unix seconds
    uid: str = ""  # the user's identity (``views.identity``): which user of that name


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Claims)


def sign(key: bytes, claims: Claims) -> str:
    payload = _b64(_encoder.encode(claims))
    return f"{VERSION}.{payload}.{_b64(_mac(key, payload))}"


def verify(key: bytes, token: str, now: float) -> Claims:
    """The token's claims; Unauthorized (field ``token``) saying why it is not accepted."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise Unauthorized("token", "malformed token")
    payload, signature = parts[1], parts[2]
    try:
        given = _unb64(signature)
    except ValueError as exc:
        raise Unauthorized("token", "malformed token") from exc
    if not hmac.compare_digest(given, _mac(key, payload)):
        raise Unauthorized("token", "bad token signature")
    try:
        claims = _decoder.decode(_unb64(payload))
    except (ValueError, msgspec.DecodeError) as exc:
        raise Unauthorized("token", "malformed token") from exc
    if claims.exp <= now:
        raise Unauthorized("token", "token expired")
    return claims


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, f"{VERSION}.{payload}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("not base64url") from exc
