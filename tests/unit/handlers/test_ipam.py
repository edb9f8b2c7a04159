"""IPAM decisions: tables of single steps, and properties over whole histories.

The histories run against a small in-memory log with per-aggregate optimistic concurrency,
the same rule the real log enforces: an append that expects a stale sequence is refused.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud.events import Cause, Event
from ucloud.events.types import Ipam
from ucloud.handlers.ipam import (
    Limits,
    NetFacts,
    Pools,
    decide,
    fold_net,
    fold_pools,
    free_prefix,
    free_vni,
)
from ucloud.ids import new_id

AT = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = Limits.of(10, 12, "fd00:1:2::/62")  # three VNIs, four /64s
FULL = {str(ipaddress.IPv6Network(f"fd00:1:2:{i:x}::/64")): "x" for i in range(4)}


def request(net: str, ipam: Ipam = "auto") -> ev.NetRequested:
    return ev.NetRequested(id=new_id(), at=AT, actor="alice", net=net, owner="alice",
                           name=net, ipam=ipam)


def cause(event: Event) -> Cause:
    return Cause.of(event, "system:netalloc", AT)


@pytest.mark.parametrize(
    ("held_vnis", "held_prefixes", "vni", "prefix"),
    [
        ({}, {}, 10, "fd00:1:2::/64"),
        ({10: "a"}, {"fd00:1:2::/64": "a"}, 11, "fd00:1:2:1::/64"),
        ({11: "a"}, {"fd00:1:2:1::/64": "a"}, 10, "fd00:1:2::/64"),  # a released low one first
        ({10: "a", 11: "b", 12: "c"}, {}, None, "fd00:1:2::/64"),
        ({}, FULL, 10, None),
    ],
)
def test_the_lowest_free_vni_and_prefix(
    held_vnis: dict[int, str], held_prefixes: dict[str, str], vni: int | None, prefix: str | None
) -> None:
    pools = Pools(held_vnis, held_prefixes)
    assert free_vni(pools, LIMITS) == vni
    assert free_prefix(pools, LIMITS) == prefix


def test_a_request_steps_through_vni_prefix_created() -> None:
    asked = request("n1", "manual")
    facts = fold_net([asked])
    step = decide("n1", facts, Pools(), LIMITS, cause(asked))
    assert isinstance(step, ev.PoolVniAllocated) and (step.pool, step.vni) == ("vni", 10)
    pools = fold_pools(Pools(), [step])
    step = decide("n1", facts, pools, LIMITS, cause(asked))
    assert isinstance(step, ev.PoolPrefixAllocated) and step.prefix == "fd00:1:2::/64"
    pools = fold_pools(pools, [step])
    step = decide("n1", facts, pools, LIMITS, cause(asked))
    assert isinstance(step, ev.NetCreated)
    assert (step.vni, step.prefix, step.ipam) == (10, "fd00:1:2::/64", "manual")
    assert decide("n1", fold_net([asked, step]), pools, LIMITS, cause(asked)) is None
    # the ids derive from the request: a redelivery decides the very same events
    again = decide("n1", facts, pools, LIMITS, cause(asked))
    assert again is not None and again.id == step.id


def test_ipam_none_gets_no_prefix() -> None:
    asked = request("n1", "none")
    pools = Pools({10: "n1"}, {})
    step = decide("n1", fold_net([asked]), pools, LIMITS, cause(asked))
    assert isinstance(step, ev.NetCreated) and (step.vni, step.prefix) == (10, "")


@pytest.mark.parametrize(
    ("pools", "reason"),
    [
        (Pools({10: "a", 11: "b", 12: "c"}, {}), "no free VNI in 10-12"),
        (Pools({}, FULL), "no free /64 in"),
        (Pools({10: "n1"}, FULL), "no free /64 in"),
    ],
)
def test_exhaustion_fails_first_then_releases(pools: Pools, reason: str) -> None:
    asked = request("n1")
    step = decide("n1", fold_net([asked]), pools, LIMITS, cause(asked))
    assert isinstance(step, ev.NetFailed) and step.reason.startswith(reason)
    facts = fold_net([asked, step])
    release = decide("n1", facts, pools, LIMITS, cause(asked))
    if pools.vni_of("n1") is None:
        assert release is None
    else:
        assert isinstance(release, ev.PoolVniReleased) and release.vni == 10
        assert decide("n1", facts, fold_pools(pools, [release]), LIMITS, cause(asked)) is None


def test_delete_releases_vni_and_prefix_then_deletes() -> None:
    asked = request("n1")
    deleting = ev.NetDeleteRequested(id=new_id(), at=AT, actor="alice", net="n1")
    created = ev.NetCreated(id=new_id(), at=AT, actor="x", net="n1", vni=11,
                            prefix="fd00:1:2:1::/64", ipam="auto")
    facts = fold_net([asked, created, deleting])
    pools = Pools({11: "n1", 10: "other"}, {"fd00:1:2:1::/64": "n1"})
    kinds = []
    while (step := decide("n1", facts, pools, LIMITS, cause(deleting))) is not None:
        kinds.append(step.tag())
        pools = fold_pools(pools, [step])
        facts = fold_net([asked, created, deleting, *([step] if step.aggregate == "net" else [])])
    assert kinds == ["pool.vni_released", "pool.prefix_released", "net.deleted"]
    assert pools == Pools({10: "other"}, {})


def test_a_release_of_what_another_network_holds_changes_nothing() -> None:
    pools = Pools({10: "a"}, {"fd00:1:2::/64": "a"})
    stray = [
        ev.PoolVniReleased(id=new_id(), at=AT, actor="x", pool="vni", vni=10, net="b"),
        ev.PoolPrefixReleased(id=new_id(), at=AT, actor="x", pool="prefix",
                              prefix="fd00:1:2::/64", net="b"),
    ]
    assert fold_pools(pools, stray) == pools


# --- properties over histories ----------------------------------------------------------


@dataclass
class Log:
    """Events by aggregate; an append must name the aggregate's current length."""

    streams: dict[tuple[str, str], list[Event]] = field(default_factory=lambda: defaultdict(list))

    def append(self, event: Event, expected: int) -> bool:
        stream = self.streams[(event.aggregate, event.aggregate_id)]
        if any(e.id == event.id for e in stream):
            return True  # de-duplicated
        if len(stream) != expected:
            return False
        stream.append(event)
        return True

    def snapshot(self, net: str) -> tuple[NetFacts, Pools, dict[str, int]]:
        pool_events = self.streams[("pool", "vni")] + self.streams[("pool", "prefix")]
        seqs = {
            "net": len(self.streams[("net", net)]),
            "vni": len(self.streams[("pool", "vni")]),
            "prefix": len(self.streams[("pool", "prefix")]),
        }
        return fold_net(self.streams[("net", net)]), fold_pools(Pools(), pool_events), seqs

    def settle(self, net: str, trigger: Event) -> None:
        for _ in range(20):
            facts, pools, seqs = self.snapshot(net)
            step = decide(net, facts, pools, LIMITS, cause(trigger))
            if step is None:
                return
            key = "net" if step.aggregate == "net" else step.aggregate_id
            assert self.append(step, seqs[key])
        raise AssertionError("no outcome")

    def live(self) -> dict[str, ev.NetCreated]:
        out = {}
        for (aggregate, ident), events in self.streams.items():
            facts = fold_net(events) if aggregate == "net" else None
            if facts and facts.created and not facts.deleted and not facts.delete_requested:
                out[ident] = facts.created
        return out


def check(log: Log) -> None:
    live = log.live()
    vnis = [c.vni for c in live.values()]
    prefixes = [c.prefix for c in live.values() if c.prefix]
    assert len(set(vnis)) == len(vnis)
    assert len(set(prefixes)) == len(prefixes)
    for created in live.values():
        assert LIMITS.vni_min <= created.vni <= LIMITS.vni_max
        if created.ipam == "none":
            assert created.prefix == ""
        else:
            network = ipaddress.IPv6Network(created.prefix)
            assert network.prefixlen == 64 and network.subnet_of(LIMITS.pool)
    _, pools, _ = log.snapshot("")
    assert set(pools.vnis.values()) == set(live)  # nothing leaks: only live nets hold
    assert set(pools.prefixes.values()) == {n for n, c in live.items() if c.prefix}


ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(["none", "manual", "auto"])),
        st.tuples(st.just("delete"), st.integers(min_value=0, max_value=20)),
    ),
    max_size=25,
)


@settings(max_examples=200)
@given(ops)
def test_no_two_live_networks_share_a_vni_or_prefix(steps: list[tuple[str, object]]) -> None:
    log = Log()
    nets: list[str] = []
    for op, arg in steps:
        if op == "create":
            net = f"n{len(nets)}"
            nets.append(net)
            asked = request(net, arg)  # type: ignore[arg-type]
            assert log.append(asked, 0)
            before = len(log.live())
            _, pools, _ = log.snapshot(net)
            lowest = free_vni(pools, LIMITS)
            log.settle(net, asked)
            facts, _, _ = log.snapshot(net)
            if facts.created is not None:
                assert facts.created.vni == lowest  # released VNIs are reused, lowest first
            else:
                assert facts.failed and len(log.live()) == before
        elif nets:
            net = nets[int(arg) % len(nets)]  # type: ignore[call-overload]
            facts, _, seqs = log.snapshot(net)
            if facts.created is None or facts.delete_requested:
                continue
            deleting = ev.NetDeleteRequested(id=new_id(), at=AT, actor="alice", net=net)
            assert log.append(deleting, seqs["net"])
            log.settle(net, deleting)
            assert fold_net(log.streams[("net", net)]).deleted
        check(log)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=60))
def test_interleaved_allocators_never_hand_out_one_vni_twice(
    schedule: list[tuple[int, bool]],
) -> None:
    """Three allocators, each deciding on a snapshot it may not have refreshed."""
    log = Log()
    nets = ["a", "b", "c"]
    asks = {net: request(net, "auto") for net in nets}
    for asked in asks.values():
        log.append(asked, 0)
    views = {net: log.snapshot(net) for net in nets}
    for who, refresh in [*schedule, *[(i, True) for i in range(3) for _ in range(6)]]:
        net = nets[who]
        if refresh:
            views[net] = log.snapshot(net)
        facts, pools, seqs = views[net]
        step = decide(net, facts, pools, LIMITS, cause(asks[net]))
        if step is not None:
            key = "net" if step.aggregate == "net" else step.aggregate_id
            if not log.append(step, seqs[key]):
                views[net] = log.snapshot(net)  # a conflict: fold again
        check_unique(log)
    assert sorted(c.vni for c in log.live().values()) == [10, 11, 12]
    check(log)


def check_unique(log: Log) -> None:
    _, pools, _ = log.snapshot("")
    held = list(pools.vnis.values())
    assert len(held) == len(set(held))  # one VNI per network
    live = log.live()
    assert len({c.vni for c in live.values()}) == len(live)
