"""hostd's rules: which commands hold, desired against actual, exits, restart backoff."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud.events import Stored
from ucloud.hostd import rules
from ucloud.hostd.rules import Adopt, Desired, Start, Stop, VmFacts

ME = "h1"
AT = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = ev.Resources(cpu=1, ram_mib=128, ssd_mib=1024)


def e(cls: type[ev.Event], **fields: Any) -> ev.Event:
    return cls(id=f"id-{cls.tag()}", at=AT, actor="t", **fields)


def requested(restart: str = "always") -> ev.Event:
    return e(ev.VmRequested, vm="v", owner="o", name="n", spec=SPEC, image="i", restart=restart)


def facts(*events: ev.Event) -> VmFacts:
    return rules.fold(Stored(seq, event) for seq, event in enumerate(events, start=1))


RUNNING = (requested(), e(ev.VmScheduled, vm="v", host=ME), e(ev.VmStarted, vm="v", host=ME))
START = e(ev.HostVmStart, host=ME, vm="v", owner="o", name="n", spec=SPEC, image="i")
STOP = e(ev.HostVmStop, host=ME, vm="v")
DELETE = e(ev.HostVmDelete, host=ME, vm="v")


def test_the_fold_follows_status_host_and_requests() -> None:
    folded = facts(*RUNNING, e(ev.VmStopRequested, vm="v"), e(ev.VmStopped, vm="v", host=ME))
    assert (folded.status, folded.host, folded.last_intent) == ("stopped", ME, 4)
    assert folded.request is not None and folded.restart == "always"
    moved = facts(*RUNNING, e(ev.VmMigrated, vm="v", from_host=ME, to_host="h2"))
    assert (moved.status, moved.host) == ("running", "h2")
    deleting = facts(*RUNNING, e(ev.VmDeleteRequested, vm="v"))
    assert deleting.deleting and deleting.status == "running"


@pytest.mark.parametrize(
    ("history", "command", "seq", "verdict"),
    [
        ((), START, 9, "no such VM"),
        (RUNNING, START, 9, None),
        ((*RUNNING, e(ev.VmStopRequested, vm="v")), START, 3, "a later request"),
        ((*RUNNING, e(ev.VmStopRequested, vm="v")), STOP, 5, None),
        ((*RUNNING, e(ev.VmStartRequested, vm="v")), STOP, 2, "a later request"),
        ((*RUNNING, e(ev.VmDeleted, vm="v", host=ME)), START, 9, "the VM is deleted"),
        ((*RUNNING, e(ev.VmDeleted, vm="v", host=ME)), DELETE, 9, "deleted already"),
        ((*RUNNING, e(ev.VmDeleteRequested, vm="v")), DELETE, 9, None),
        ((*RUNNING, e(ev.VmDeleteRequested, vm="v")), STOP, 9, "being deleted"),
        ((requested(), e(ev.VmScheduled, vm="v", host="h2")), START, 9, "on h2 now"),
        ((requested(), e(ev.VmScheduled, vm="v", host=ME)), START, 3, None),
    ],
)
def test_which_commands_hold(
    history: tuple[ev.Event, ...], command: Any, seq: int, verdict: str | None
) -> None:
    said = rules.judge_command(command, seq, facts(*history), ME)
    if verdict is None:
        assert said is None
    else:
        assert said is not None and verdict in said


@pytest.mark.parametrize(
    ("history", "want"),
    [
        ((), Desired.GONE),
        (RUNNING, Desired.RUN),
        ((*RUNNING, e(ev.VmDeleted, vm="v")), Desired.GONE),
        ((*RUNNING, e(ev.VmMigrated, vm="v", from_host=ME, to_host="h2")), Desired.GONE),
        ((*RUNNING, e(ev.VmStopped, vm="v", host=ME)), Desired.HALT),
        ((*RUNNING, e(ev.VmCrashed, vm="v", host=ME, reason="x")), Desired.RUN),
        ((requested("never"), e(ev.VmScheduled, vm="v", host=ME),
          e(ev.VmCrashed, vm="v", host=ME, reason="x")), Desired.HALT),
        ((requested(), e(ev.VmScheduled, vm="v", host=ME)), Desired.PENDING),
        ((*RUNNING, e(ev.VmDeleteRequested, vm="v")), Desired.PENDING),
    ],
)
def test_what_should_be_of_a_vm(history: tuple[ev.Event, ...], want: Desired) -> None:
    assert rules.desired(facts(*history), ME) is want


def test_reconcile_adopts_starts_and_stops() -> None:
    actions = rules.reconcile({
        "a": (Desired.RUN, True),
        "b": (Desired.RUN, False),
        "c": (Desired.HALT, True),
        "d": (Desired.GONE, True),
        "e": (Desired.PENDING, True),
        "f": (Desired.PENDING, False),
        "g": (Desired.HALT, False),
        "h": (Desired.GONE, False),
    })  # fmt: skip
    assert actions == [Adopt("a"), Start("b"), Stop("c", report=True), Stop("d", report=False),
                       Adopt("e")]


@given(st.dictionaries(st.text("abc", min_size=1), st.tuples(st.sampled_from(Desired),
                                                              st.booleans())))
def test_reconcile_never_restarts_a_running_vm_and_never_leaves_one_unwanted(
    vms: dict[str, tuple[Desired, bool]],
) -> None:
    actions = {a.vm: a for a in rules.reconcile(vms)}
    for vm, (want, runs) in vms.items():
        action = actions.get(vm)
        if runs:
            assert not isinstance(action, Start)
            assert isinstance(action, Adopt) == (want in (Desired.RUN, Desired.PENDING))
            assert isinstance(action, Stop) == (want in (Desired.HALT, Desired.GONE))
        else:
            assert isinstance(action, Start) == (want is Desired.RUN)


@pytest.mark.parametrize(
    ("wanted", "shutdown", "kind"),
    [
        (False, None, "expected"),
        (False, {"guest": True, "reason": "guest-shutdown"}, "expected"),
        (True, None, "crashed"),
        (True, {"guest": False, "reason": "host-signal"}, "crashed"),
        (True, {"guest": True, "reason": "guest-shutdown"}, "powered_off"),
    ],
)
def test_how_a_qemu_ended(wanted: bool, shutdown: dict[str, Any] | None, kind: str) -> None:
    assert rules.exit_kind(wanted, shutdown) == kind


def test_crash_reasons_say_what_qemu_said() -> None:
    assert "killed" in rules.crash_reason(None)
    assert "host-signal" in rules.crash_reason({"guest": False, "reason": "host-signal"})


@pytest.mark.parametrize(
    ("policy", "failures", "delay"),
    [
        ("never", 1, None),
        ("always", 0, None),
        ("always", 1, 1.0),
        ("always", 2, 5.0),
        ("always", 3, 30.0),
        ("always", 99, 30.0),
    ],
)
def test_restart_backoff(policy: Any, failures: int, delay: float | None) -> None:
    assert rules.restart_delay(policy, failures, [1.0, 5.0, 30.0]) == delay


def test_a_long_run_starts_the_crash_count_afresh() -> None:
    assert rules.failures_after(4, ran_s=10, stable_s=300) == 5
    assert rules.failures_after(4, ran_s=301, stable_s=300) == 1
