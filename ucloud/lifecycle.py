"""The life of a VM: the statuses it can be in, and how each of its events moves it.

Theory of operation
-------------------
A VM's aggregate (``vm.<id>.*``, with stream sequences) folds into one ``VmLife``: its
status, the host it is on, its request, and the few facts beside the status that the
handlers judge by: whether a delete was asked for, the migration in flight (and the
sequence it was asked at), the host that said it is ready to receive it, and the
sequence of the latest lifecycle request. The dispatcher, the migration handler, the
evacuator and hostd all judge on this one fold; the projection shows what ``SHOWN`` says.

The status moves only along ``TRANSITIONS``, a table (status, event type) -> next status;
a pair not in it leaves the status as it is. A VM that does not exist yet (``none``)
becomes one by its request and by nothing else; a deleted VM stays deleted, whatever
arrives after. A requested VM is scheduled or fails to be; once it has a host
(``ON_A_HOST``) every fact its host or the evacuator reports holds, in whichever order
those come.

Intents (``start_requested``, ``stop_requested``, ``delete_requested``,
``migration_requested``) never change the status: it says what is, and the judges weigh
an intent against it. What a user is shown meanwhile (``starting``, ``stopping``,
``deleting``, ``migrating``) is a display status of the projection: ``SHOWN`` maps each
event to what a view of the VM shows after it, and is never folded here.

Nothing here reads a clock or does I/O; it imports only the event catalog.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal, get_args

from ucloud.events import (
    Event,
    Resources,
    RestartPolicy,
    Stored,
    VmCrashed,
    VmDeleted,
    VmDeleteRequested,
    VmEvacuated,
    VmEvent,
    VmLost,
    VmMigrated,
    VmMigrationFailed,
    VmMigrationReady,
    VmMigrationRequested,
    VmRequested,
    VmScheduled,
    VmSchedulingFailed,
    VmStarted,
    VmStartRequested,
    VmStopped,
    VmStopRequested,
)

Status = Literal[
    "none", "requested", "scheduled", "running", "stopped", "crashed", "failed", "deleted",
    "lost",
]
STATUSES: tuple[Status, ...] = get_args(Status)
ON_A_HOST: tuple[Status, ...] = ("scheduled", "running", "stopped", "crashed", "lost")

# What a host (or the evacuator) reports of a VM that has a host, and the status it makes.
_REPORTED: dict[type[VmEvent], Status] = {
    VmStarted: "running",
    VmStopped: "stopped",
    VmCrashed: "crashed",
    VmLost: "lost",
    VmEvacuated: "scheduled",  # placed anew: it runs again once that host reports it
    VmDeleted: "deleted",
}

TRANSITIONS: dict[tuple[Status, type[VmEvent]], Status] = {
    ("none", VmRequested): "requested",
    ("requested", VmScheduled): "scheduled",
    ("requested", VmSchedulingFailed): "failed",
    ("requested", VmDeleted): "deleted",
    ("failed", VmDeleted): "deleted",
    **{(status, kind): then for status in ON_A_HOST for kind, then in _REPORTED.items()},
}

INTENTS = (VmStartRequested, VmStopRequested, VmDeleteRequested, VmMigrationRequested)
MIGRATION_ENDS = (VmMigrated, VmMigrationFailed, VmEvacuated, VmLost, VmDeleted)

Shown = Literal[
    "requested",  # accepted, waiting for the scheduler
    "scheduled",  # capacity reserved on a host, not started yet
    "starting",
    "running",
    "stopping",
    "stopped",
    "crashed",  # died unasked; hostd restarts it per its restart policy
    "deleting",
    "failed",  # could not be scheduled (reason says why)
    "migrating",
    "lost",  # its host died and its disk was local
]
SHOWN: dict[type[VmEvent], Shown] = {
    VmStartRequested: "starting",
    VmStopRequested: "stopping",
    VmDeleteRequested: "deleting",
    VmMigrationRequested: "migrating",
    # the facts: the status they move the VM to (``TRANSITIONS``)
    VmScheduled: "scheduled",
    VmSchedulingFailed: "failed",
    VmStarted: "running",
    VmStopped: "stopped",
    VmCrashed: "crashed",
    VmLost: "lost",
    VmEvacuated: "scheduled",
    # a migration that ended leaves the VM running, on its new host or on at its source
    VmMigrated: "running",
    VmMigrationFailed: "running",
}
"""What a view of the VM shows after each event (its request creates the view, its
deletion removes it)."""


@dataclass(frozen=True, slots=True)
class VmLife:
    """What the log says of a VM: its status and the facts the judges need beside it."""

    status: Status = "none"
    host: str = ""
    request: VmRequested | None = None
    deleting: bool = False
    migration: VmMigrationRequested | None = None  # the migration in flight
    migration_seq: int = 0  # the stream sequence it was requested at (0: none in flight)
    ready: str = ""  # the host waiting to receive it, once that host said so
    last_intent: int = 0  # the stream sequence of the latest lifecycle request

    @property
    def spec(self) -> Resources | None:
        return self.request.spec if self.request is not None else None

    @property
    def restart(self) -> RestartPolicy:
        return self.request.restart if self.request is not None else "always"


def where(event: VmEvent) -> str | None:
    """The host an event puts the VM on; None when it says nothing of where the VM is."""
    if isinstance(event, VmScheduled | VmStarted | VmStopped | VmCrashed | VmLost):
        return event.host
    if isinstance(event, VmMigrated | VmEvacuated):
        return event.to_host
    return None


def evolve(life: VmLife, seq: int, event: Event) -> VmLife:
    """``life`` after ``event``, stored at stream sequence ``seq``."""
    if not isinstance(event, VmEvent) or life.status == "deleted":
        return life
    status = TRANSITIONS.get((life.status, type(event)))
    if status is None and life.status == "none":
        return life  # nothing happens to a VM before its request
    if status is not None:
        life = replace(life, status=status)
        if isinstance(event, VmRequested):
            life = replace(life, request=event)
    host = where(event)
    if host is not None and (status is not None or isinstance(event, VmMigrated)):
        life = replace(life, host=host)
    if isinstance(event, INTENTS):
        life = replace(life, last_intent=max(life.last_intent, seq))
    if isinstance(event, VmDeleteRequested):
        life = replace(life, deleting=True)
    elif isinstance(event, VmMigrationRequested):
        life = replace(life, migration=event, migration_seq=seq, ready="")
    elif isinstance(event, VmMigrationReady) and life.migration is not None:
        life = replace(life, ready=event.host)
    elif isinstance(event, MIGRATION_ENDS):
        life = replace(life, migration=None, migration_seq=0, ready="")
    return life


def fold(stored: Iterable[Stored]) -> VmLife:
    """The life of a VM from its aggregate, as the log holds it."""
    life = VmLife()
    for item in stored:
        life = evolve(life, item.seq, item.event)
    return life
