"""IPAM: which VNI and which /64 a network gets, and when they are free again.

Theory of operation. Two allocator singletons live in the log as aggregates:
``pool.vni`` (``vni_allocated``/``vni_released``) and ``pool.prefix``
(``prefix_allocated``/``prefix_released``). ``Pools`` is their fold: which network holds
each VNI and each /64. ``NetFacts`` is the fold of one network's own events.

``decide`` returns the one next event that brings a network closer to where its history
says it should be, or None when it is there:

- requested, not yet created or failed: a VNI (the lowest free in ``[vni_min, vni_max]``),
  then for IPAM ``manual`` and ``auto`` a /64 (the lowest free in the pool), then
  ``net.created``. If the range or the pool has nothing left, ``net.failed`` naming it
  comes first and what the network holds is released after it.
- failed, or asked to be deleted: release its VNI, release its /64, then (for a delete)
  ``net.deleted``.

Each step is appended with optimistic concurrency on its aggregate, so two allocators that
pick the same VNI cannot both have it: one append conflicts, and that allocator folds the
newer pool and decides again. A network that already holds a VNI or a /64 keeps it, so a
redelivered request allocates nothing twice. Pure: no clock, no I/O; ids come from the
``Cause`` (derived from the triggering event).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ucloud.events import (
    Cause,
    Event,
    NetCreated,
    NetDeleted,
    NetDeleteRequested,
    NetFailed,
    NetRequested,
    PoolPrefixAllocated,
    PoolPrefixReleased,
    PoolVniAllocated,
    PoolVniReleased,
)

VNI_POOL = "vni"
PREFIX_POOL = "prefix"
SUBNET = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """What may be handed out: the VNI range and the pool the /64s come from."""

    vni_min: int
    vni_max: int
    pool: ipaddress.IPv6Network

    @classmethod
    def of(cls, vni_min: int, vni_max: int, prefix_pool: str) -> Limits:
        return cls(vni_min, vni_max, ipaddress.IPv6Network(prefix_pool, strict=True))


@dataclass(frozen=True, slots=True)
class Pools:
    """Who holds what: VNI -> network, /64 -> network."""

    vnis: Mapping[int, str] = field(default_factory=dict)
    prefixes: Mapping[str, str] = field(default_factory=dict)

    def vni_of(self, net: str) -> int | None:
        return next((vni for vni, holder in self.vnis.items() if holder == net), None)

    def prefix_of(self, net: str) -> str | None:
        return next((p for p, holder in self.prefixes.items() if holder == net), None)


def fold_pools(pools: Pools, events: Iterable[Event]) -> Pools:
    """``pools`` with ``events`` applied (events of other aggregates change nothing).

    A release counts only while the resource is held by the network it names.
    """
    vnis, prefixes = dict(pools.vnis), dict(pools.prefixes)
    for event in events:
        if isinstance(event, PoolVniAllocated):
            vnis[event.vni] = event.net
        elif isinstance(event, PoolVniReleased) and vnis.get(event.vni) == event.net:
            del vnis[event.vni]
        elif isinstance(event, PoolPrefixAllocated):
            prefixes[event.prefix] = event.net
        elif isinstance(event, PoolPrefixReleased) and prefixes.get(event.prefix) == event.net:
            del prefixes[event.prefix]
    return Pools(vnis, prefixes)


@dataclass(frozen=True, slots=True)
class NetFacts:
    """What one network's own events say about it."""

    request: NetRequested | None = None
    created: NetCreated | None = None
    failed: bool = False
    delete_requested: bool = False
    deleted: bool = False


def fold_net(events: Iterable[Event]) -> NetFacts:
    facts = NetFacts()
    for event in events:
        if isinstance(event, NetRequested) and facts.request is None:
            facts = replace(facts, request=event)
        elif isinstance(event, NetCreated):
            facts = replace(facts, created=event)
        elif isinstance(event, NetFailed):
            facts = replace(facts, failed=True)
        elif isinstance(event, NetDeleteRequested):
            facts = replace(facts, delete_requested=True)
        elif isinstance(event, NetDeleted):
            facts = replace(facts, deleted=True)
    return facts


def free_vni(pools: Pools, limits: Limits) -> int | None:
    """The lowest VNI of the range nobody holds."""
    for vni in range(limits.vni_min, limits.vni_max + 1):
        if vni not in pools.vnis:
            return vni
    return None


def free_prefix(pools: Pools, limits: Limits) -> str | None:
    """The lowest /64 of the pool nobody holds."""
    base = int(limits.pool.network_address)
    for index in range(1 << (SUBNET - limits.pool.prefixlen)):
        prefix = str(ipaddress.IPv6Network((base + (index << (128 - SUBNET)), SUBNET)))
        if prefix not in pools.prefixes:
            return prefix
    return None


def needs_prefix(request: NetRequested) -> bool:
    return request.ipam in ("manual", "auto")


def decide(net: str, facts: NetFacts, pools: Pools, limits: Limits, cause: Cause) -> Event | None:
    """The next event for network ``net``, or None when nothing is left to do."""
    vni, prefix = pools.vni_of(net), pools.prefix_of(net)
    going = facts.failed or facts.delete_requested or facts.deleted
    if going:
        if vni is not None:
            return PoolVniReleased(
                **cause.envelope(f"release-vni/{vni}"), pool=VNI_POOL, vni=vni, net=net
            )
        if prefix is not None:
            return PoolPrefixReleased(
                **cause.envelope(f"release-prefix/{prefix}"), pool=PREFIX_POOL, prefix=prefix,
                net=net,
            )
        if facts.delete_requested and not facts.deleted:
            return NetDeleted(**cause.envelope("deleted"), net=net)
        return None
    request = facts.request
    if request is None or facts.created is not None:
        return None
    wants_prefix = needs_prefix(request)
    chosen_vni = vni if vni is not None else free_vni(pools, limits)
    if chosen_vni is None:
        reason = f"no free VNI in {limits.vni_min}-{limits.vni_max}"
        return NetFailed(**cause.envelope("failed"), net=net, reason=reason)
    chosen_prefix = prefix
    if wants_prefix and chosen_prefix is None:
        chosen_prefix = free_prefix(pools, limits)
        if chosen_prefix is None:
            reason = f"no free /64 in {limits.pool}"
            return NetFailed(**cause.envelope("failed"), net=net, reason=reason)
    if vni is None:
        return PoolVniAllocated(
            **cause.envelope(f"vni/{chosen_vni}"), pool=VNI_POOL, vni=chosen_vni, net=net
        )
    if wants_prefix and prefix is None:
        assert chosen_prefix is not None
        return PoolPrefixAllocated(
            **cause.envelope(f"prefix/{chosen_prefix}"), pool=PREFIX_POOL, prefix=chosen_prefix,
            net=net,
        )
    return NetCreated(
        **cause.envelope("created"), net=net, vni=vni, prefix=prefix or "", ipam=request.ipam
    )
