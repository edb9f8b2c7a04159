"""Which user intents the current state allows; pure, and the only place that says so.

The gateway decides on the projection's view of the aggregate after waiting until the
projection has applied the aggregate's last event, then appends the intent with OCC on
that event's sequence: a VM that moved on in between makes the append a conflict, and the
gateway decides again.

    start    stopped, crashed                      (a running VM cannot be started)
    stop     scheduled, starting, running, crashed
    migrate  running, on a disk every host reaches (RBD, or ``[images] shared``)
    delete   anything but deleting
    drain    a host that is not drained; undrain: a drained host
"""

from __future__ import annotations

from typing import Literal

from ucloud.config import ImagesConfig
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


def check_migration_disk(store: str, images: ImagesConfig) -> None:
    """Refused (field ``disk``) when the VM's disk is on one host's local storage."""
    if not images.shared_store(store):
        raise Refused(
            "disk", f"the VM's disk is on its host's local storage (image store {store}, "
            "[images] shared = false): only VMs on RBD or a shared filesystem store can move",
        )


def check_host(view: HostView, action: HostAction) -> None:
    if action == "drain" and view.drained:
        raise Refused("drained", f"host {view.id} is already drained")
    if action == "undrain" and not view.drained:
        raise Refused("drained", f"host {view.id} is not drained")
