"""Value types shared by events and views."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Ipam = Literal["none", "manual", "auto"]
RestartPolicy = Literal["always", "never"]
StoreKind = Literal["fs", "rbd"]


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    """CPUs and sizes in MiB: a VM's allocation, or a host's capacity."""

    cpu: int
    ram_mib: int
    ssd_mib: int
    hdd_mib: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            cpu=self.cpu + other.cpu,
            ram_mib=self.ram_mib + other.ram_mib,
            ssd_mib=self.ssd_mib + other.ssd_mib,
            hdd_mib=self.hdd_mib + other.hdd_mib,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            cpu=self.cpu - other.cpu,
            ram_mib=self.ram_mib - other.ram_mib,
            ssd_mib=self.ssd_mib - other.ssd_mib,
            hdd_mib=self.hdd_mib - other.hdd_mib,
        )


NOTHING = Resources(cpu=0, ram_mib=0, ssd_mib=0, hdd_mib=0)


class Nic(msgspec.Struct, frozen=True, kw_only=True):
    """A VM's network interface: the network it is on and its MAC."""

    network: str
    mac: str


class VmSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A VM as its request defines it, whole: what each host command that starts it carries.

    Built once from the request (``VmRequested.vm_spec``); the events that carry it keep its
    fields at their top level (the shape stored logs have), ``spec_fields`` moves them.
    """

    vm: str
    owner: str
    name: str
    spec: Resources
    image: str
    nics: tuple[Nic, ...] = ()
    restart: RestartPolicy = "always"


def spec_fields(source: object) -> dict[str, Any]:
    """The fields of a ``VmSpec`` that ``source`` carries, as keyword arguments."""
    return {name: getattr(source, name) for name in VmSpec.__struct_fields__}


class NicNetwork(msgspec.Struct, frozen=True, kw_only=True):
    """The network of one NIC as the log has it: its VNI, /64 (empty for IPAM none), IPAM."""

    network: str
    vni: int
    prefix: str = ""
    ipam: Ipam = "none"


class Resolved(msgspec.Struct, frozen=True, kw_only=True):
    """What a VM's spec names, read from the log when the VM was dispatched: its image's
    store and, in NIC order, each NIC's network. With it a host needs no other read."""

    store: StoreKind
    networks: tuple[NicNetwork, ...] = ()
