from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.client.sizes import format_mib, parse_size, wire_size
from ucloud.gateway.sizes import parse_size as gateway_parse_size


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("2", 2048),
        ("0", 0),
        ("512M", 512),
        ("512m", 512),
        ("2G", 2048),
        ("2GiB", 2048),
        ("2gb", 2048),
        ("1.5G", 1536),
        ("1T", 1024 * 1024),
        (" 20 G ", 20 * 1024),
    ],
)
def test_parse_size(text: str, mib: int) -> None:
    assert parse_size(text) == mib


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a size"),
        ("2X", "not a size"),
        ("-1G", "not a size"),
        ("100B", "not a size"),
        ("G", "not a size"),
        ("0.3M", "whole number of MiB"),
        ("1.0001G", "whole number of MiB"),
    ],
)
def test_a_bad_size_says_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_size(text)


@given(st.integers(min_value=0, max_value=1024**3))
def test_what_the_client_sends_the_gateway_reads_as_the_same_mib(mib: int) -> None:
    assert parse_size(wire_size(mib)) == mib
    assert gateway_parse_size(wire_size(mib), "ram") == mib


@pytest.mark.parametrize(
    ("mib", "text"),
    [
        (0, "0"),
        (512, "512M"),
        (1024, "1G"),
        (1536, "1.5G"),
        (20 * 1024, "20G"),
        (1024 * 1024, "1T"),
        (3 * 1024 * 1024 // 2, "1.5T"),
    ],
)
def test_format_mib(mib: int, text: str) -> None:
    assert format_mib(mib) == text


@given(st.integers(min_value=1, max_value=1024**3))
def test_a_formatted_size_is_within_five_percent(mib: int) -> None:
    text = format_mib(mib)
    shown = float(text[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[text[-1]]
    assert abs(shown - mib) <= mib * 0.05
