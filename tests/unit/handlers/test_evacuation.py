"""Evacuation's decisions, pure: a table per rule, and properties over every history."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud import lifecycle
from ucloud.events import Stored
from ucloud.handlers.evacuation import (
    Decision,
    Down,
    Evacuate,
    FailMigration,
    MarkLost,
    Release,
    Stay,
    Wait,
    decide,
)
from ucloud.lifecycle import VmLife

AT = datetime(2026, 1, 1, 12, tzinfo=UTC)
GRACE = 60.0
DOWN = Down(host="h1", event="down-1", at=AT)
LATER = AT + timedelta(seconds=GRACE)
SPEC = ev.Resources(cpu=1, ram_mib=128, ssd_mib=1024)


def e(cls: type[ev.VmEvent], **fields: Any) -> ev.Event:
    return cls(id=f"id-{cls.tag()}", at=AT, actor="t", vm="v", **fields)



def fold(events: Iterable[ev.Event]) -> VmLife:
    return lifecycle.fold(Stored(seq, event) for seq, event in enumerate(events, start=1))


def requested(restart: str = "always") -> ev.Event:
    return e(ev.VmRequested, owner="o", name="n", spec=SPEC, image="i", restart=restart)


ON_H1 = (requested(), e(ev.VmScheduled, host="h1"))
RUNNING = (*ON_H1, e(ev.VmStarted, host="h1"))
LOST = MarkLost("host h1 is down since 2026-01-01 12:00:00 UTC and the VM's disk is on its "
                "local storage")


@pytest.mark.parametrize(
    ("history", "shared", "decision"),
    [
        (RUNNING, True, Evacuate()),
        (RUNNING, False, LOST),
        (ON_H1, True, Evacuate()),  # placed there, not started yet
        ((*RUNNING, e(ev.VmCrashed, host="h1", reason="x")), True, Evacuate()),
        ((requested("never"), ON_H1[1], e(ev.VmCrashed, host="h1", reason="x")), True,
         Stay("it is crashed: it stays on h1")),
        ((*RUNNING, e(ev.VmStopped, host="h1")), True, Stay("it is stopped: it stays on h1")),
        ((*RUNNING, e(ev.VmDeleteRequested)), True,
         Stay("it is being deleted; the delete waits for h1")),
        ((*RUNNING, e(ev.VmLost, host="h1", reason="r")), False,
         Stay("it is lost: it stays on h1")),
        ((*RUNNING, e(ev.VmDeleted, host="h1")), True, Release("the VM is deleted")),
        ((*RUNNING, e(ev.VmMigrated, from_host="h1", to_host="h2")), True,
         Release("the VM is on h2")),
        ((*RUNNING, e(ev.VmMigrationRequested)), True, FailMigration("its host h1 went down")),
        # a migration to the dead host: failed before it was ready there, else the source ends it
        ((requested(), e(ev.VmScheduled, host="h2"), e(ev.VmStarted, host="h2"),
          e(ev.VmMigrationRequested)), True, FailMigration("the destination h1 went down")),
        ((requested(), e(ev.VmScheduled, host="h2"), e(ev.VmStarted, host="h2"),
          e(ev.VmMigrationRequested), e(ev.VmMigrationReady, host="h1", uri="u")), True,
         Stay("its migration to h1 ends at its source")),
        ((), True, Stay("the log does not know the VM")),
    ],
)
def test_decide_after_the_grace_period(
    history: tuple[ev.Event, ...], shared: bool, decision: Decision
) -> None:
    assert decide(DOWN, LATER, GRACE, fold(history), shared) == decision


def test_nothing_moves_within_the_grace_period() -> None:
    soon = LATER - timedelta(milliseconds=1)
    assert decide(DOWN, soon, GRACE, fold(RUNNING), True) == Wait(LATER)
    assert decide(DOWN, AT, 0.0, fold(RUNNING), True) == Evacuate()


EVENTS = st.sampled_from([
    requested(), requested("never"), e(ev.VmScheduled, host="h1"), e(ev.VmScheduled, host="h2"),
    e(ev.VmStarted, host="h1"), e(ev.VmStarted, host="h2"), e(ev.VmStopped, host="h1"),
    e(ev.VmCrashed, host="h1", reason="x"), e(ev.VmMigrationRequested),
    e(ev.VmMigrationReady, host="h1", uri="u"), e(ev.VmMigrationReady, host="h2", uri="u"),
    e(ev.VmMigrated, from_host="h1", to_host="h2"), e(ev.VmMigrationFailed, reason="r"),
    e(ev.VmEvacuated, from_host="h1", to_host="h2"), e(ev.VmLost, host="h1", reason="r"),
    e(ev.VmDeleteRequested), e(ev.VmDeleted, host="h1"),
])


@given(st.lists(EVENTS, max_size=8), st.booleans(), st.floats(0, 2 * GRACE))
def test_what_evacuation_never_does(history: list[ev.Event], shared: bool, after: float) -> None:
    flight = fold(history)
    decision = decide(DOWN, AT + timedelta(seconds=after), GRACE, flight, shared)
    if after < GRACE:
        assert isinstance(decision, Wait)  # never before the grace period is over
        return
    if isinstance(decision, Evacuate):  # only what should run there, and only on shared disks
        assert shared and flight.host == "h1" and flight.migration is None
        assert flight.status in ("running", "scheduled", "crashed") and not flight.deleting
    if isinstance(decision, MarkLost):
        assert not shared and flight.host == "h1"
    if flight.status == "stopped" and flight.host == "h1":
        # a stopped VM waits for its host; a migration from that host is failed first,
        # unless the VM is being deleted (the delete waits for the host and cancels it)
        pending = flight.migration is not None and not flight.deleting
        expected = FailMigration if pending else Stay
        assert isinstance(decision, expected)
    if flight.host not in ("h1", "") and flight.migration is None:
        assert isinstance(decision, Release | Stay)  # it lives elsewhere: only let go here
