"""The Linux plumbing in network namespaces of the test: segments, taps, router, anti-spoofing.

A "host" is a namespace with an ``underlay`` veth; the plumbing runs in it (a thread of
this process that lives there). Guests are namespaces whose ``eth0`` carries a VM's MAC,
plugged into the bridge by ``attach`` in place of the VM's tap (a link of the tap's name
that exists is taken as it is).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.multihost import (
    Namespace,
    Namespaces,
    guest,
    namespaces,
    ping,
    send_router_advert,
    wait_until,
)
from ucloud.config import Config, HostConfig, NetworkConfig
from ucloud.hostd.network import LinuxPlumbing, Routed, bridge_mac, router_address
from ucloud.hostd.plumbing import NicPlan
from ucloud.ids import new_id
from ucloud.net_addr import eui64, link_local

pytestmark = [pytest.mark.root, pytest.mark.netns]

ADDRESS = "fd00:5eed::2"
LAN, L2 = 4101, 4102
LAN_PREFIX, OTHER_PREFIX = "fd00:4101:0:1::/64", "fd00:4102:0:1::/64"


@pytest.fixture
def made() -> Iterator[Namespaces]:
    with namespaces() as spaces:
        yield spaces


def underlay_host(made: Namespaces) -> Namespace:
    host = made.add("h")
    host.sh("ip", "link", "add", "underlay", "mtu", "1600", "type", "veth", "peer", "name", "peer")
    host.sh("ip", "link", "set", "peer", "up")
    host.sh("ip", "link", "set", "underlay", "up")
    host.sh("ip", "-6", "addr", "add", f"{ADDRESS}/64", "dev", "underlay", "nodad")
    return host


def host_config(tmp_path: Path, **network: Any) -> Config:
    return Config(
        data_dir=str(tmp_path / "data"),
        host=HostConfig(id="h" + new_id()[-8:], address=ADDRESS, router=True),
        network=NetworkConfig(underlay="underlay", **network),
    )


def nic(vni: int, prefix: str, ipam: str, mac: str, index: int = 0) -> NicPlan:
    return NicPlan(vm=new_id(), index=index, network=new_id(), vni=vni, prefix=prefix, ipam=ipam,
                   mac=mac)


@pytest.fixture
def plumbing(made: Namespaces, tmp_path: Path) -> Iterator[tuple[Namespace, LinuxPlumbing]]:
    host = underlay_host(made)
    built = LinuxPlumbing(host_config(tmp_path, rdnss=["fd00:53::53"]))
    try:
        yield host, built
    finally:  # radvd lives in the namespace: it goes before the namespace does
        for vni in list(built.radvd.daemons):
            host.call(built.radvd.stop, vni)


def snapshot(host: Namespace) -> dict[str, Any]:
    """What the plumbing decides about links, sysctls and rules (no timers, no counters)."""
    links = json.loads(host.sh("ip", "-d", "-j", "link", "show"))
    out: dict[str, Any] = {}
    for link in links:
        name = link["ifname"]
        info = link.get("linkinfo", {})
        data = info.get("info_data", {})
        out[name] = {
            "kind": info.get("info_kind"), "master": link.get("master"), "mtu": link["mtu"],
            "address": link.get("address"), "up": "UP" in link["flags"],
            "vxlan": {k: data.get(k) for k in ("id", "group6", "link", "local6", "ttl", "port")}
            if info.get("info_kind") == "vxlan" else None,
            "sysctl": {
                key: host.sh("cat", f"/proc/sys/net/ipv6/conf/{name}/{key}").strip()
                for key in ("accept_ra", "autoconf", "disable_ipv6")
            },
            "addresses": sorted(host.addresses(name)),
        }
    out["nft"] = host.sh("nft", "list", "table", "bridge", "ucloud", check=False)
    return out


def test_attach_twice_changes_nothing_and_detach_removes_it_all(
    plumbing: tuple[Namespace, LinuxPlumbing],
) -> None:
    host, net = plumbing
    a1 = nic(LAN, LAN_PREFIX, "auto", "02:00:00:00:41:01")
    a2 = nic(LAN, LAN_PREFIX, "auto", "02:00:00:00:41:02")
    b1 = msgspec.structs.replace(nic(L2, "", "none", "02:00:00:00:42:01"), vm=a1.vm, index=1)
    assert host.call(net.attach, [a1, b1]) == [a1.tap, b1.tap]
    assert host.call(net.attach, [a2]) == [a2.tap]
    first = snapshot(host)
    bridge, vxlan = first[f"br{LAN}"], first[f"vxlan{LAN}"]
    assert bridge["kind"] == "bridge" and bridge["up"] and bridge["mtu"] == 1500
    assert bridge["address"] == bridge_mac(net.host.id, LAN)
    assert bridge["sysctl"] == {"accept_ra": "0", "autoconf": "0", "disable_ipv6": "0"}
    assert vxlan["master"] == f"br{LAN}" and vxlan["up"]
    assert vxlan["vxlan"] == {"id": LAN, "group6": f"ff05::{LAN:x}", "link": "underlay",
                              "local6": ADDRESS, "ttl": 16, "port": 4789}
    for port, bridge_of in ((a1.tap, f"br{LAN}"), (a2.tap, f"br{LAN}"), (b1.tap, f"br{L2}")):
        assert first[port]["kind"] == "tun" and first[port]["master"] == bridge_of
        assert first[port]["sysctl"]["disable_ipv6"] == "1" and first[port]["up"]
        assert f'"{port}" : jump port_{port}' in first["nft"]
    assert first[f"vxlan{LAN}"]["sysctl"]["disable_ipv6"] == "1"
    assert "02:00:00:00:41:01" in first["nft"] and eui64(LAN_PREFIX, a1.mac) in first["nft"]

    host.call(net.attach, [a1, b1])
    host.call(net.attach, [a2])
    assert snapshot(host) == first

    host.call(net.detach, [a1, b1])
    links = host.links()
    assert a1.tap not in links and b1.tap not in links
    assert f"br{L2}" not in links and f"vxlan{L2}" not in links  # its last port went
    assert f"br{LAN}" in links and a2.tap in links  # a2 still uses it
    host.call(net.detach, [a2])
    host.call(net.detach, [a2])  # again: nothing to do, no error
    assert host.links() == ["lo", "peer", "underlay"]
    assert "port_" not in host.sh("nft", "list", "table", "bridge", "ucloud")


def test_the_router_holds_the_prefix_and_advertises_it(
    made: Namespaces, plumbing: tuple[Namespace, LinuxPlumbing]
) -> None:
    host, net = plumbing
    host.call(net.route, [Routed(LAN, LAN_PREFIX, "auto"), Routed(L2, OTHER_PREFIX, "manual")])
    assert host.addresses(f"br{LAN}") == [router_address(LAN_PREFIX)]
    assert host.addresses(f"br{L2}") == [router_address(OTHER_PREFIX)]
    assert net.radvd.running() == [LAN]  # manual: an address, no adverts
    conf = net.radvd.paths(LAN)[0].read_text()
    assert f"prefix {LAN_PREFIX}" in conf and "RDNSS fd00:53::53" in conf
    assert "AdvDefaultLifetime 0;" in conf  # the namespace does not forward

    mac = "02:00:00:00:41:11"
    vm = nic(LAN, LAN_PREFIX, "auto", mac)
    g1 = guest(made, host, "g1", mac, vm.tap)
    host.call(net.attach, [vm])
    address = eui64(LAN_PREFIX, mac)
    wait_until(lambda: g1.addresses("eth0") == [address], 40, "the guest's SLAAC address")
    assert g1.addresses("eth0", "link") == [link_local(mac)]  # exactly its EUI-64 addresses
    assert ping(host, address, tries=3)
    assert ping(g1, router_address(LAN_PREFIX), tries=3)

    pid = net.radvd.daemons[LAN].pid
    before = snapshot(host)
    host.call(net.route, [Routed(LAN, LAN_PREFIX, "auto"), Routed(L2, OTHER_PREFIX, "manual")])
    assert snapshot(host) == before and net.radvd.daemons[LAN].pid == pid
    net.settings = msgspec.structs.replace(net.settings, rdnss=["fd00:53::54"])
    host.call(net.route, [Routed(LAN, LAN_PREFIX, "auto")])  # L2 no longer routed
    assert "RDNSS fd00:53::54" in net.radvd.paths(LAN)[0].read_text()
    assert net.radvd.daemons[LAN].pid == pid  # reloaded, not restarted
    assert f"br{L2}" not in host.links()

    host.call(net.route, [])
    assert net.radvd.running() == [] and host.addresses(f"br{LAN}") == []
    assert f"br{LAN}" in host.links()  # the guest's port is still on it
    host.call(net.detach, [vm])
    assert host.links() == ["lo", "peer", "underlay"]


# --- anti-spoofing ----------------------------------------------------------------------


def test_a_spoofing_guest_is_dropped_and_a_legit_one_passes(
    made: Namespaces, plumbing: tuple[Namespace, LinuxPlumbing]
) -> None:
    host, net = plumbing
    macs = ("02:00:00:00:51:01", "02:00:00:00:51:02")
    vms = [nic(LAN, LAN_PREFIX, "manual", mac) for mac in macs]
    g1, g2 = (guest(made, host, f"g{i}", vm.mac, vm.tap) for i, vm in enumerate(vms, 1))
    host.call(net.attach, vms)
    a1, a2 = (eui64(LAN_PREFIX, mac) for mac in macs)
    for space, address in ((g1, a1), (g2, a2)):  # IPAM manual: the guest sets it itself
        space.sh("ip", "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad")
    assert ping(g1, a2, tries=3) and ping(g2, a1, tries=3)

    # another MAC: nothing it sends gets through, until it has its own again
    g1.sh("ip", "link", "set", "eth0", "address", "02:00:00:00:51:99")
    g1.sh("ip", "-6", "neigh", "flush", "dev", "eth0")
    g2.sh("ip", "-6", "neigh", "flush", "dev", "eth0")
    assert not ping(g1, a2, tries=2)
    g1.sh("ip", "link", "set", "eth0", "address", macs[0])
    assert ping(g1, a2, tries=3)

    # another source address in the /64: dropped; its own: passes
    spoofed = str(ipaddress.IPv6Network(LAN_PREFIX).network_address + 0xBAD)
    g1.sh("ip", "-6", "addr", "add", f"{spoofed}/64", "dev", "eth0", "nodad")
    assert not ping(g1, a2, source=spoofed, tries=2)
    assert ping(g1, a2, source=a1, tries=3)

    # a rogue router advert: g2 (taking adverts) configures nothing from it ...
    g1.call(send_router_advert, "fd66:6:6:6::/64")
    # ... while one from a port without rules reaches it (the setup does carry adverts)
    rogue = made.add("g3")
    host.sh("ip", "link", "add", "plain3", "type", "veth", "peer", "name", "eth0", "netns",
            rogue.name)
    host.sh("ip", "link", "set", "plain3", "master", f"br{LAN}", "up")
    rogue.sh("ip", "link", "set", "eth0", "up")
    wait_until(lambda: bool(rogue.addresses("eth0", "link")), 10, "the plain port's link-local")
    rogue.call(send_router_advert, "fd77:7:7:7::/64")
    wait_until(lambda: any(a.startswith("fd77:") for a in g2.addresses("eth0")), 10,
               "SLAAC from the advert of the plain port")
    assert not any(a.startswith("fd66:") for a in g2.addresses("eth0"))
    host.call(net.detach, vms)
