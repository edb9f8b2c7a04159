from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from ucloud.client.output import (
    render,
    render_events,
    render_hosts,
    render_keys,
    render_vm,
    render_vms,
    short_key,
    table,
    when,
)
from ucloud.events.types import Resources
from ucloud.projections.views import HostView, KeyView, NicView, VmView


def as_wire(view: msgspec.Struct) -> Any:
    """A view as the gateway sends it: msgspec JSON, decoded."""
    return json.loads(msgspec.json.encode(view))


VM = VmView(
    id="0194d3a0-0000-7000-8000-000000000001",
    owner="alice",
    name="web",
    spec=Resources(cpu=2, ram_mib=1536, ssd_mib=20 * 1024),
    image="debian-12",
    status="failed",
    nics=(NicView(network="lan", mac="02:00:00:00:00:01", address="2001:db8::1"),),
    reason="no host has 2 CPUs free",
)


def test_table_aligns_columns_and_leaves_no_trailing_blanks() -> None:
    text = table(("A", "LONGER"), [("wide cell", "x"), ("y", "")])
    assert text.splitlines() == ["A          LONGER", "wide cell  x", "y"]


def test_vm_list_shows_human_sizes_and_dashes_for_nothing() -> None:
    lines = render_vms([as_wire(VM)]).splitlines()
    assert lines[0].split() == ["ID", "NAME", "OWNER", "STATUS", "CPU", "RAM", "SSD", "HDD", "HOST"]
    assert lines[1].split() == [VM.id, "web", "alice", "failed", "2", "1.5G", "20G", "-", "-"]
    assert lines[0].index("NAME") == lines[1].index("web")


def test_vm_detail_names_the_reason_and_the_nics() -> None:
    text = render_vm(as_wire(VM))
    assert "status:   failed (no host has 2 CPUs free)" in text
    assert "nics:     lan 02:00:00:00:00:01 2001:db8::1" in text
    assert "ram:      1.5G" in text


def test_json_output_is_the_gateway_json_unchanged() -> None:
    data = [as_wire(VM)]
    assert json.loads(render(data, "json", render_vms)) == data


def test_renderers_tolerate_missing_fields() -> None:
    assert render_vms([{"id": "x"}]).splitlines()[1].split() == ["x", *["-"] * 8]
    assert "id:" in render_vm({})


def test_hosts_show_use_of_capacity_and_flags() -> None:
    host = HostView(
        id="h1",
        capacity=Resources(cpu=16, ram_mib=64 * 1024, ssd_mib=2 * 1024 * 1024),
        used=Resources(cpu=2, ram_mib=1536, ssd_mib=0),
        vms=("a", "b"),
        drained=True,
        router=True,
        address="2001:db8::10",
    )
    line = render_hosts([as_wire(host)]).splitlines()[1].split()
    assert line == [
        "h1", "up", "2/16", "1.5G/64G", "0/2T", "0/-", "2", "drained,router", "2001:db8::10"
    ]


def test_keys_are_shortened_but_recognisable() -> None:
    key = KeyView(id="k1", name="laptop", public_key="ssh-ed25519 " + "A" * 68 + " alice@laptop")
    assert short_key(key.public_key) == "ssh-ed25519 AAAAAAAA…AAAAAAAA alice@laptop"
    assert "k1  laptop  ssh-ed25519" in render_keys([as_wire(key)])


def test_events_table() -> None:
    line = {"seq": 7, "at": "2025-01-01T00:00:00Z", "actor": "alice", "type": "vm.requested",
            "correlation": "c", "causation": "c", "summary": "web 2 CPU"}
    assert render_events([line]).splitlines()[1].split()[:4] == [
        "7", "2025-01-01T00:00:00Z", "alice", "vm.requested"
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-11-21T06:22:43.130182Z", "2026-11-21T06:22:43Z"),
        ("2026-11-21T07:22:43+01:00", "2026-11-21T06:22:43Z"),
        ("2026-11-21T06:22:43", "2026-11-21T06:22:43"),
        ("yesterday", "yesterday"),
        (None, "-"),
    ],
)
def test_timestamps_are_shown_to_the_second_in_utc(value: str | None, shown: str) -> None:
    assert when(value) == shown
