"""Placement: which host gets a VM. Every placement rule of ucloud lives in this module.

Theory of operation
-------------------
The capacity ledger is the ``host`` aggregate of the log: ``registered`` sets a host's
capacity, ``vm_placed`` reserves a VM's resources on it, ``vm_released`` frees them,
``drained``/``undrained`` and ``down``/``up`` take it out of consideration and back.
``CapacityLedger`` is that fold over all hosts, an immutable value: ``evolve(ledger,
stored)`` returns a new ledger and leaves the old one as it was. It also remembers each
host's last stream sequence, which is what a scheduler appends ``vm_placed`` against
(optimistic concurrency on the host), and skips what it has already seen of a host, so a
scheduler may fold its own successful placement at once and the log's copy later.

``place(request, hosts, policy)`` decides, and is the only place that does:

1. Eligible hosts are registered, up and not drained.
2. A host fits when its free cpu, ram, ssd and hdd (capacity minus reservations) each
   cover the request. A placement never overcommits any resource.
3. ``pack`` takes the fitting host with the least free RAM (fill hosts up before using
   empty ones); ``spread`` the one with the most (keep load even). Equal free RAM goes
   to the lowest host id, so the same ledger and request always give the same host.
4. When nothing fits, ``NoCapacity`` names the resource that ran out and by how much,
   or says that no host is up and undrained.
5. Hosts the caller names in ``avoid`` are passed over (a scheduler's ledger is behind on
   them: it just placed there, or lost a race there); the rest of the order stands.

Speed: the ledger keeps the eligible hosts sorted by free (RAM, id), and the largest
free amount of every resource. ``place`` bisects to the first host with enough RAM and
walks from there, so a decision looks at a few hosts, not all of them; a request larger
than any host's free amount of one resource fails without a walk. Only a request that
fits every resource somewhere but nowhere at once walks all candidates.

Nothing here reads a clock, does I/O or changes its inputs.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any, Literal

from ucloud.events import (
    NOTHING,
    Event,
    HostDown,
    HostDrained,
    HostEvent,
    HostRegistered,
    HostUndrained,
    HostUp,
    HostVmPlaced,
    HostVmReleased,
    Resources,
)

Policy = Literal["pack", "spread"]
RESOURCES = ("cpu", "ram", "ssd", "hdd")
_UNITS = {"cpu": " CPUs", "ram": " MiB", "ssd": " MiB", "hdd": " MiB"}
_BUCKETS = 256  # the vm -> hosts map is split so that a batch copies only what it touches

Free = tuple[int, int, int, int]  # cpu, ram_mib, ssd_mib, hdd_mib
_Entry = tuple[int, str, int, int, int]  # ram (negated for spread), id, cpu, ssd, hdd


@dataclass(frozen=True, slots=True)
class HostCapacity:
    """One host as placement sees it."""

    id: str
    capacity: Resources = NOTHING
    used: Resources = NOTHING
    vms: Mapping[str, Resources] = field(default_factory=dict)
    address: str = ""
    router: bool = False
    registered: bool = True
    up: bool = True
    drained: bool = False
    seq: int = 0  # last stream sequence of this host's aggregate known to the ledger
    since: str = ""  # id of the event that set ``up`` (registered, up or down)

    @property
    def free(self) -> Resources:
        return self.capacity - self.used

    @property
    def eligible(self) -> bool:
        return self.registered and self.up and not self.drained


@dataclass(frozen=True, slots=True)
class Placement:
    host: str


@dataclass(frozen=True, slots=True)
class NoCapacity:
    resource: str  # cpu, ram, ssd, hdd, or "host" when no host is eligible
    reason: str


class CapacityLedger:
    """Every host's capacity, reservations and state, indexed for ``place``. Immutable."""

    __slots__ = ("_amounts", "_by_ram", "_where", "hosts", "position")

    hosts: Mapping[str, HostCapacity]
    position: int  # the last stream sequence folded in
    # Eligible hosts by free RAM: (pack, spread) lists of every host, and of hosts with
    # free hdd. Pack entries are (ram, id, cpu, ssd, hdd); spread entries (-ram, id, ...).
    _by_ram: tuple[tuple[list[_Entry], list[_Entry]], tuple[list[_Entry], list[_Entry]]]
    _amounts: tuple[list[tuple[int, str]], ...]  # cpu, ssd, hdd: sorted (free, id)
    _where: tuple[Mapping[str, tuple[str, ...]], ...]  # vm -> hosts, in buckets

    def __init__(self) -> None:
        self.hosts = {}
        self.position = 0
        self._by_ram = (([], []), ([], []))
        self._amounts = ([], [], [])
        self._where = tuple({} for _ in range(_BUCKETS))

    @classmethod
    def of(cls, hosts: Iterable[HostCapacity], position: int = 0) -> CapacityLedger:
        """A ledger holding ``hosts`` as they are (for tests and benchmarks)."""
        draft = _Draft(cls())
        for host in hosts:
            draft.set(host)
            for vm in host.vms:
                draft.add_where(vm, host.id)
        draft.position = position
        return draft.freeze()

    def seq_of(self, host: str) -> int:
        """The host aggregate's last sequence as known here (0: none)."""
        known = self.hosts.get(host)
        return known.seq if known else 0

    def hosts_of(self, vm: str) -> tuple[str, ...]:
        """The hosts holding a reservation for ``vm`` (two while it migrates)."""
        return self._where[hash(vm) % _BUCKETS].get(vm, ())

    def most_free(self) -> Free:
        """The largest free amount of each resource on an eligible host."""
        pack = self._by_ram[0][0]
        if not pack:
            return 0, 0, 0, 0
        cpu, ssd, hdd = (index[-1][0] for index in self._amounts)
        return cpu, pack[-1][0], ssd, hdd

    def short(self, need: Free) -> Free:
        """For each resource, how many eligible hosts have less of it free than ``need``."""
        cpu, ssd, hdd = (
            bisect_left(index, (amount,))
            for index, amount in zip(self._amounts, (need[0], need[2], need[3]), strict=True)
        )
        return cpu, bisect_left(self._by_ram[0][0], (need[1],)), ssd, hdd

    def eligible(self) -> int:
        return len(self._by_ram[0][0])


def place(
    request: Resources, hosts: CapacityLedger, policy: Policy, avoid: Collection[str] = ()
) -> Placement | NoCapacity:
    """The host for a VM of size ``request``, or why there is none.

    Hosts in ``avoid`` are passed over: those the caller knows its ledger is behind on.
    A NoCapacity then may not be final, and the reason still speaks of every host.
    """
    if not hosts._by_ram[0][0]:
        return NoCapacity("host", "no host is up and undrained")
    cpu, ram, ssd, hdd = need = (request.cpu, request.ram_mib, request.ssd_mib, request.hdd_mib)
    for resource, needed, available in zip(RESOURCES, need, hosts.most_free(), strict=True):
        if needed > available:
            unit = _UNITS[resource]
            return NoCapacity(
                resource,
                f"{resource}: needs {needed}{unit}, "
                f"most free on an eligible host is {available}{unit}",
            )
    pack, spread = hosts._by_ram[1 if hdd > 0 else 0]
    if policy == "pack":
        candidates = islice(pack, bisect_left(pack, (ram,)), None)
    else:
        candidates = islice(spread, bisect_left(spread, (1 - ram,)))
    for _, host, c, s, d in candidates:
        if c >= cpu and s >= ssd and d >= hdd and host not in avoid:
            return Placement(host)
    return _no_single_host(need, hosts.short(need), hosts.eligible())


def _no_single_host(need: Free, short: Free, eligible: int) -> NoCapacity:
    worst = max(range(4), key=lambda position: (short[position], -position))
    wanted = ", ".join(
        f"{resource} {amount}{_UNITS[resource]}"
        for resource, amount in zip(RESOURCES, need, strict=True)
    )
    return NoCapacity(
        RESOURCES[worst],
        f"no host has {wanted} free at once; "
        f"{RESOURCES[worst]} is short on {short[worst]} of {eligible} eligible hosts",
    )


def evolve(ledger: CapacityLedger, stored: Iterable[tuple[int, Event]]) -> CapacityLedger:
    """The ledger after the events ``stored`` as (stream sequence, event), in order.

    Events of other aggregates only move ``position``; an event of a host at or below
    the sequence the ledger already has for that host is skipped.
    """
    draft = _Draft(ledger)
    for seq, event in stored:
        draft.position = max(draft.position, seq)
        if isinstance(event, HostEvent):
            draft.apply(seq, event)
    return draft.freeze()


def advanced(ledger: CapacityLedger, position: int) -> CapacityLedger:
    """The ledger known to be current up to ``position`` (no host event up to there)."""
    if position <= ledger.position:
        return ledger
    draft = _Draft(ledger)
    draft.position = position
    return draft.freeze()


def reserve(host: HostCapacity, seq: int, vm: str, resources: Resources) -> HostCapacity:
    """The host after ``vm_placed`` (a no-op for a VM it already holds)."""
    if vm in host.vms:
        return replace(host, seq=seq)
    return replace(
        host, used=host.used + resources, vms={**host.vms, vm: resources}, seq=seq
    )


def release(host: HostCapacity, seq: int, vm: str) -> HostCapacity:
    """The host after ``vm_released`` (a no-op for a VM it does not hold)."""
    resources = host.vms.get(vm)
    if resources is None:
        return replace(host, seq=seq)
    vms = dict(host.vms)
    del vms[vm]
    return replace(host, used=host.used - resources, vms=vms, seq=seq)


def evolve_host(host: HostCapacity | None, seq: int, event: HostEvent) -> HostCapacity:
    """One host after one of its events (commands only move its sequence)."""
    if host is None:
        host = HostCapacity(id=event.host, registered=False)
    if isinstance(event, HostRegistered):
        if not host.registered:
            host = replace(host, registered=True, up=True, since=event.id)
        return replace(
            host, capacity=event.capacity, address=event.address, router=event.router, seq=seq
        )
    if isinstance(event, HostVmPlaced):
        return reserve(host, seq, event.vm, event.resources)
    if isinstance(event, HostVmReleased):
        return release(host, seq, event.vm)
    if isinstance(event, HostDrained | HostUndrained):
        return replace(host, drained=isinstance(event, HostDrained), seq=seq)
    if isinstance(event, HostDown | HostUp):
        return replace(host, up=isinstance(event, HostUp), since=event.id, seq=seq)
    return replace(host, seq=seq)


def _entries(host: HostCapacity) -> tuple[_Entry, _Entry] | None:
    if not host.eligible:
        return None
    free = host.free
    pack = (free.ram_mib, host.id, free.cpu, free.ssd_mib, free.hdd_mib)
    return pack, (-free.ram_mib, *pack[1:])


class _Draft:
    """A ledger being changed: copies of the parent's tables, made on first write."""

    def __init__(self, parent: CapacityLedger) -> None:
        self.parent = parent
        self.position = parent.position
        self.hosts: dict[str, HostCapacity] | None = None
        self.by_ram: tuple[tuple[list[_Entry], list[_Entry]], ...] | None = None
        self.amounts: tuple[list[tuple[int, str]], ...] = ()
        self.where: list[Mapping[str, tuple[str, ...]]] = list(parent._where)
        self.copied: set[int] = set()

    def apply(self, seq: int, event: HostEvent) -> None:
        hosts = self.hosts if self.hosts is not None else self.parent.hosts
        before = hosts.get(event.host)
        if before is not None and seq <= before.seq:
            return
        after = evolve_host(before, seq, event)
        self.set(after, before)
        if isinstance(event, HostVmPlaced):
            self.add_where(event.vm, event.host)
        elif isinstance(event, HostVmReleased):
            self.drop_where(event.vm, event.host)

    def set(self, after: HostCapacity, before: HostCapacity | None = None) -> None:
        if self.hosts is None:
            self.hosts = dict(self.parent.hosts)
        self.hosts[after.id] = after
        old = _entries(before) if before is not None else None
        new = _entries(after)
        if old == new:
            return
        if self.by_ram is None:
            self.by_ram = tuple((list(p), list(s)) for p, s in self.parent._by_ram)
            self.amounts = tuple(list(index) for index in self.parent._amounts)
        for entries, change in ((old, _remove), (new, insort)):
            if entries is None:
                continue
            pack, spread = entries
            for lists, member in zip(self.by_ram, (True, pack[4] > 0), strict=True):
                if member:
                    change(lists[0], pack)
                    change(lists[1], spread)
            for index, amount in zip(self.amounts, (pack[2], pack[3], pack[4]), strict=True):
                change(index, (amount, pack[1]))

    def _bucket(self, vm: str) -> dict[str, tuple[str, ...]]:
        number = hash(vm) % _BUCKETS
        if number not in self.copied:
            self.where[number] = dict(self.where[number])
            self.copied.add(number)
        bucket = self.where[number]
        assert isinstance(bucket, dict)
        return bucket

    def add_where(self, vm: str, host: str) -> None:
        bucket = self._bucket(vm)
        held = bucket.get(vm, ())
        if host not in held:
            bucket[vm] = (*held, host)

    def drop_where(self, vm: str, host: str) -> None:
        bucket = self._bucket(vm)
        held = tuple(h for h in bucket.get(vm, ()) if h != host)
        if held:
            bucket[vm] = held
        else:
            bucket.pop(vm, None)

    def freeze(self) -> CapacityLedger:
        ledger = CapacityLedger.__new__(CapacityLedger)
        parent = self.parent
        ledger.hosts = self.hosts if self.hosts is not None else parent.hosts
        ledger.position = self.position
        if self.by_ram is None:
            ledger._by_ram, ledger._amounts = parent._by_ram, parent._amounts
        else:
            every, with_hdd = self.by_ram
            ledger._by_ram, ledger._amounts = (every, with_hdd), self.amounts
        ledger._where = tuple(self.where) if self.copied else parent._where
        return ledger


def _remove(index: list[Any], entry: Any) -> None:
    del index[bisect_left(index, entry)]
