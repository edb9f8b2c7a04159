"""Which user intents the current state allows; pure, and the only place that says so.

The gateway decides on the projection's view of the aggregate after waiting until the
projection has applied the aggregate's last event, then appends the intent with OCC on
that event's sequence: a VM that moved on in between makes the append a conflict, and the
gateway decides again.

    start    stopped, crashed                      (a running VM cannot be started)
    stop     scheduled, starting, running, crashed
    migrate  running
    delete   anything but deleting
    drain    a host that is not drained; undrain: a drained host
"""

from __future__ import annotations

from typing import Literal

from ucloud.errors import Refused
from ucloud.projections.views import HostView, VmStatus, VmView

VmAction = Literal["start", "stop", "migrate", "delete"]
HostAction = Literal["drain", "undrain"]

ALLOWED: dict[VmAction, frozenset[VmStatus]] = {
    "start": frozenset({"stopped", "crashed"}),
    "stop": frozenset({"scheduled", "starting", "running", "crashed"}),
    "migrate": frozenset({"running"}),
    "delete": frozenset(
        {
            "requested", "scheduled", "starting", "running", "stopping", "stopped",
            "crashed", "failed", "migrating", "lost",
        }
    ),
}


def check_vm(view: VmView, action: VmAction) -> None:
    """Refused (field ``status``) when ``action`` is not allowed in the VM's status."""
    if view.status not in ALLOWED[action]:
        allowed = ", ".join(sorted(ALLOWED[action]))
        raise Refused("status", f"cannot {action} a VM that is {view.status} (allowed: {allowed})")


def check_migration_target(view: VmView, target: str) -> None:
    if target and target == view.host:
        raise Refused("host", f"the VM already runs on {target}")


def check_host(view: HostView, action: HostAction) -> None:
    if action == "drain" and view.drained:
        raise Refused("drained", f"host {view.id} is already drained")
    if action == "undrain" and not view.drained:
        raise Refused("drained", f"host {view.id} is not drained")
