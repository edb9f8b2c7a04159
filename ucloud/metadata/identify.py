"""Who is asking: a request's source address and arrival bridge -> one VM's NIC, or a refusal.

Theory of operation. The metadata service trusts nothing the caller says about itself;
it looks only at where the request came from:

1. The source address must be a link-local ``fe80::/64`` address or a unicast address
   (global or ULA), with a modified EUI-64 interface id (``...:xxff:fexx:...``).
   Anything else (loopback, multicast, IPv4-mapped, no ``ff:fe`` in the middle of the
   interface id, another ``fe80::/10`` subnet) is refused.
2. The interface id gives the MAC; ``idx/mac`` gives the VM that owns that MAC; the VM's
   NIC with that MAC gives its network.
3. The request must have arrived on that network's bridge (``br<vni>``) on this host.
   A request that arrived anywhere else, or on the bridge of another network, is refused.
4. A source address that is not link-local must be exactly the NIC's EUI-64 address in
   its network's /64.

Why this is enough: the host's anti-spoofing rules (nftables, per tap) let a VM send only
from its own MAC and from the link-local and EUI-64 addresses of that MAC, so a source
address that passes the rules above, on the right bridge, came from that VM's port. The
identification itself reads no clock and does no I/O: the caller passes in the
projection (``Directory``) and the bridge the request arrived on.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from ucloud.errors import InputError
from ucloud.net_addr import LINK_LOCAL, eui64, mac_of
from ucloud.projections.views import NetView, NicView, VmView


class Directory(Protocol):
    """The parts of the projection identification reads."""

    def vm_of_mac(self, mac: str) -> VmView | None: ...

    def net(self, net: str) -> NetView | None: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """The VM (and its NIC and network) a request came from."""

    vm: VmView
    nic: NicView
    net: NetView


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is answered 403: goes to the log, never to the caller."""

    reason: str
    mac: str = ""
    vm: str = ""


def identify(source: str, arrival_vni: int | None, directory: Directory) -> Caller | Refusal:
    """The caller of a request from ``source`` that arrived on bridge ``br<arrival_vni>``.

    ``arrival_vni`` is None when the request arrived on a link that is not a VM bridge.
    """
    try:
        address = ipaddress.IPv6Address(source.split("%", 1)[0])
    except ValueError:
        return Refusal(f"source {source!r} is not an IPv6 address")
    link_local = address in LINK_LOCAL
    if address.is_link_local and not link_local:
        return Refusal(f"source {address} is link-local but not in fe80::/64")
    if (
        address.is_loopback or address.is_multicast or address.is_unspecified
        or address.is_site_local or address.ipv4_mapped is not None
    ):
        return Refusal(f"source {address} cannot be a VM's address")
    mac = mac_of(str(address))
    if mac is None:
        return Refusal(f"source {address} has no EUI-64 interface id")
    vm = directory.vm_of_mac(mac)
    if vm is None:
        return Refusal(f"no VM has MAC {mac} (source {address})", mac=mac)
    nic = next((n for n in vm.nics if n.mac == mac), None)
    net = directory.net(nic.network) if nic is not None else None
    if nic is None or net is None or not net.vni:
        return Refusal(f"MAC {mac} of VM {vm.id} is on no known network", mac=mac, vm=vm.id)
    if arrival_vni is None:
        return Refusal(
            f"request from {address} (MAC {mac}, VM {vm.id}) did not arrive on a VM bridge",
            mac=mac, vm=vm.id,
        )
    if arrival_vni != net.vni:
        return Refusal(
            f"request from {address} (MAC {mac}, VM {vm.id}) arrived on br{arrival_vni}, "
            f"but that NIC is on br{net.vni}",
            mac=mac, vm=vm.id,
        )
    if not link_local and str(address) != _nic_address(net, mac):
        return Refusal(
            f"source {address} is not the EUI-64 address of MAC {mac} in {net.prefix or '-'}",
            mac=mac, vm=vm.id,
        )
    return Caller(vm=vm, nic=nic, net=net)


def _nic_address(net: NetView, mac: str) -> str:
    if not net.prefix:
        return ""
    try:
        return eui64(net.prefix, mac)
    except InputError:
        return ""
