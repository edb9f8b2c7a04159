"""Sizes on the command line and in tables.

The gateway takes a size as an integer in GiB or a string with a unit (``512M``, ``2G``,
``1T``) at MiB granularity; views report MiB. The client parses a size itself so that a
typo is a usage error before anything is sent, and sends it as whole MiB (``"1536M"``).
"""

from __future__ import annotations

import re
from fractions import Fraction

_SIZE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?:(?P<unit>[mgt])(?:i?b)?)?", re.IGNORECASE)
_MIB_PER = {"": 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_size(text: str) -> int:
    """MiB in ``text``: a bare number is GiB; ValueError says what is wrong."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a size: use GiB as a number (2) or a unit (512M, 2G, 1T)"
        )
    mib = Fraction(match["number"]) * _MIB_PER[(match["unit"] or "").lower()]
    if mib.denominator != 1:
        raise ValueError(f"{text!r} is not a whole number of MiB")
    return int(mib)


def wire_size(mib: int) -> str:
    """How a size in MiB is sent to the gateway."""
    return f"{mib}M"


def format_mib(mib: int) -> str:
    """A short human size: ``512M``, ``2G``, ``1.5G``, ``1T`` (rounded to one decimal)."""
    for unit, factor in (("T", 1024 * 1024), ("G", 1024)):
        if mib >= factor:
            number = f"{mib / factor:.1f}".removesuffix(".0")
            return f"{number}{unit}"
    return f"{mib}M" if mib else "0"
