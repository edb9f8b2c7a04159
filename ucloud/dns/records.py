"""DNS records of VMs: which names may be taken, and the zones' records as a fold of the log.

Theory of operation. ``DnsFold`` folds the events that decide a VM's records: the VM's
request (owner, name, NICs), its networks' /64s (``net.created``), its DNS names
(``vm.dns_name_added``/``removed``), the PTR names its owner set (``vm.ptr_set``) and its
deletion. ``records`` turns the fold into the records of every zone:

- forward: for each name a VM carries, an AAAA record for each of its addresses (a NIC on
  a network with a /64 has the EUI-64 address of its MAC there);
- reverse (the ``ip6.arpa`` zones of the prefix pool): for each address a PTR to the name
  its owner set, else to the VM's first DNS name, else to the generated
  ``<vm>.<owner>.<default zone>``.

A name belongs to one VM at a time: an add of a name another VM holds changes nothing
(the gateway refuses it before it is appended: ``check_add``). Names and PTRs go with the
VM when it is deleted; a migration changes no address, so no record. Zone apexes (SOA,
NS) are the server's own and are not part of the fold.

Pure: no clock, no I/O. The same events in the same order give the same records, which is
what lets the ``dns`` service rebuild a zone from the log.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ucloud import events as ev
from ucloud.errors import InputError, Refused
from ucloud.net_addr import eui64

RrType = Literal["AAAA", "PTR", "NS"]
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_NAME = 128  # characters: a name is an aggregate-free key, kept short


@dataclass(frozen=True, slots=True, order=True)
class Rr:
    """One record: ``name`` and ``data`` are absolute (with the final dot)."""

    name: str
    type: RrType
    data: str


@dataclass(slots=True)
class VmNames:
    owner: str
    name: str
    nics: tuple[ev.Nic, ...]
    names: list[str] = field(default_factory=list)  # in the order they were added
    ptrs: dict[str, str] = field(default_factory=dict)  # address -> name the owner set


@dataclass(slots=True)
class DnsFold:
    """The VMs that can have records, their networks' /64s and who holds each name."""

    vms: dict[str, VmNames] = field(default_factory=dict)
    prefixes: dict[str, str] = field(default_factory=dict)  # network -> its /64
    holders: dict[str, str] = field(default_factory=dict)  # name -> vm

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.VmRequested):
            self.vms.setdefault(event.vm, VmNames(event.owner, event.name, event.nics))
        elif isinstance(event, ev.VmDeleted):
            gone = self.vms.pop(event.vm, None)
            for name in gone.names if gone else ():
                self.holders.pop(name, None)
        elif isinstance(event, ev.VmDnsNameAdded):
            vm = self.vms.get(event.vm)
            if vm is not None and event.name not in self.holders:
                self.holders[event.name] = event.vm
                vm.names.append(event.name)
        elif isinstance(event, ev.VmDnsNameRemoved):
            vm = self.vms.get(event.vm)
            if vm is not None and self.holders.get(event.name) == event.vm:
                del self.holders[event.name]
                vm.names.remove(event.name)
        elif isinstance(event, ev.VmPtrSet):
            vm = self.vms.get(event.vm)
            if vm is not None:
                if event.name:
                    vm.ptrs[event.address] = event.name
                else:
                    vm.ptrs.pop(event.address, None)
        elif isinstance(event, ev.NetCreated) and event.prefix:
            self.prefixes[event.net] = event.prefix
        elif isinstance(event, ev.NetDeleted):
            self.prefixes.pop(event.net, None)

    def addresses(self, vm: str) -> list[str]:
        """The VM's global addresses, in NIC order."""
        entry = self.vms.get(vm)
        if entry is None:
            return []
        return [
            eui64(self.prefixes[nic.network], nic.mac)
            for nic in entry.nics
            if nic.network in self.prefixes
        ]

    def names_of_owner(self, owner: str) -> int:
        return sum(len(v.names) for v in self.vms.values() if v.owner == owner)


def fold(events: Iterable[ev.Event]) -> DnsFold:
    state = DnsFold()
    for event in events:
        state.apply(event)
    return state


@dataclass(frozen=True, slots=True)
class Zones:
    """What the operator offers: forward zones, the default one, the reverse zones."""

    forward: tuple[str, ...]
    default: str
    reverse: tuple[str, ...]

    @classmethod
    def of(cls, zones: Iterable[str], default: str, prefix_pool: str) -> Zones:
        return cls(tuple(zones), default, (reverse_zone(prefix_pool),))


def reverse_zone(prefix: str) -> str:
    """The ``ip6.arpa`` zone holding ``prefix`` (rounded down to a whole nibble), no dot."""
    network = ipaddress.IPv6Network(prefix, strict=False)
    nibbles = network.prefixlen // 4
    pointer = network.network_address.reverse_pointer  # 32 nibbles then ip6.arpa
    return ".".join(pointer.split(".")[32 - nibbles :])


def normalize_name(value: str, field_: str = "name") -> str:
    """``value`` as a lower-case name without the final dot; InputError when it is none."""
    name = value.strip().lower().removesuffix(".")
    if not name or len(name) > MAX_NAME:
        raise InputError(field_, f"a DNS name has 1 to {MAX_NAME} characters")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise InputError(
                field_, f"{label!r} in {value!r} is not a DNS label (a-z, 0-9, inner '-')"
            )
    return name


def zone_of(name: str, zones: Iterable[str]) -> str | None:
    """The longest offered zone strictly above ``name``."""
    above = [z for z in zones if name.endswith("." + z)]
    return max(above, key=len) if above else None


def check_add(
    state: DnsFold, vm: str, value: str, zones: Zones, limit: int
) -> tuple[str, str]:
    """(name, zone) that ``vm`` may take, or the refusal: a name outside the offered zones
    or under another user's ``<user>.<default zone>`` (400), taken (409), over ``limit``
    names per user (409)."""
    name = normalize_name(value)
    zone = zone_of(name, zones.forward)
    if zone is None:
        offered = ", ".join(zones.forward) or "none"
        raise InputError("name", f"{name} is in no zone offered here (offered: {offered})")
    entry = state.vms.get(vm)
    assert entry is not None, "the caller checks that the VM exists"
    if zones.default and name.endswith("." + zones.default):
        labels = name[: -len(zones.default) - 1].split(".")
        if len(labels) > 1 and labels[-1] != label_of(entry.owner):
            raise InputError(
                "name", f"names under {labels[-1]}.{zones.default} belong to that user"
            )
    holder = state.holders.get(name)
    if holder == vm:
        return name, zone
    if holder is not None:
        raise Refused("name", f"{name} is taken")
    if state.names_of_owner(entry.owner) >= limit:
        raise Refused(
            "name", f"you have {limit} DNS names, the most allowed (dns.max_names_per_user)"
        )
    return name, zone


def label_of(text: str) -> str:
    """``text`` as one DNS label: lower case, anything else a '-'."""
    label = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")[:63]
    return label or "x"


def default_ptr(entry: VmNames, zones: Zones) -> str:
    if entry.names:
        return entry.names[0]
    return f"{label_of(entry.name)}.{label_of(entry.owner)}.{zones.default}"


def records(state: DnsFold, zones: Zones) -> dict[str, frozenset[Rr]]:
    """Zone -> its records (every offered zone is there, empty or not)."""
    out: dict[str, set[Rr]] = {z: set() for z in (*zones.forward, *zones.reverse)}
    for vm, entry in state.vms.items():
        addresses = state.addresses(vm)
        for name in entry.names:
            zone = zone_of(name, zones.forward)
            if zone is None:  # a zone no longer offered
                continue
            out[zone].update(Rr(name + ".", "AAAA", a) for a in addresses)
        for address in addresses:
            pointer = ipaddress.IPv6Address(address).reverse_pointer
            zone = zone_of(pointer, zones.reverse)
            if zone is None:
                continue
            target = entry.ptrs.get(address) or default_ptr(entry, zones)
            out[zone].add(Rr(pointer + ".", "PTR", target + "."))
    return {z: frozenset(rrs) for z, rrs in out.items()}


def diff(
    have: Mapping[str, frozenset[Rr]], want: Mapping[str, frozenset[Rr]]
) -> dict[str, tuple[frozenset[Rr], frozenset[Rr]]]:
    """Zone -> (to add, to remove) that turns ``have`` into ``want``; zones without change
    are left out."""
    out = {}
    for zone, wanted in want.items():
        present = have.get(zone, frozenset())
        add, remove = wanted - present, present - wanted
        if add or remove:
            out[zone] = (add, remove)
    return out
