"""The audit trail: summaries, owners, filters, and a VM's audit is exactly its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud.ids import derive_id
from ucloud.replay.audit import AuditLine, audit, summarize

T0 = datetime(2026, 10, 1, tzinfo=UTC)
SPEC = ev.Resources(cpu=2, ram_mib=2048, ssd_mib=10240)


def request_id(key: str) -> str:
    return derive_id("00000000-0000-7000-8000-000000000000", key)


def vm_requested(vm: str, owner: str, at: datetime) -> ev.VmRequested:
    return ev.VmRequested(id=request_id(vm), at=at, actor=owner, vm=vm, owner=owner,
                          name="web", spec=SPEC, image="debian-12")


def chain(vm: str, owner: str, at: datetime) -> list[ev.Event]:
    """A user's request and what the system did because of it, envelopes from Cause.of."""
    first = vm_requested(vm, owner, at)
    scheduled = ev.VmScheduled(
        **ev.Cause.of(first, "system:scheduler", at + timedelta(seconds=1)).envelope("s"),
        vm=vm, host="h1")
    placed = ev.HostVmPlaced(
        **ev.Cause.of(first, "system:scheduler", at + timedelta(seconds=1)).envelope("p"),
        host="h1", vm=vm, resources=SPEC)
    started = ev.VmStarted(
        **ev.Cause.of(scheduled, "system:hostd", at + timedelta(seconds=5)).envelope("a"),
        vm=vm, host="h1")
    crashed = ev.VmCrashed(
        **ev.Cause.of(started, "system:hostd", at + timedelta(minutes=3)).envelope("c"),
        vm=vm, host="h1", reason="oom")
    restarted = ev.VmStarted(
        **ev.Cause.of(crashed, "system:hostd", at + timedelta(minutes=3, seconds=2)).envelope(
            "r"), vm=vm, host="h1")
    return [first, scheduled, placed, started, crashed, restarted]


def test_summaries_show_what_changed() -> None:
    first = vm_requested("v1", "alice", T0)
    assert summarize(first) == (
        "requested owner=alice name=web spec=2cpu/2048MiB-ram/10240MiB-ssd image=debian-12"
    )
    crashed = ev.VmCrashed(id="c", at=T0, actor="system:hostd", vm="v1", host="h1",
                           reason="out of memory")
    assert summarize(crashed) == "crashed host=h1 reason='out of memory'"
    key = ev.UserKeyAdded(id="k", at=T0, actor="alice", user="alice", key="k1", name="laptop",
                          public_key="ssh-ed25519 " + "A" * 200)
    text = summarize(key)
    assert text.startswith("key_added key=k1 name=laptop public_key='ssh-ed25519 AAA")
    assert len(text) < 140
    with_nic = msgspec.structs.replace(
        first, nics=(ev.Nic(network="n1", mac="02:00:00:00:00:01"),), restart="never")
    assert "nics=[n1/02:00:00:00:00:01]" in summarize(with_nic)
    assert "restart=never" in summarize(with_nic)


def test_a_request_and_everything_it_caused_share_the_correlation() -> None:
    events = chain("v1", "alice", T0) + chain("v2", "bob", T0 + timedelta(seconds=1))
    lines = audit(enumerate(events, start=1), vm="v1")
    assert [line.event for line in lines] == [
        "vm.requested", "vm.scheduled", "vm.started", "vm.crashed", "vm.started"
    ]
    assert {line.correlation for line in lines} == {request_id("v1")}
    assert [line.actor for line in lines] == [
        "alice", "system:scheduler", "system:hostd", "system:hostd", "system:hostd"
    ]
    assert all(line.owner == "alice" for line in lines)
    # The restart was caused by the crash, the crash by the start.
    assert lines[4].causation == lines[3].event_id and lines[3].causation == lines[2].event_id


def test_owner_and_time_filters() -> None:
    events = (
        chain("v1", "alice", T0)
        + chain("v2", "bob", T0)
        + [ev.UserKeyAdded(id=request_id("k"), at=T0, actor="alice", user="alice", key="k1",
                           name="laptop", public_key="ssh-ed25519 AAAA")]
        + [ev.NetRequested(id=request_id("n"), at=T0, actor="bob", net="n1", owner="bob",
                           name="lan")]
    )
    alice = audit(enumerate(events, start=1), owner="alice")
    assert {(line.aggregate, line.id) for line in alice} == {("vm", "v1"), ("user", "alice")}
    bob = audit(enumerate(events, start=1), owner="bob")
    assert {(line.aggregate, line.id) for line in bob} == {("vm", "v2"), ("net", "n1")}
    late = audit(enumerate(events, start=1), vm="v1", since=T0 + timedelta(minutes=1),
                 until=T0 + timedelta(minutes=3, seconds=1))
    assert [line.event for line in late] == ["vm.crashed"]


# --- properties ---------------------------------------------------------------------------

VM_STEPS = ("scheduled", "started", "stopped", "crashed", "deleted")


@st.composite
def logs(draw: st.DrawFn) -> list[ev.Event]:
    """Interleaved histories of a few VMs, owners and hosts, with user and host noise."""
    events: list[ev.Event] = []
    vms = [f"vm{i}" for i in range(draw(st.integers(1, 5)))]
    owners = {vm: draw(st.sampled_from(("alice", "bob"))) for vm in vms}
    created: set[str] = set()
    for n in range(draw(st.integers(0, 60))):
        at = T0 + timedelta(seconds=n)
        kind = draw(st.sampled_from(("vm", "vm", "vm", "host", "user")))
        env: dict[str, Any] = {"id": request_id(str(n)), "at": at,
               "correlation": draw(st.sampled_from(("", request_id("c1"), request_id("c2"))))}
        vm = draw(st.sampled_from(vms))
        if kind == "host":
            events.append(ev.HostVmPlaced(**env, actor="system:scheduler", host="h1", vm=vm,
                                          resources=SPEC))
        elif kind == "user":
            events.append(ev.UserKeyAdded(**env, actor="alice", user="alice", key=str(n),
                                          name="k", public_key="ssh-ed25519 A"))
        elif vm not in created:
            created.add(vm)
            events.append(ev.VmRequested(**env, actor=owners[vm], vm=vm, owner=owners[vm],
                                         name="x", spec=SPEC, image="i"))
        else:
            step = draw(st.sampled_from(VM_STEPS))
            cls = {"scheduled": ev.VmScheduled, "started": ev.VmStarted,
                   "stopped": ev.VmStopped, "crashed": ev.VmCrashed, "deleted": ev.VmDeleted}
            extra: dict[str, Any] = {"reason": "r"} if step == "crashed" else {}
            events.append(cls[step](**env, actor="system:hostd", vm=vm, host="h1", **extra))
    return events


@settings(max_examples=150, deadline=None)
@given(logs(), st.integers(0, 4))
def test_a_vms_audit_is_exactly_its_events_in_order(events: list[ev.Event], which: int) -> None:
    vm = f"vm{which}"
    stored = list(enumerate(events, start=1))
    lines = audit(stored, vm=vm)
    expected = [(seq, e) for seq, e in stored if e.aggregate == "vm" and e.aggregate_id == vm]
    assert [line.seq for line in lines] == [seq for seq, _ in expected]
    assert [line.event_id for line in lines] == [e.id for _, e in expected]
    for line, (_, event) in zip(lines, expected, strict=True):
        assert line.actor == event.actor and line.at == event.at
        assert line.correlation == (event.correlation or event.id)  # never empty
        assert line.summary.startswith(event.event_name)
    assert lines == audit(stored, vm=vm)  # the same replay twice


@settings(max_examples=100, deadline=None)
@given(logs(), st.sampled_from(("alice", "bob")))
def test_an_owner_sees_exactly_the_events_of_their_resources(
    events: list[ev.Event], owner: str
) -> None:
    stored = list(enumerate(events, start=1))
    lines = audit(stored, owner=owner)
    owned_vms = {e.vm for e in events if isinstance(e, ev.VmRequested) and e.owner == owner}
    expected = [
        seq for seq, e in stored
        if (e.aggregate == "vm" and e.aggregate_id in owned_vms)
        or (e.aggregate == "user" and e.aggregate_id == owner)
    ]
    assert [line.seq for line in lines] == expected
    assert all(line.owner == owner for line in lines)


def test_audit_lines_round_trip_through_json() -> None:
    lines = audit(enumerate(chain("v1", "alice", T0), start=1))
    assert len(lines) == 6
    assert msgspec.json.decode(msgspec.json.encode(lines), type=list[AuditLine]) == lines


def test_who_opened_a_vms_consoles() -> None:
    events = chain("v1", "alice", T0)
    opened = [
        ev.VmConsoleOpened(id=request_id(f"o{n}"), at=T0 + timedelta(minutes=n), actor=actor,
                           causation=request_id(f"o{n}"), correlation=request_id(f"o{n}"),
                           vm="v1", kind=kind)
        for n, (actor, kind) in enumerate((("alice", "serial"), ("admin", "vnc")), start=1)
    ]
    stored = list(enumerate([*events, *opened], start=1))
    lines = audit(stored, vm="v1", events=frozenset({"vm.console_opened"}))
    assert [(line.actor, line.summary) for line in lines] == [
        ("alice", "console_opened kind=serial"), ("admin", "console_opened kind=vnc"),
    ]
    assert all(line.owner == "alice" for line in lines)
    assert len(audit(stored, vm="v1")) == len(events) - 1 + 2  # the placement is the host's
