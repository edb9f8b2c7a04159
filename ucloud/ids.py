"""Identifiers: time-ordered UUIDv7 strings, and ids derived deterministically from others.

A handler reacting to event E derives the ids of what it appends from E's id, so a
redelivered E produces the same ids and the log's de-duplication drops the copy.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid


def new_id(now_ms: int | None = None) -> str:
    """A fresh UUIDv7 (48-bit millisecond timestamp, then randomness)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    return str(_v7(ms, rand))


def derive_id(parent: str, purpose: str) -> str:
    """A UUIDv7-shaped id that is a pure function of ``parent`` and ``purpose``.

    It keeps the parent's timestamp, so derived ids sort next to their cause.
    """
    try:
        ms = uuid.UUID(parent).int >> 80
    except ValueError:
        ms = 0
    digest = hashlib.blake2b(f"{parent}/{purpose}".encode(), digest_size=10).digest()
    return str(_v7(ms, int.from_bytes(digest, "big")))


def id_time_ms(value: str) -> int:
    """The millisecond timestamp inside a UUIDv7."""
    return uuid.UUID(value).int >> 80


def _v7(ms: int, rand80: int) -> uuid.UUID:
    rand_a = (rand80 >> 68) & 0xFFF
    rand_b = rand80 & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)
