"""Sizes as users write them, in MiB as ucloud keeps them.

A size is an integer number of GiB (``20``), or a string with a unit: ``"512M"``,
``"2G"``, ``"1.5T"`` (``MiB``/``GiB``/``TiB`` and lower case are accepted too; a string
without a unit is GiB). The result must be a whole number of MiB and at most 1 PiB.
"""

from __future__ import annotations

import re
from fractions import Fraction

from ucloud.errors import InputError

_UNITS = {"m": 1, "g": 1024, "t": 1024 * 1024}
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?:(?P<unit>[mgt])(?:i?b)?)?\s*$", re.I)
MAX_MIB = 1024**3


def parse_size(value: int | str, field: str) -> int:
    """The size in MiB; InputError naming ``field`` when it is not a valid size."""
    if isinstance(value, bool):
        raise InputError(field, "expected a size such as 20 (GiB) or \"512M\"")
    if isinstance(value, int):
        mib = Fraction(value) * _UNITS["g"]
    else:
        match = _SIZE.match(value)
        if match is None:
            raise InputError(
                field, f"{value!r} is not a size: use GiB (20) or a unit M, G or T (\"512M\")"
            )
        unit = (match["unit"] or "g").lower()
        mib = Fraction(match["number"]) * _UNITS[unit]
    if mib.denominator != 1:
        raise InputError(field, f"{value!r} is not a whole number of MiB")
    if mib < 0:
        raise InputError(field, "must not be negative")
    if mib > MAX_MIB:
        raise InputError(field, f"{value!r} is larger than 1 PiB")
    return int(mib)


def parse_positive_size(value: int | str, field: str) -> int:
    mib = parse_size(value, field)
    if mib == 0:
        raise InputError(field, "must be greater than zero")
    return mib
