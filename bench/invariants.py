"""What must hold of a log after any faults: the checks of ``bench.chaos``, pure.

``audit(stored)`` folds the whole stream, as (sequence, event) in order, and counts:

- ``duplicated_ids``: event ids that appear more than once;
- ``placed_twice``: placements of a VM that already holds a reservation (on the same host
  or another) outside a migration. A migration reserves on the target while the source
  still holds the VM (``vm_placed`` with ``migration=True``); anything else that places a
  held VM again would run it twice or leak capacity;
- ``overbooked``: host events after which a host's reservations exceed its capacity in any
  resource, folding the capacity ledger itself (``handlers.placement.evolve``) one event
  at a time, so that an overbooking that was later released still counts;
- ``requested``: the VMs the log holds, by name (two VMs of one name: one request made
  two VMs).

Nothing here does I/O.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ucloud.events import Event, HostEvent, HostVmPlaced, HostVmReleased, Resources, VmRequested
from ucloud.handlers.placement import CapacityLedger, evolve

RESOURCES = ("cpu", "ram_mib", "ssd_mib", "hdd_mib")


@dataclass
class Audit:
    events: int = 0
    duplicated_ids: int = 0
    placed_twice: int = 0
    overbooked: int = 0
    requested: dict[str, list[str]] = field(default_factory=dict)  # name -> VM ids
    overbooked_hosts: set[str] = field(default_factory=set)

    @property
    def duplicated(self) -> int:
        """Duplicate event ids, VMs placed twice, and names that made more than one VM."""
        extra = sum(len(ids) - 1 for ids in self.requested.values() if len(ids) > 1)
        return self.duplicated_ids + self.placed_twice + extra


def audit(stored: Iterable[tuple[int, Event]]) -> Audit:
    found = Audit()
    seen: Counter[str] = Counter()
    holding: dict[str, set[str]] = defaultdict(set)  # vm -> hosts holding a reservation
    ledger = CapacityLedger()
    requested: dict[str, list[str]] = defaultdict(list)
    for seq, event in stored:
        found.events += 1
        seen[event.id] += 1
        if seen[event.id] == 2:
            found.duplicated_ids += 1
        if isinstance(event, VmRequested):
            requested[event.name].append(event.vm)
        if not isinstance(event, HostEvent):
            continue
        if isinstance(event, HostVmPlaced):
            if holding[event.vm] and not event.migration:
                found.placed_twice += 1
            holding[event.vm].add(event.host)
        elif isinstance(event, HostVmReleased):
            holding[event.vm].discard(event.host)
        ledger = evolve(ledger, [(seq, event)])
        host = ledger.hosts.get(event.host)
        if host is not None and _exceeds(host.used, host.capacity):
            found.overbooked += 1
            found.overbooked_hosts.add(event.host)
    found.requested = {
        name: list(dict.fromkeys(ids)) for name, ids in requested.items()
    }  # a VM requested twice under one id is one VM (the duplicate id counts apart)
    return found


def _exceeds(used: Resources, capacity: Resources) -> bool:
    return any(getattr(used, r) > getattr(capacity, r) for r in RESOURCES)
