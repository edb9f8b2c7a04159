"""What hostd asks of the host's network: taps for a VM's NICs, and their removal.

hostd knows VMs; the plumbing knows links. hostd hands over, per NIC, the network's VNI,
its /64 (empty for IPAM ``none``) and the VM's MAC, and gets back tap names in NIC order to
pass to QEMU (``-netdev tap,ifname=<tap>,script=no,downscript=no,vhost=off``). The Linux
implementation (pyroute2: ``vxlan<vni>`` enslaved to ``br<vni>``, a tap per NIC, nftables
anti-spoofing, radvd on the router) lives in ``ucloud/hostd/network.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec


class NicPlan(msgspec.Struct, frozen=True, kw_only=True):
    vm: str
    index: int
    network: str
    vni: int
    prefix: str  # "2001:db8:0:1::/64", or "" for IPAM none
    ipam: str
    mac: str

    @property
    def tap(self) -> str:
        """The tap's name: at most 15 characters, unique per VM and NIC index."""
        return f"tap{self.vm.replace('-', '')[-10:]}{self.index}"[:15]


class Plumbing(Protocol):
    def attach(self, nics: Sequence[NicPlan]) -> list[str]:
        """Ensure each NIC's tap exists on its network's bridge; return the tap names.

        Idempotent: attaching again changes nothing.
        """
        ...

    def detach(self, nics: Sequence[NicPlan]) -> None:
        """Remove the taps; remove a network's bridge and VXLAN when its last tap is gone."""
        ...


class NoPlumbing:
    """For hosts (and tests) without VM networking: refuses NICs rather than faking them."""

    def attach(self, nics: Sequence[NicPlan]) -> list[str]:
        if nics:
            from ucloud.errors import Refused

            raise Refused("networks", "this host has no VM networking configured")
        return []

    def detach(self, nics: Sequence[NicPlan]) -> None:
        return None
