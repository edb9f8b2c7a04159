"""The pure parts of the dashboard's streams and pages: frames, VM diffs, the month's days,
asset names and content types."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from ucloud.gateway.routes_invoice import month_window
from ucloud.gateway.routes_stream import frame, vm_changes
from ucloud.gateway.routes_ui import asset_path, content_type


def test_a_frame_is_one_named_event_of_one_line() -> None:
    assert frame("vm", b'{"id":"a"}') == b'event: vm\ndata: {"id":"a"}\n\n'


@pytest.mark.parametrize(
    ("sent", "now", "frames"),
    [
        ({}, {}, []),
        ({}, {"a": b"1"}, [frame("vm", b"1")]),
        ({"a": b"1"}, {"a": b"1"}, []),
        ({"a": b"1"}, {"a": b"2"}, [frame("vm", b"2")]),
        ({"a": b"1"}, {}, [frame("vm_deleted", b'{"id":"a"}')]),
        (
            {"a": b"1", "b": b"1"},
            {"b": b"2", "c": b"3"},
            [frame("vm", b"2"), frame("vm", b"3"), frame("vm_deleted", b'{"id":"a"}')],
        ),
    ],
)
def test_vm_changes_turn_what_was_sent_into_what_is(
    sent: dict[str, bytes], now: dict[str, bytes], frames: list[bytes]
) -> None:
    assert vm_changes(sent, now) == frames


def test_the_month_window_runs_from_the_first_by_days_to_now() -> None:
    now = datetime(2026, 3, 3, 12, 30, tzinfo=UTC)
    start, days = month_window(now)
    assert start == datetime(2026, 3, 1, tzinfo=UTC)
    assert [d[0].day for d in days] == [1, 2, 3]
    assert days[-1][1] == now
    assert days[0][1] == days[1][0]


def test_the_first_instant_of_a_month_has_no_days() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert month_window(now) == (now, [])


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("main-X.js", "text/javascript; charset=utf-8"),
        ("main-X.css", "text/css; charset=utf-8"),
        ("index.html", "text/html; charset=utf-8"),
        ("a.LEGAL.txt", "text/plain"),
        ("blob", "application/octet-stream"),
    ],
)
def test_content_types(name: str, media: str) -> None:
    assert content_type(name) == media


def test_asset_paths_stay_inside_the_assets(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "main-X.js").write_text("x")
    (tmp_path / "secret").write_text("no")
    assert asset_path(tmp_path, "main-X.js") == tmp_path / "assets" / "main-X.js"
    for bad in ("", "../secret", "..", ".hidden", "a/b", "missing.js", "..\\secret"):
        assert asset_path(tmp_path, bad) is None, bad
