"""What hostd decides, from what it knows: every rule of hostd, pure.

Theory of operation
-------------------
hostd knows three things about a VM: what the log says of it (``VmLife``, the
lifecycle's fold of its aggregate with stream sequences, ``lifecycle.py``), whether its
QEMU runs here (from the pid file and QMP), and how a QEMU that ended ended (QMP's last
``SHUTDOWN`` event). From those:

- ``judge_command``: whether a command (``host.<me>.vm_start|vm_stop|vm_delete``) is acted
  on. A command for a VM that is deleted or placed elsewhere is not; a start or stop that
  a later lifecycle request of the VM superseded is not (a new hostd reading its
  host's commands from the start acts only on the ones that still hold).
  ``judge_migration`` does the same for ``vm_migrate_in`` (this host receives a running
  VM) and ``vm_migrate_out`` (this host sends it): only while that migration is in flight.
- ``desired``: what should be of the VM on this host: RUN, HALT (no QEMU, keep the
  disk), GONE (not ours, or deleted: no QEMU), INCOMING (a migration to this host is in
  flight: a QEMU waits for the VM) or PENDING (a command is on its way and will say).
- ``reconcile``: desired against actual, for every VM found in the runtime directory or
  placed on this host, when hostd starts. A VM that runs and should is adopted (never
  restarted), one that should run and does not is started (after a ``crashed`` fact),
  one that runs and should not is stopped and reported; an incoming migration is watched
  again. Fencing by the log: a VM whose latest placement is another host is stopped
  without a report, and ``leftovers`` says what of it may go from this host.
- ``exit_kind``: a QEMU that ended while hostd wanted it running crashed, unless the guest
  powered itself off.
- ``restart_delay`` / ``failures_after``: the backoff of restarts after crashes.

Nothing here reads a clock, a file or the network.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ucloud.events import (
    HostVmDelete,
    HostVmMigrateIn,
    HostVmMigrateOut,
    HostVmStart,
    HostVmStop,
)
from ucloud.events.types import RestartPolicy
from ucloud.lifecycle import VmLife
from ucloud.lifecycle import fold as fold

VmFacts = VmLife  # what the log says of a VM: the lifecycle's fold (``fold``)


Command = HostVmStart | HostVmStop | HostVmDelete


def judge_command(command: Command, seq: int, facts: VmLife, me: str) -> str | None:
    """None when hostd acts on ``command`` (at stream sequence ``seq``); else why not."""
    if facts.status == "none":
        return "no such VM"
    if isinstance(command, HostVmDelete):
        if facts.status == "deleted":
            return "the VM is deleted already"
        if facts.host and facts.host != me:  # it moved: its disk is not this host's to delete
            return f"the VM is on {facts.host} now"
        return None
    if facts.status == "deleted":
        return "the VM is deleted"
    if facts.host and facts.host != me:
        return f"the VM is on {facts.host} now"
    if facts.deleting:
        return "the VM is being deleted"
    if facts.last_intent > seq:
        return "a later request of the VM superseded it"
    return None


MigrationCommand = HostVmMigrateIn | HostVmMigrateOut


def judge_migration(command: MigrationCommand, seq: int, facts: VmLife, me: str) -> str | None:
    """None when hostd acts on a migration command (at sequence ``seq``); else why not."""
    if facts.status in ("none", "deleted"):
        return "no such VM" if facts.status == "none" else "the VM is deleted"
    if facts.deleting:
        return "the VM is being deleted"
    if facts.migration is None or facts.migration_seq > seq:
        return "no migration of the VM is in flight"
    if facts.last_intent > seq:
        return "a later request of the VM superseded it"
    if facts.status != "running":
        return f"the VM is {facts.status}, not running"
    if isinstance(command, HostVmMigrateIn):
        if facts.host == me:
            return "the VM runs here already"
        if facts.host != command.from_host:
            return f"the VM is on {facts.host or 'no host'}, not {command.from_host}"
        return None
    if facts.host != me:
        return f"the VM is on {facts.host or 'no host'} now"
    if facts.ready != command.to_host:
        return f"the migration goes to {facts.ready or 'no ready host'}, not {command.to_host}"
    return None


class Desired(enum.Enum):
    RUN = "run"  # a QEMU should run here
    HALT = "halt"  # no QEMU; the VM (and its disk) stay
    GONE = "gone"  # not a VM of this host (deleted, unknown, or placed elsewhere)
    INCOMING = "incoming"  # migrating to this host: a QEMU here waits for it
    PENDING = "pending"  # a command on its way decides (scheduled, being deleted)


def desired(facts: VmLife, me: str) -> Desired:
    if facts.status in ("none", "deleted"):
        return Desired.GONE
    if facts.host and facts.host != me:
        return Desired.INCOMING if facts.ready == me else Desired.GONE
    if facts.deleting:
        return Desired.PENDING
    if facts.status == "running":
        return Desired.RUN
    if facts.status == "crashed":
        return Desired.RUN if facts.restart == "always" else Desired.HALT
    if facts.status == "stopped":
        return Desired.HALT
    return Desired.PENDING


@dataclass(frozen=True, slots=True)
class Adopt:
    """Runs and should (or a command will say): watch it, change nothing."""

    vm: str


@dataclass(frozen=True, slots=True)
class Start:
    """Should run but does not: it crashed while no hostd watched. Report, then start."""

    vm: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Runs but should not. ``report``: append ``vm.stopped`` (the VM is ours)."""

    vm: str
    report: bool


@dataclass(frozen=True, slots=True)
class Receive:
    """A QEMU waits for (or receives) the VM migrating here: watch how that ends."""

    vm: str


Action = Adopt | Start | Stop | Receive


def reconcile(vms: Mapping[str, tuple[Desired, bool]]) -> list[Action]:
    """The actions that make this host match the log: vm -> (desired, QEMU runs)."""
    actions: list[Action] = []
    for vm, (want, runs) in sorted(vms.items()):
        if runs and want is Desired.INCOMING:
            actions.append(Receive(vm))
        elif runs and want in (Desired.RUN, Desired.PENDING):
            actions.append(Adopt(vm))
        elif runs:
            actions.append(Stop(vm, report=want is Desired.HALT))
        elif want is Desired.RUN:
            actions.append(Start(vm))
    return actions


Leftovers = Literal["keep", "runtime", "runtime and disks"]


def leftovers(facts: VmLife, me: str) -> Leftovers:
    """What of a VM that does not run here may be removed from this host (its QEMU gone).

    A VM that lives on elsewhere leaves its runtime directory (its disk is shared storage:
    a VM on a local disk never moves); a deleted one its disks too (a copy on local storage
    is garbage once the VM is deleted). A VM this log does not know, or that is or may
    become this host's, keeps everything.
    """
    if facts.status == "deleted":
        return "runtime and disks"
    if desired(facts, me) is Desired.GONE and facts.status != "none":
        return "runtime"
    return "keep"


ExitKind = Literal["expected", "powered_off", "crashed"]


def exit_kind(wanted_running: bool, shutdown: Mapping[str, object] | None) -> ExitKind:
    """How a QEMU that ended ended. ``shutdown``: the data of QMP's last SHUTDOWN event."""
    if not wanted_running:
        return "expected"
    if shutdown is not None and shutdown.get("guest") is True:
        return "powered_off"
    return "crashed"


def crash_reason(shutdown: Mapping[str, object] | None) -> str:
    if shutdown is None:
        return "QEMU ended without being asked to (killed or crashed)"
    return f"QEMU shut down without being asked to ({shutdown.get('reason', 'unknown')})"


def restart_delay(policy: RestartPolicy, failures: int, backoff: Sequence[float]) -> float | None:
    """Seconds before restart number ``failures`` (1: the first crash in a row), or None
    when the policy says not to restart."""
    if policy == "never" or failures < 1:
        return None
    if not backoff:
        return 0.0
    return backoff[min(failures, len(backoff)) - 1]


def failures_after(failures: int, ran_s: float, stable_s: float) -> int:
    """The crash count after a run of ``ran_s`` seconds that ended in a crash."""
    return 1 if ran_s >= stable_s else failures + 1
