"""Value types shared by events and views."""

from __future__ import annotations

from typing import Literal

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
