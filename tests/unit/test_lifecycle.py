"""The VM lifecycle, pure: every (status, event) pair of the table, and properties of the
fold over any history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud import lifecycle
from ucloud.events import Stored
from ucloud.lifecycle import STATUSES, TRANSITIONS, VmLife, evolve, fold

AT = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = ev.Resources(cpu=1, ram_mib=256, ssd_mib=1024)


def e(cls: type[ev.VmEvent], ident: str = "", **fields: Any) -> ev.VmEvent:
    return cls(id=ident or f"id-{cls.tag()}", at=AT, actor="t", vm="v", **fields)


SAMPLE: dict[type[ev.VmEvent], ev.VmEvent] = {
    ev.VmRequested: e(ev.VmRequested, owner="o", name="n", spec=SPEC, image="i"),
    ev.VmScheduled: e(ev.VmScheduled, host="h2"),
    ev.VmSchedulingFailed: e(ev.VmSchedulingFailed, reason="r"),
    ev.VmStartRequested: e(ev.VmStartRequested),
    ev.VmStopRequested: e(ev.VmStopRequested),
    ev.VmDeleteRequested: e(ev.VmDeleteRequested),
    ev.VmMigrationRequested: e(ev.VmMigrationRequested),
    ev.VmStarted: e(ev.VmStarted, host="h2"),
    ev.VmStopped: e(ev.VmStopped, host="h2"),
    ev.VmCrashed: e(ev.VmCrashed, host="h2", reason="r"),
    ev.VmDeleted: e(ev.VmDeleted, host="h2"),
    ev.VmMigrationReady: e(ev.VmMigrationReady, host="h2", uri="u"),
    ev.VmMigrated: e(ev.VmMigrated, from_host="h1", to_host="h2"),
    ev.VmMigrationFailed: e(ev.VmMigrationFailed, reason="r"),
    ev.VmEvacuated: e(ev.VmEvacuated, from_host="h1", to_host="h2"),
    ev.VmLost: e(ev.VmLost, host="h2", reason="r"),
    ev.VmConsoleOpened: e(ev.VmConsoleOpened, kind="serial"),  # an audit fact: no change
    # names of the VM: no change of status either
    ev.VmDnsNameAdded: e(ev.VmDnsNameAdded, name="web.alice.vm.test", zone="vm.test"),
    ev.VmDnsNameRemoved: e(ev.VmDnsNameRemoved, name="web.alice.vm.test"),
    ev.VmPtrSet: e(ev.VmPtrSet, address="fd00::1", name="web.alice.vm.test"),
}

# The table read the other way round: for each event that moves the status, the statuses
# it moves from and the one it moves to. Every other (status, event) pair leaves it be.
HOSTED = ("scheduled", "running", "stopped", "crashed", "lost")
EXPECTED: dict[type[ev.VmEvent], tuple[tuple[str, ...], str]] = {
    ev.VmRequested: (("none",), "requested"),
    ev.VmScheduled: (("requested",), "scheduled"),
    ev.VmSchedulingFailed: (("requested",), "failed"),
    ev.VmStarted: (HOSTED, "running"),
    ev.VmStopped: (HOSTED, "stopped"),
    ev.VmCrashed: (HOSTED, "crashed"),
    ev.VmLost: (HOSTED, "lost"),
    ev.VmEvacuated: (HOSTED, "scheduled"),
    ev.VmDeleted: (("requested", "failed", *HOSTED), "deleted"),
}

PAIRS = [(status, kind) for status in STATUSES for kind in ev.VM_EVENTS]


def test_the_sample_covers_every_vm_event() -> None:
    assert set(SAMPLE) == set(ev.VM_EVENTS)


@pytest.mark.parametrize(("status", "kind"), PAIRS, ids=[f"{s}-{k.tag()}" for s, k in PAIRS])
def test_every_pair_of_the_table(status: lifecycle.Status, kind: type[ev.VmEvent]) -> None:
    froms, to = EXPECTED.get(kind, ((), ""))
    expected = to if status in froms else status
    assert TRANSITIONS.get((status, kind), status) == expected
    after = evolve(VmLife(status=status, host="h1"), 7, SAMPLE[kind])
    assert after.status == expected
    if status in ("none", "deleted") and expected == status:
        assert after == VmLife(status=status, host="h1")  # nothing happens to it


def test_the_table_holds_only_statuses() -> None:
    assert all(a in STATUSES and b in STATUSES for (a, _), b in TRANSITIONS.items())


def test_the_facts_beside_the_status() -> None:
    history = [SAMPLE[ev.VmRequested], SAMPLE[ev.VmScheduled], e(ev.VmStarted, host="h1"),
               e(ev.VmStopRequested), e(ev.VmMigrationRequested, "ask")]  # fmt: skip
    life = fold(Stored(seq, event) for seq, event in enumerate(history, start=1))
    assert (life.status, life.host, life.spec, life.restart) == ("running", "h1", SPEC, "always")
    assert (life.migration_seq, life.last_intent, life.ready, life.deleting) == (5, 5, "", False)
    ready = evolve(life, 6, SAMPLE[ev.VmMigrationReady])
    assert ready.ready == "h2"
    moved = evolve(ready, 7, SAMPLE[ev.VmMigrated])
    assert (moved.status, moved.host, moved.migration, moved.ready) == ("running", "h2", None, "")
    failed = evolve(ready, 7, SAMPLE[ev.VmMigrationFailed])
    assert (failed.host, failed.migration, failed.migration_seq) == ("h1", None, 0)
    assert evolve(life, 8, SAMPLE[ev.VmDeleteRequested]).deleting
    assert evolve(VmLife(status="running"), 3, SAMPLE[ev.VmMigrationReady]).ready == ""


def test_what_the_projection_shows_agrees_with_the_table() -> None:
    for kind, (_, to) in EXPECTED.items():
        if kind not in (ev.VmRequested, ev.VmDeleted):  # they create and remove the view
            assert lifecycle.SHOWN[kind] == to
    assert set(lifecycle.SHOWN) == set(ev.VM_EVENTS) - {
        ev.VmRequested, ev.VmDeleted, ev.VmMigrationReady, ev.VmConsoleOpened,
        ev.VmDnsNameAdded, ev.VmDnsNameRemoved, ev.VmPtrSet}


def on(event: ev.VmEvent, host: str) -> ev.VmEvent:
    if hasattr(event, "to_host"):
        return msgspec.structs.replace(event, to_host=host)
    if hasattr(event, "host"):
        return msgspec.structs.replace(event, host=host)
    return event


EVENTS = st.builds(on, st.sampled_from([SAMPLE[k] for k in ev.VM_EVENTS]),
                   st.sampled_from(["h1", "h2", ""]))


@given(st.lists(EVENTS, max_size=12))
def test_folding_any_history_gives_a_status(history: list[ev.VmEvent]) -> None:
    life = fold(Stored(seq, event) for seq, event in enumerate(history, start=1))
    assert life.status in STATUSES
    assert (life.migration is None) == (life.migration_seq == 0)
    assert life.ready == "" or life.migration is not None
    if life.status != "none":
        assert life.request is not None
