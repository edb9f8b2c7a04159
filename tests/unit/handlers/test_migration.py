"""Migration's control plane, pure: the fold, the judge of a request, the destination,
the reservations left to release, the dispatcher's step, the CLI's wait, the disk rule."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud import lifecycle
from ucloud.client.wait import Failed, Pending, Target
from ucloud.client.wait import judge as judge_wait
from ucloud.config import ImagesConfig
from ucloud.errors import Refused
from ucloud.events import Cause, Resources, Stored
from ucloud.gateway.rules import check_migration_disk
from ucloud.handlers import dispatcher
from ucloud.handlers.migration import Fail, Ignore, Move, destination, judge, unused
from ucloud.handlers.placement import CapacityLedger, HostCapacity, NoCapacity, Placement
from ucloud.lifecycle import VmLife

AT = datetime(2026, 1, 1, tzinfo=UTC)
VM = "v"
SPEC = Resources(cpu=1, ram_mib=256, ssd_mib=1024)
BIG = Resources(cpu=8, ram_mib=8192, ssd_mib=100_000)


def e(cls: type[ev.Event], ident: str = "", **fields: Any) -> ev.Event:
    return cls(id=ident or f"id-{cls.tag()}", at=AT, actor="t", **fields)



def fold(events: Iterable[ev.Event]) -> VmLife:
    return lifecycle.fold(Stored(seq, event) for seq, event in enumerate(events, start=1))


REQUESTED = e(ev.VmRequested, vm=VM, owner="o", name="n", spec=SPEC, image="i")
RUNNING = (REQUESTED, e(ev.VmScheduled, vm=VM, host="h1"), e(ev.VmStarted, vm=VM, host="h1"))
ASK = e(ev.VmMigrationRequested, "ask", vm=VM)
ASK_H2 = e(ev.VmMigrationRequested, "ask2", vm=VM, host="h2")
READY = ev.VmMigrationReady(id="ready", at=AT, actor="t", vm=VM, host="h2",
                            uri="tcp:[fd00::2]:4444")


def test_the_fold_follows_the_migration_in_flight() -> None:
    flight = fold([*RUNNING, ASK])
    assert (flight.status, flight.host, flight.migration, flight.ready) == (
        "running", "h1", ASK, "")
    assert fold([*RUNNING, ASK, READY]).ready == "h2"
    done = fold([*RUNNING, ASK, READY, e(ev.VmMigrated, vm=VM, from_host="h1", to_host="h2")])
    assert (done.status, done.host, done.migration, done.ready) == ("running", "h2", None, "")
    failed = fold([*RUNNING, ASK, READY, e(ev.VmMigrationFailed, vm=VM, reason="r")])
    assert (failed.host, failed.migration) == ("h1", None)
    moved = fold([*RUNNING, ASK, e(ev.VmEvacuated, vm=VM, from_host="h1", to_host="h3")])
    assert (moved.status, moved.host, moved.migration) == ("scheduled", "h3", None)
    assert fold([*RUNNING, READY]).ready == ""  # ready without a request: nothing in flight


@pytest.mark.parametrize(
    ("history", "request_", "verdict"),
    [
        ((*RUNNING, ASK), ASK, Move(source="h1", spec=SPEC)),
        ((*RUNNING, ASK_H2), ASK_H2, Move(source="h1", spec=SPEC, named="h2")),
        ((*RUNNING, ASK, ASK_H2), ASK, Ignore("it is not the migration in flight")),
        ((*RUNNING, ASK, e(ev.VmMigrationFailed, vm=VM, reason="r")), ASK,
         Ignore("it is not the migration in flight")),
        ((REQUESTED, e(ev.VmScheduled, vm=VM, host="h1"), ASK), ASK,
         Fail("the VM is scheduled, not running")),
        ((*RUNNING, e(ev.VmStopped, vm=VM, host="h1"), ASK), ASK,
         Fail("the VM is stopped, not running")),
        ((*RUNNING, ASK, e(ev.VmDeleteRequested, vm=VM)), ASK,
         Fail("the VM is being deleted")),
        ((*RUNNING, e(ev.VmMigrationRequested, "here", vm=VM, host="h1")),
         e(ev.VmMigrationRequested, "here", vm=VM, host="h1"),
         Fail("the VM runs on h1 already")),
    ],
)
def test_judge_a_request(
    history: tuple[ev.Event, ...], request_: ev.VmMigrationRequested, verdict: object
) -> None:
    assert judge(fold(history), request_) == verdict


def cap(name: str, used: Resources = ev.NOTHING, **state: Any) -> HostCapacity:
    return HostCapacity(id=name, capacity=BIG, used=used, **state)


LEDGER = CapacityLedger.of([cap("h1"), cap("h2", used=Resources(cpu=7, ram_mib=0, ssd_mib=0)),
                            cap("h3"), cap("h4", drained=True)])


@pytest.mark.parametrize(
    ("move", "outcome"),
    [
        (Move(source="h1", spec=SPEC), Placement("h2")),  # spread, ties: lowest id; never h1
        (Move(source="h2", spec=SPEC), Placement("h1")),
        (Move(source="h1", spec=SPEC, named="h3"), Placement("h3")),
        (Move(source="h1", spec=Resources(cpu=2, ram_mib=1, ssd_mib=1), named="h2"),
         NoCapacity("cpu", "host h2 cannot take it: cpu: needs 2 CPUs, most free on an "
                           "eligible host is 1 CPUs")),
        (Move(source="h1", spec=SPEC, named="h4"),
         NoCapacity("host", "host h4 cannot take it: it is down or drained")),
        (Move(source="h1", spec=SPEC, named="h9"), NoCapacity("host", "no host h9")),
    ],
)
def test_destination(move: Move, outcome: Placement | NoCapacity) -> None:
    assert destination(move, LEDGER, "spread") == outcome


def test_the_only_host_with_room_being_the_source_is_no_capacity() -> None:
    ledger = CapacityLedger.of([cap("h1"), cap("h2", used=BIG)])
    outcome = destination(Move(source="h1", spec=SPEC), ledger, "pack")
    assert isinstance(outcome, NoCapacity) and outcome.resource == "cpu"


hosts = st.lists(
    st.builds(cap, st.sampled_from(["a", "b", "c", "d"]),
              st.builds(Resources, cpu=st.integers(0, 8), ram_mib=st.integers(0, 8192),
                        ssd_mib=st.integers(0, 100_000)),
              up=st.booleans(), drained=st.booleans()),
    unique_by=lambda h: h.id, max_size=4,
)


@given(hosts, st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["", "a", "b"]),
       st.sampled_from(["pack", "spread"]))
def test_a_destination_is_never_the_source_and_always_has_room(
    members: list[HostCapacity], source: str, named: str, policy: Any
) -> None:
    move = Move(source=source, spec=SPEC, named=named if named != source else "")
    outcome = destination(move, CapacityLedger.of(members), policy)
    if isinstance(outcome, Placement):
        chosen = next(h for h in members if h.id == outcome.host)
        assert outcome.host != source and chosen.eligible
        free = chosen.free
        assert free.cpu >= 1 and free.ram_mib >= 256 and free.ssd_mib >= 1024
        assert not move.named or outcome.host == move.named


@pytest.mark.parametrize(
    ("history", "held", "released"),
    [
        ((*RUNNING, ASK, e(ev.VmMigrationFailed, vm=VM, reason="r")), ["h1", "h2"], ["h2"]),
        ((*RUNNING, ASK, e(ev.VmMigrated, vm=VM, from_host="h1", to_host="h2")), ["h1", "h2"],
         ["h1"]),
        ((*RUNNING, ASK), ["h1", "h2"], []),  # in flight: its end decides
        ((*RUNNING, e(ev.VmDeleted, vm=VM, host="h1")), ["h1", "h2"], ["h1", "h2"]),
        ((*RUNNING, e(ev.VmLost, vm=VM, host="h1", reason="r")), ["h1"], []),
    ],
)
def test_which_reservations_go(
    history: tuple[ev.Event, ...], held: list[str], released: list[str]
) -> None:
    assert unused(fold(history), held) == released


MIGRATED = e(ev.VmMigrated, vm=VM, from_host="h1", to_host="h2")
CAUSE = Cause(actor="system:dispatcher", at=AT, causation="c", correlation="c")


@pytest.mark.parametrize(
    ("history", "intent", "expected"),
    [
        ((*RUNNING, ASK), READY, ev.HostVmMigrateOut),
        ((*RUNNING,), READY, "no migration of the VM waits for its source (it is running)"),
        ((*RUNNING, ASK, e(ev.VmMigrationFailed, vm=VM, reason="r")), READY,
         "no migration of the VM waits for its source (it is running)"),
        ((*RUNNING, ASK, e(ev.VmCrashed, vm=VM, host="h1", reason="x")), READY,
         "no migration of the VM waits for its source (it is crashed)"),
        ((*RUNNING, e(ev.VmEvacuated, vm=VM, from_host="h1", to_host="h3")),
         e(ev.VmEvacuated, vm=VM, from_host="h1", to_host="h3"), ev.HostVmStart),
        ((*RUNNING, e(ev.VmEvacuated, vm=VM, from_host="h1", to_host="h3"),
          e(ev.VmStarted, vm=VM, host="h3")),
         e(ev.VmEvacuated, vm=VM, from_host="h1", to_host="h3"), "the VM is running on h3"),
        ((*RUNNING, e(ev.VmLost, vm=VM, host="h1", reason="r")),
         e(ev.VmLost, vm=VM, host="h1", reason="r"), ev.HostVmStart),
        ((*RUNNING, e(ev.VmLost, vm=VM, host="h1", reason="r"), e(ev.VmDeleteRequested, vm=VM)),
         e(ev.VmLost, vm=VM, host="h1", reason="r"), "the VM is being deleted"),
        # deleted while it moved: the delete went to the host it left, so again to the new one
        ((*RUNNING, ASK, e(ev.VmDeleteRequested, vm=VM), MIGRATED), MIGRATED, ev.HostVmDelete),
        ((*RUNNING, ASK, MIGRATED), MIGRATED, "nothing waits for the migration to end"),
    ],
)
def test_the_dispatchers_steps(
    history: tuple[ev.Event, ...], intent: ev.VmEvent, expected: type[ev.Event] | str
) -> None:
    outcome = dispatcher.dispatch(fold(history), intent, CAUSE)
    if isinstance(expected, str):
        assert outcome == expected
        return
    assert isinstance(outcome, expected)
    if isinstance(outcome, ev.HostVmMigrateOut):
        assert (outcome.host, outcome.to_host, outcome.uri) == ("h1", "h2", READY.uri)
    elif isinstance(outcome, ev.HostVmStart):
        assert outcome.host == getattr(intent, "to_host", "h1") and outcome.spec == SPEC
    elif isinstance(outcome, ev.HostVmDelete):
        assert outcome.host == "h2"


def view(status: str, host: str, reason: str = "") -> dict[str, Any]:
    return {"id": VM, "status": status, "host": host, "reason": reason}


@pytest.mark.parametrize(
    ("seen", "verdict"),
    [
        (view("migrating", "h1"), Pending()),
        (view("running", "h1"), Pending()),
        (view("running", "h1", "migration to h2 failed: boom; the VM runs on here"),
         Failed("did not move: migration to h2 failed: boom; the VM runs on here")),
        (view("running", "h2"), None),
    ],
)
def test_a_migration_wait_ends_when_it_failed(seen: dict[str, Any], verdict: object) -> None:
    said = judge_wait(Target("running", away_from="h1"), seen)
    assert said == verdict if verdict is not None else not isinstance(said, Failed | Pending)


@pytest.mark.parametrize(
    ("store", "shared", "allowed"),
    [("rbd", False, True), ("rbd", True, True), ("fs", True, True), ("fs", False, False)],
)
def test_only_shared_disks_migrate(store: str, shared: bool, allowed: bool) -> None:
    images = ImagesConfig(shared=shared)
    assert images.shared_store(store) is allowed
    if allowed:
        check_migration_disk(store, images)
    else:
        with pytest.raises(Refused) as refused:
            check_migration_disk(store, images)
        assert refused.value.field == "disk" and "local storage" in refused.value.reason
