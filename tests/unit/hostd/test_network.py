"""The pure parts of the Linux plumbing: names, groups, MACs, the router's networks."""

from __future__ import annotations

from typing import Any

import pytest

from ucloud.hostd.network import (
    Routed,
    bridge_mac,
    bridge_name,
    group_of,
    routed_of,
    router_address,
    vxlan_name,
)
from ucloud.projections.views import NetView


@pytest.mark.parametrize(
    ("vni", "prefix", "group"),
    [(1, "ff05::/104", "ff05::1"), (4096, "ff05::/104", "ff05::1000"),
     (16777215, "ff05::/104", "ff05::ff:ffff"), (17, "ff0e::ab00:0/104", "ff0e::ab00:11")],
)
def test_the_multicast_group_of_a_vni(vni: int, prefix: str, group: str) -> None:
    assert group_of(vni, prefix) == group


def test_names_fit_an_interface_name() -> None:
    assert (bridge_name(16777215), vxlan_name(16777215)) == ("br16777215", "vxlan16777215")
    assert len(vxlan_name(16777215)) <= 15


def test_bridge_macs_are_local_unicast_and_differ_per_host_and_vni() -> None:
    macs = {bridge_mac(host, vni) for host in ("h1", "h2") for vni in (1, 2, 3)}
    assert len(macs) == 6
    for mac in macs:
        first = int(mac[:2], 16)
        assert first & 0x02 and not first & 0x01 and mac.startswith("06:")
    assert bridge_mac("h1", 1) == bridge_mac("h1", 1)


@pytest.mark.parametrize(
    ("prefix", "address"),
    [("fd75:636c:6f75::/64", "fd75:636c:6f75::1"), ("2001:db8:0:7::/64", "2001:db8:0:7::1")],
)
def test_the_router_address(prefix: str, address: str) -> None:
    assert router_address(prefix) == address


def view(vni: int, ipam: Any, status: Any = "created", prefix: str = "fd00::/64") -> NetView:
    return NetView(id=f"n{vni}", owner="a", name=f"n{vni}", ipam=ipam, status=status, vni=vni,
                   prefix=prefix if ipam != "none" else "")


def test_the_router_serves_created_manual_and_auto_networks() -> None:
    views = [view(3, "auto"), view(1, "manual"), view(2, "none"), view(4, "auto", "requested"),
             view(5, "auto", "deleting"), view(6, "auto", "failed")]
    assert routed_of(views) == [Routed(1, "fd00::/64", "manual"), Routed(3, "fd00::/64", "auto")]
