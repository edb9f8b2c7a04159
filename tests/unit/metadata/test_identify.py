"""Who is asking: source address and arrival bridge -> the VM's NIC, or a refusal."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.events.types import Resources
from ucloud.metadata.identify import Caller, Refusal, identify
from ucloud.net_addr import eui64, link_local
from ucloud.projections.views import NetView, NicView, VmView

SPEC = Resources(cpu=1, ram_mib=512, ssd_mib=1024)
MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
MAC_C = "02:00:00:00:00:0c"  # a second NIC of vm-a, on net-2


def net(ident: str, vni: int, prefix: str = "", ipam: str = "auto") -> NetView:
    return NetView(
        id=ident, owner="alice", name=ident, ipam=ipam,  # type: ignore[arg-type]
        status="created", vni=vni, prefix=prefix,
    )


def vm(ident: str, *nics: tuple[str, str]) -> VmView:
    return VmView(
        id=ident, owner="alice", name=ident, spec=SPEC, image="img", status="running",
        nics=tuple(NicView(network=n, mac=m) for n, m in nics),
    )


@dataclass
class Projection:
    vms: dict[str, VmView] = field(default_factory=dict)
    nets: dict[str, NetView] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)

    def vm_of_mac(self, mac: str) -> VmView | None:
        ident = self.macs.get(mac)
        return self.vms.get(ident) if ident else None

    def net(self, net: str) -> NetView | None:
        return self.nets.get(net)


def projection() -> Projection:
    p = Projection()
    p.nets = {
        "net-1": net("net-1", 100, "2001:db8:1:1::/64"),
        "net-2": net("net-2", 200, "", ipam="none"),
        "net-new": net("net-new", 0),  # requested, no VNI yet
    }
    p.vms = {
        "vm-a": vm("vm-a", ("net-1", MAC_A), ("net-2", MAC_C)),
        "vm-b": vm("vm-b", ("net-1", MAC_B)),
        "vm-x": vm("vm-x", ("net-new", "02:00:00:00:00:0d")),
    }
    p.macs = {MAC_A: "vm-a", MAC_B: "vm-b", MAC_C: "vm-a", "02:00:00:00:00:0d": "vm-x"}
    return p


@pytest.mark.parametrize(
    ("source", "arrival", "vm_id", "network"),
    [
        (link_local(MAC_A), 100, "vm-a", "net-1"),
        (link_local(MAC_A) + "%br100", 100, "vm-a", "net-1"),
        (link_local(MAC_C), 200, "vm-a", "net-2"),  # the same VM, its other NIC
        (link_local(MAC_B), 100, "vm-b", "net-1"),
        (eui64("2001:db8:1:1::/64", MAC_A), 100, "vm-a", "net-1"),  # global EUI-64
    ],
)
def test_identifies(source: str, arrival: int, vm_id: str, network: str) -> None:
    caller = identify(source, arrival, projection())
    assert isinstance(caller, Caller), caller
    assert (caller.vm.id, caller.nic.network, caller.net.vni) == (vm_id, network, arrival)


@pytest.mark.parametrize(
    ("source", "arrival", "reason"),
    [
        ("not-an-address", 100, "not an IPv6 address"),
        ("10.0.0.1", 100, "not an IPv6 address"),
        ("::1", 100, "cannot be a VM's address"),
        ("::ffff:10.0.0.1", 100, "cannot be a VM's address"),
        ("ff02::1", 100, "cannot be a VM's address"),
        ("fe80:0:0:1:0:ff:fe00:a", 100, "not in fe80::/64"),
        ("fe80::1", 100, "no EUI-64 interface id"),
        ("fe80::a9fe:a9fe", 100, "no EUI-64 interface id"),
        (link_local("02:00:00:00:00:99"), 100, "no VM has MAC 02:00:00:00:00:99"),
        (link_local(MAC_A), 200, "arrived on br200, but that NIC is on br100"),
        (link_local(MAC_C), 100, "arrived on br100, but that NIC is on br200"),
        (link_local(MAC_A), None, "did not arrive on a VM bridge"),
        (link_local("02:00:00:00:00:0d"), 100, "on no known network"),
        # a global address of the right MAC but outside the network's /64
        (eui64("2001:db8:9:9::/64", MAC_A), 100, "not the EUI-64 address"),
        # a global address on a network without a /64
        (eui64("2001:db8:9:9::/64", MAC_C), 200, "not the EUI-64 address"),
    ],
)
def test_refuses(source: str, arrival: int | None, reason: str) -> None:
    refusal = identify(source, arrival, projection())
    assert isinstance(refusal, Refusal)
    assert reason in refusal.reason


def test_refusal_names_the_vm_when_it_knows_it() -> None:
    refusal = identify(link_local(MAC_A), 200, projection())
    assert isinstance(refusal, Refusal) and (refusal.mac, refusal.vm) == (MAC_A, "vm-a")


def test_a_mac_index_pointing_at_a_missing_vm_refuses() -> None:
    p = projection()
    del p.vms["vm-b"]
    assert isinstance(identify(link_local(MAC_B), 100, p), Refusal)


macs = st.binary(min_size=5, max_size=5).map(
    lambda b: ":".join(f"{x:02x}" for x in (0x02, *b))
)


@given(mac=macs, vni=st.integers(1, 2**24 - 1), other=st.integers(1, 2**24 - 1))
def test_a_vm_is_found_exactly_on_its_own_bridge(mac: str, vni: int, other: int) -> None:
    p = Projection(
        vms={"v": vm("v", ("n", mac))}, nets={"n": net("n", vni)}, macs={mac: "v"}
    )
    found = identify(link_local(mac), vni, p)
    assert isinstance(found, Caller) and found.nic.mac == mac
    elsewhere = identify(link_local(mac), other, p)
    assert isinstance(elsewhere, Caller) == (other == vni)
