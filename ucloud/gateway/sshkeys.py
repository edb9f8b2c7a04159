"""OpenSSH public keys, validated before they enter the log.

A key is one line ``<type> <base64 body> [comment]``. The type must be one OpenSSH knows
(ed25519, RSA, ECDSA on the NIST curves, and the security-key variants); the body must be
strict base64 of the SSH wire format whose embedded type string equals the line's type and
whose fields have the sizes the type requires. Options (``from=...``) are not part of a
public key and are refused. What is stored is the normalised line.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

from ucloud.errors import InputError

FIELD = "public_key"
MAX_LENGTH = 16 * 1024
MIN_RSA_BITS = 2048

# type -> the curve name inside ECDSA keys
_ECDSA = {
    "ecdsa-sha2-nistp256": ("nistp256", 65),
    "ecdsa-sha2-nistp384": ("nistp384", 97),
    "ecdsa-sha2-nistp521": ("nistp521", 133),
}
SK_ED25519 = "sk-ssh-ed25519@openssh.com"
SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
KEY_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", SK_ED25519, SK_ECDSA, *_ECDSA})


@dataclass(frozen=True, slots=True)
class PublicKey:
    type: str
    body: str
    comment: str

    def line(self) -> str:
        return f"{self.type} {self.body} {self.comment}".rstrip()


def parse_public_key(text: str) -> PublicKey:
    """The key in ``text``; InputError (field ``public_key``) saying what is wrong."""
    text = text.strip()
    if not text:
        raise InputError(FIELD, "is empty")
    if len(text) > MAX_LENGTH:
        raise InputError(FIELD, f"is longer than {MAX_LENGTH} characters")
    if "\n" in text or "\r" in text:
        raise InputError(FIELD, "must be a single line")
    parts = text.split(None, 2)
    key_type = parts[0]
    if key_type not in KEY_TYPES:
        known = ", ".join(sorted(KEY_TYPES))
        raise InputError(FIELD, f"unknown key type {key_type[:40]!r} (expected one of {known})")
    if len(parts) < 2:
        raise InputError(FIELD, "has no key data after the type")
    body, comment = parts[1], (parts[2].strip() if len(parts) == 3 else "")
    if any(ord(c) < 32 or ord(c) == 127 for c in comment):
        raise InputError(FIELD, "comment contains control characters")
    try:
        blob = binascii.a2b_base64(body, strict_mode=True)
    except binascii.Error as exc:
        raise InputError(FIELD, f"key data is not valid base64: {exc}") from exc
    _check_blob(key_type, blob)
    return PublicKey(type=key_type, body=body, comment=comment)


def _check_blob(key_type: str, blob: bytes) -> None:
    reader = _Reader(blob)
    embedded = reader.string()
    if embedded != key_type.encode():
        found = embedded[:40].decode(errors="replace")
        raise InputError(FIELD, f"key data is of type {found!r}, not {key_type!r}")
    if key_type in ("ssh-ed25519", SK_ED25519):
        if len(reader.string()) != 32:
            raise InputError(FIELD, "ed25519 key must be 32 bytes")
    elif key_type == "ssh-rsa":
        exponent, modulus = reader.string(), reader.string()
        bits = int.from_bytes(modulus, "big").bit_length()
        if not exponent or int.from_bytes(exponent, "big") < 3:
            raise InputError(FIELD, "RSA exponent is invalid")
        if bits < MIN_RSA_BITS:
            raise InputError(FIELD, f"RSA key has {bits} bits; at least {MIN_RSA_BITS} are needed")
    else:
        curve, point_size = _ECDSA.get(key_type, ("nistp256", 65))
        if reader.string() != curve.encode():
            raise InputError(FIELD, f"ECDSA key is not on curve {curve}")
        point = reader.string()
        if len(point) != point_size or point[0] != 4:
            raise InputError(FIELD, f"ECDSA point must be {point_size} bytes, uncompressed")
    if key_type.startswith("sk-"):
        reader.string()  # the application, usually "ssh:"
    if not reader.done():
        raise InputError(FIELD, "key data has trailing bytes")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def string(self) -> bytes:
        if self.offset + 4 > len(self.data):
            raise InputError(FIELD, "key data is truncated")
        (length,) = struct.unpack_from(">I", self.data, self.offset)
        start = self.offset + 4
        if start + length > len(self.data):
            raise InputError(FIELD, "key data is truncated")
        self.offset = start + length
        return self.data[start : self.offset]

    def done(self) -> bool:
        return self.offset == len(self.data)
