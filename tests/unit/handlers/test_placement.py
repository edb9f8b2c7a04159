"""Placement rules: tables for each rule, properties against a plain reference."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud.events import Resources
from ucloud.handlers.placement import (
    CapacityLedger,
    HostCapacity,
    NoCapacity,
    Placement,
    Policy,
    evolve,
    place,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


def r(cpu: int, ram: int, ssd: int, hdd: int = 0) -> Resources:
    return Resources(cpu=cpu, ram_mib=ram, ssd_mib=ssd, hdd_mib=hdd)


def host(name: str, cap: Resources, used: Resources = ev.NOTHING, **state: bool) -> HostCapacity:
    return HostCapacity(id=name, capacity=cap, used=used, **state)


BIG = r(32, 65536, 1_000_000)
SMALL = r(4, 8192, 100_000)


@pytest.mark.parametrize(
    ("hosts", "request_", "policy", "expected"),
    [
        # pack: the fullest host that fits; spread: the emptiest
        ([host("a", BIG), host("b", SMALL)], r(1, 1024, 10), "pack", "b"),
        ([host("a", BIG), host("b", SMALL)], r(1, 1024, 10), "spread", "a"),
        # only one fits the RAM
        ([host("a", BIG), host("b", SMALL)], r(1, 16384, 10), "pack", "a"),
        # RAM fits on the fuller host but CPU does not
        ([host("a", BIG), host("b", SMALL, r(4, 0, 0))], r(1, 1024, 10), "pack", "a"),
        # ties go to the lowest id, whatever the policy
        ([host("c", SMALL), host("b", SMALL), host("d", SMALL)], r(1, 1, 1), "pack", "b"),
        ([host("c", SMALL), host("b", SMALL), host("d", SMALL)], r(1, 1, 1), "spread", "b"),
        # spread: the emptiest group has a host that does not fit ssd; next in group fits
        (
            [host("a", r(8, 4096, 10)), host("b", r(8, 4096, 1000)), host("c", r(8, 1024, 1000))],
            r(1, 512, 100),
            "spread",
            "b",
        ),
        # drained and down hosts get nothing
        ([host("a", BIG, drained=True), host("b", SMALL)], r(1, 1024, 10), "spread", "b"),
        ([host("a", BIG, up=False), host("b", SMALL)], r(1, 1024, 10), "spread", "b"),
        ([host("a", BIG, registered=False), host("b", SMALL)], r(1, 1024, 10), "spread", "b"),
        # hdd counts
        ([host("a", BIG), host("b", r(4, 8192, 10, 5000))], r(1, 1, 1, 100), "spread", "b"),
        # exactly full fits
        ([host("a", SMALL, r(3, 7168, 0))], r(1, 1024, 100_000), "pack", "a"),
    ],
)
def test_placement_table(
    hosts: list[HostCapacity], request_: Resources, policy: Policy, expected: str
) -> None:
    assert place(request_, CapacityLedger.of(hosts), policy) == Placement(expected)


@pytest.mark.parametrize(
    ("hosts", "request_", "resource", "reason"),
    [
        ([], r(1, 1, 1), "host", "no host is up and undrained"),
        ([host("a", BIG, drained=True), host("b", BIG, up=False)], r(1, 1, 1), "host", "no host"),
        (
            [host("a", SMALL), host("b", r(4, 2048, 10))],
            r(1, 16384, 1),
            "ram",
            "ram: needs 16384 MiB, most free on an eligible host is 8192 MiB",
        ),
        ([host("a", SMALL)], r(5, 1, 1), "cpu", "cpu: needs 5 CPUs, most free on an eligible"),
        ([host("a", SMALL, r(0, 0, 99_000))], r(1, 1, 2000), "ssd", "ssd: needs 2000 MiB"),
        ([host("a", SMALL)], r(1, 1, 1, 1), "hdd", "hdd: needs 1 MiB, most free"),
        # each resource fits somewhere, never together: the one short most often is named
        (
            [host("a", r(8, 1024, 10)), host("b", r(1, 8192, 10)), host("c", r(1, 8192, 10))],
            r(2, 2048, 1),
            "cpu",
            "cpu is short on 2 of 3 eligible hosts",
        ),
    ],
)
def test_no_capacity_names_the_resource(
    hosts: list[HostCapacity], request_: Resources, resource: str, reason: str
) -> None:
    for policy in ("pack", "spread"):
        outcome = place(request_, CapacityLedger.of(hosts), policy)  # type: ignore[arg-type]
        assert isinstance(outcome, NoCapacity)
        assert outcome.resource == resource
        assert reason in outcome.reason


def test_evolve_folds_the_host_aggregate_and_leaves_the_old_ledger_alone() -> None:
    def e(cls: type[ev.HostEvent], **fields: object) -> ev.HostEvent:
        return cls(id=f"e{len(fields)}{cls.tag()}", at=AT, actor="t", host="h", **fields)

    registered = e(ev.HostRegistered, capacity=SMALL)
    empty = CapacityLedger()
    one = evolve(empty, [(3, registered)])
    placed = evolve(one, [(5, e(ev.HostVmPlaced, vm="v1", resources=r(1, 1024, 10)))])
    assert empty.hosts == {} and one.hosts["h"].used == ev.NOTHING
    assert placed.hosts["h"].used == r(1, 1024, 10)
    assert placed.hosts_of("v1") == ("h",) and one.hosts_of("v1") == ()
    assert placed.seq_of("h") == 5 and placed.position == 5
    # the same placement again, or an older sequence, changes nothing
    again = evolve(placed, [(5, e(ev.HostVmPlaced, vm="v1", resources=r(1, 1024, 10)))])
    assert again.hosts["h"].used == r(1, 1024, 10)
    stale = evolve(placed, [(4, e(ev.HostVmReleased, vm="v1"))])
    assert stale.hosts["h"].used == r(1, 1024, 10)
    released = evolve(placed, [(9, e(ev.HostVmReleased, vm="v1"))])
    assert released.hosts["h"].used == ev.NOTHING and released.hosts_of("v1") == ()
    drained = evolve(released, [(10, e(ev.HostDrained)), (11, e(ev.HostVmStop, vm="x"))])
    assert drained.hosts["h"].drained and drained.seq_of("h") == 11
    assert place(r(1, 1, 1), drained, "pack") == NoCapacity("host", "no host is up and undrained")
    down = evolve(released, [(12, e(ev.HostDown))])
    assert not down.hosts["h"].up and down.hosts["h"].since == e(ev.HostDown).id
    assert place(r(1, 1, 1), evolve(down, [(13, e(ev.HostUp))]), "pack") == Placement("h")
    # a re-registration keeps the reservations and changes the capacity
    bigger = evolve(placed, [(20, e(ev.HostRegistered, capacity=BIG))])
    assert bigger.hosts["h"].capacity == BIG and bigger.hosts["h"].used == r(1, 1024, 10)
    assert bigger.most_free() == (31, 65536 - 1024, 1_000_000 - 10, 0)


# -- properties against a plain reference ---------------------------------------------


def reference(request_: Resources, hosts: list[HostCapacity], policy: Policy) -> str | None:
    """The rules written the obvious way: every host looked at."""
    fits = [
        h
        for h in hosts
        if h.eligible
        and all(
            getattr(h.free, f) >= getattr(request_, f)
            for f in ("cpu", "ram_mib", "ssd_mib", "hdd_mib")
        )
    ]
    if not fits:
        return None
    sign = 1 if policy == "pack" else -1
    return min(fits, key=lambda h: (sign * h.free.ram_mib, h.id)).id


sizes = st.builds(
    r,
    st.integers(0, 8),
    st.integers(0, 8).map(lambda x: x * 512),
    st.integers(0, 4).map(lambda x: x * 1000),
    st.sampled_from([0, 0, 0, 500]),
)
capacities = st.builds(
    r,
    st.integers(1, 16),
    st.integers(1, 16).map(lambda x: x * 1024),
    st.integers(1, 8).map(lambda x: x * 2000),
    st.sampled_from([0, 1000]),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("place"), sizes),
        st.tuples(st.just("release"), st.integers(0, 1000)),
        st.tuples(st.sampled_from(["drain", "undrain", "down", "up"]), st.integers(0, 7)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    caps=st.lists(capacities, min_size=0, max_size=8),
    ops=operations,
    policy=st.sampled_from(["pack", "spread"]),
)
def test_a_sequence_of_placements_and_releases_never_overcommits(
    caps: list[Resources], ops: list[tuple[str, object]], policy: Policy
) -> None:
    ledger = CapacityLedger()
    seq = 0

    def fold(event: ev.HostEvent) -> None:
        nonlocal ledger, seq
        seq += 1
        ledger = evolve(ledger, [(seq, event)])

    for number, cap in enumerate(caps):
        fold(ev.HostRegistered(id=f"r{number}", at=AT, actor="t", host=f"h{number}", capacity=cap))
    placed: list[tuple[str, str]] = []
    for step, (kind, arg) in enumerate(ops):
        eid = f"op{step}"
        if kind == "place":
            assert isinstance(arg, Resources)
            outcome = place(arg, ledger, policy)
            expected = reference(arg, list(ledger.hosts.values()), policy)
            assert outcome == place(arg, ledger, policy)  # deterministic
            if expected is None:
                assert isinstance(outcome, NoCapacity)  # only when truly nothing fits
                continue
            assert outcome == Placement(expected)
            vm = f"vm{step}"
            fold(ev.HostVmPlaced(id=eid, at=AT, actor="t", host=expected, vm=vm, resources=arg))
            placed.append((expected, vm))
        elif kind == "release":
            assert isinstance(arg, int)
            if placed:
                h, vm = placed.pop(arg % len(placed))
                fold(ev.HostVmReleased(id=eid, at=AT, actor="t", host=h, vm=vm))
        elif caps and isinstance(arg, int):
            cls = {"drain": ev.HostDrained, "undrain": ev.HostUndrained, "down": ev.HostDown,
                   "up": ev.HostUp}[kind]
            fold(cls(id=eid, at=AT, actor="t", host=f"h{arg % len(caps)}"))
        for h in ledger.hosts.values():
            free = h.free
            assert min(free.cpu, free.ram_mib, free.ssd_mib, free.hdd_mib) >= 0, h
            assert h.used == sum(h.vms.values(), ev.NOTHING)
        eligible = [h for h in ledger.hosts.values() if h.eligible]
        assert ledger.eligible() == len(eligible)
        if eligible:
            assert ledger.most_free() == tuple(
                max(getattr(h.free, f) for h in eligible)
                for f in ("cpu", "ram_mib", "ssd_mib", "hdd_mib")
            )
    assert sorted((ledger.hosts_of(vm)[0], vm) for _, vm in placed) == sorted(placed)


@settings(max_examples=100, deadline=None)
@given(
    hosts=st.lists(
        st.tuples(capacities, sizes, st.booleans(), st.booleans()), min_size=1, max_size=12
    ),
    request_=sizes,
    policy=st.sampled_from(["pack", "spread"]),
    data=st.data(),
)
def test_the_decision_does_not_depend_on_the_order_hosts_are_given_in(
    hosts: list[tuple[Resources, Resources, bool, bool]],
    request_: Resources,
    policy: Policy,
    data: st.DataObject,
) -> None:
    views = [
        host(f"h{n:02d}", cap, used if used.cpu <= cap.cpu else ev.NOTHING, up=up, drained=dr)
        for n, (cap, used, up, dr) in enumerate(hosts)
    ]
    shuffled = data.draw(st.permutations(views))
    first = place(request_, CapacityLedger.of(views), policy)
    assert first == place(request_, CapacityLedger.of(shuffled), policy)
    expected = reference(request_, views, policy)
    assert first == Placement(expected) if expected else isinstance(first, NoCapacity)
    # passing hosts over: the choice among the others, by the same rules
    avoid = set(data.draw(st.lists(st.sampled_from([v.id for v in views]))))
    among = reference(request_, [v for v in views if v.id not in avoid], policy)
    passing = place(request_, CapacityLedger.of(views), policy, avoid)
    assert passing == Placement(among) if among else isinstance(passing, NoCapacity)
