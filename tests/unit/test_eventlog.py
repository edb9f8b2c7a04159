"""Stream timestamps from nats-server: RFC 3339 with 0 to 9 fraction digits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ucloud.eventlog import _parse_time


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2026-11-21T06:10:57Z", 0),
        ("2026-11-21T06:10:57.0007Z", 700),
        ("2026-11-21T06:10:57.5Z", 500000),
        ("2026-11-21T06:10:57.123456Z", 123456),
        ("2026-11-21T06:10:57.123456789Z", 123456),
        ("2026-11-21T06:10:57.1+00:00", 100000),
    ],
)
def test_fraction_digits_of_any_length(text: str, micro: int) -> None:
    assert _parse_time(text) == datetime(2026, 11, 21, 6, 10, 57, micro, tzinfo=UTC)
