"""hostd's side of migration, pure: which migration commands hold, what should be of a VM
migrating here, fencing's leftovers, the incoming command line, reading query-migrate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from ucloud import events as ev
from ucloud.events import Stored
from ucloud.hostd import migrate, rules
from ucloud.hostd.qemu import Launch, qemu_argv
from ucloud.hostd.rules import Adopt, Desired, Receive, Stop, VmFacts

ME = "h2"
AT = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = ev.Resources(cpu=1, ram_mib=128, ssd_mib=1024)


def e(cls: type[ev.Event], **fields: Any) -> ev.Event:
    return cls(id=f"id-{cls.tag()}", at=AT, actor="t", **fields)


def facts(*events: ev.Event) -> VmFacts:
    return rules.fold(Stored(seq, event) for seq, event in enumerate(events, start=1))


RUNNING_H1 = (
    e(ev.VmRequested, vm="v", owner="o", name="n", spec=SPEC, image="i"),
    e(ev.VmScheduled, vm="v", host="h1"),
    e(ev.VmStarted, vm="v", host="h1"),
)
ASKED = (*RUNNING_H1, e(ev.VmMigrationRequested, vm="v"))  # request at sequence 4
READY = (*ASKED, e(ev.VmMigrationReady, vm="v", host=ME, uri="tcp:[::1]:1"))
IN = e(ev.HostVmMigrateIn, host=ME, vm="v", from_host="h1")
OUT = e(ev.HostVmMigrateOut, host="h1", vm="v", to_host=ME, uri="tcp:[::1]:1")


def test_a_delete_acts_only_where_the_vm_is() -> None:
    delete = e(ev.HostVmDelete, host="h1", vm="v")
    moved = facts(*READY, e(ev.VmDeleteRequested, vm="v"),
                  e(ev.VmMigrated, vm="v", from_host="h1", to_host=ME))
    assert rules.judge_command(delete, 9, moved, "h1") == f"the VM is on {ME} now"
    assert rules.judge_command(delete, 9, moved, ME) is None
    assert rules.judge_command(delete, 9, facts(*READY), "h1") is None


def test_the_fold_knows_the_migration_in_flight() -> None:
    assert (facts(*ASKED).migration_seq, facts(*ASKED).ready) == (4, "")
    assert facts(*READY).ready == ME
    done = facts(*READY, e(ev.VmMigrated, vm="v", from_host="h1", to_host=ME))
    assert (done.host, done.migration, done.migration_seq, done.ready) == (ME, None, 0, "")
    failed = facts(*READY, e(ev.VmMigrationFailed, vm="v", reason="r"))
    assert (failed.host, failed.migration, failed.ready) == ("h1", None, "")


@pytest.mark.parametrize(
    ("history", "command", "me", "seq", "verdict"),
    [
        (ASKED, IN, ME, 9, None),
        (READY, OUT, "h1", 9, None),
        (RUNNING_H1, IN, ME, 9, "no migration of the VM is in flight"),
        (ASKED, IN, ME, 3, "no migration of the VM is in flight"),  # an older command
        ((*ASKED, e(ev.VmDeleteRequested, vm="v")), IN, ME, 9, "being deleted"),
        ((*ASKED, e(ev.VmCrashed, vm="v", host="h1", reason="x")), IN, ME, 9, "crashed"),
        (ASKED, IN, "h1", 9, "runs here already"),
        (ASKED, e(ev.HostVmMigrateIn, host=ME, vm="v", from_host="h3"), ME, 9, "not h3"),
        (READY, OUT, ME, 9, "on h1 now"),
        (ASKED, OUT, "h1", 9, "no ready host"),
        (READY, e(ev.HostVmMigrateOut, host="h1", vm="v", to_host="h3", uri="u"), "h1", 9,
         "goes to h2, not h3"),
        ((), IN, ME, 9, "no such VM"),
    ],
)
def test_which_migration_commands_hold(
    history: tuple[ev.Event, ...], command: Any, me: str, seq: int, verdict: str | None
) -> None:
    said = rules.judge_migration(command, seq, facts(*history), me)
    if verdict is None:
        assert said is None
    else:
        assert said is not None and verdict in said


@pytest.mark.parametrize(
    ("history", "me", "want", "left"),
    [
        (READY, ME, Desired.INCOMING, "keep"),  # a QEMU here waits for it
        (ASKED, ME, Desired.GONE, "runtime"),  # not ready yet: a QEMU here is a leftover
        (READY, "h1", Desired.RUN, "keep"),  # the source runs it until it is over
        ((*READY, e(ev.VmMigrated, vm="v", from_host="h1", to_host=ME)), ME, Desired.RUN,
         "keep"),
        ((*READY, e(ev.VmMigrated, vm="v", from_host="h1", to_host=ME)), "h1", Desired.GONE,
         "runtime"),
        ((*RUNNING_H1, e(ev.VmEvacuated, vm="v", from_host="h1", to_host="h3")), "h1",
         Desired.GONE, "runtime"),
        ((*RUNNING_H1, e(ev.VmDeleted, vm="v", host="h1")), "h1", Desired.GONE,
         "runtime and disks"),
        ((), ME, Desired.GONE, "keep"),  # a VM this log does not know: hands off
        ((*RUNNING_H1, e(ev.VmLost, vm="v", host="h1", reason="r")), "h1", Desired.PENDING,
         "keep"),
    ],
)
def test_what_should_be_of_a_migrating_vm(
    history: tuple[ev.Event, ...], me: str, want: Desired, left: str
) -> None:
    assert rules.desired(facts(*history), me) is want
    assert rules.leftovers(facts(*history), me) == left


def test_reconcile_watches_an_incoming_vm_again() -> None:
    actions = rules.reconcile({
        "a": (Desired.INCOMING, True), "b": (Desired.INCOMING, False), "c": (Desired.GONE, True),
        "d": (Desired.RUN, True),
    })  # fmt: skip
    assert actions == [Receive("a"), Stop("c", report=False), Adopt("d")]


def test_the_receiving_qemu_waits_for_the_migration_instead_of_pausing() -> None:
    launch = Launch(vm="v", directory="/r/v", cpu=1, ram_mib=128, accel="tcg", cpu_model="max")
    booting = qemu_argv("qemu", launch)
    receiving = qemu_argv("qemu", msgspec.structs.replace(launch, incoming=True))
    assert "-S" in booting and "-incoming" not in booting
    assert "-S" not in receiving
    assert receiving[receiving.index("-incoming") + 1] == "defer"
    assert [a for a in booting if a != "-S"] == [
        a for a in receiving if a not in ("-incoming", "defer")]


def test_uris_name_the_underlay_address() -> None:
    assert migrate.listen_uri("fd00::12") == "tcp:[fd00::12]:0"
    assert migrate.migration_uri("fd00::12", 4444) == "tcp:[fd00::12]:4444"
    info = {"socket-address": [{"port": "34155", "ipv6": True, "host": "::1", "type": "inet"}]}
    assert migrate.bound_port(info) == 34155
    with pytest.raises(ValueError, match="no listening port"):
        migrate.bound_port({"status": "setup"})


def test_query_migrate_figures() -> None:
    seen = migrate.figures({
        "status": "completed", "setup-time": 1, "downtime": 30, "total-time": 314,
        "ram": {"total": 268967936, "transferred": 103101539, "mbps": 2639.5},
    })  # fmt: skip
    assert seen == migrate.MigrationFigures(
        status="completed", total_ms=314, downtime_ms=30, setup_ms=1,
        transferred_bytes=103101539, ram_bytes=268967936, mbps=2639.5,
    )
    assert migrate.figures({"status": "active"}).status == "active"
    failed = migrate.figures({"status": "failed", "error-desc": "Unable to write to socket"})
    assert migrate.failure_reason(failed, "h2") == (
        "migration to h2 failed: Unable to write to socket; the VM runs on here")
    assert "cancelled" in migrate.failure_reason(migrate.figures({"status": "cancelled"}), "h2")
