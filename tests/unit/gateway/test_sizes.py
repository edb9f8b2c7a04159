"""Sizes: GiB integers or unit strings, to MiB."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.errors import InputError
from ucloud.gateway.sizes import MAX_MIB, parse_positive_size, parse_size


@pytest.mark.parametrize(
    ("value", "mib"),
    [
        (20, 20 * 1024),
        (0, 0),
        ("512M", 512),
        ("512m", 512),
        ("512MiB", 512),
        ("2G", 2048),
        ("2 GiB", 2048),
        ("1.5G", 1536),
        ("1T", 1024 * 1024),
        ("0.5t", 512 * 1024),
        ("3", 3 * 1024),
    ],
)
def test_valid_sizes(value: int | str, mib: int) -> None:
    assert parse_size(value, "ram") == mib


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("512K", "not a size"),
        ("lots", "not a size"),
        ("-1G", "not a size"),
        ("", "not a size"),
        ("1.0001G", "whole number of MiB"),
        ("0.3M", "whole number of MiB"),
        (-2, "negative"),
        (True, "expected a size"),
        ("2048T", "larger than 1 PiB"),
    ],
)
def test_invalid_sizes_name_the_field(value: int | str, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_size(value, "ssd")
    assert caught.value.field == "ssd"
    assert reason in caught.value.reason


def test_positive_size_refuses_zero() -> None:
    with pytest.raises(InputError, match="greater than zero"):
        parse_positive_size("0M", "ram")


@given(st.integers(min_value=0, max_value=MAX_MIB))
def test_mib_round_trip(mib: int) -> None:
    assert parse_size(f"{mib}M", "ram") == mib
    if mib % 1024 == 0:
        assert parse_size(mib // 1024, "ram") == mib
