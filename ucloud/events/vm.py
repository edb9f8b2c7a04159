"""Events of the ``vm`` aggregate: intents from users, facts from the system."""

from __future__ import annotations

from typing import ClassVar, Literal

from ucloud.events.base import Event
from ucloud.events.types import Nic, Resources, RestartPolicy, VmSpec, spec_fields


class VmEvent(Event, frozen=True, kw_only=True):
    vm: str
    aggregate: ClassVar[str] = "vm"


class VmRequested(VmEvent, frozen=True, kw_only=True, tag="vm.requested"):
    owner: str
    name: str
    spec: Resources
    image: str
    nics: tuple[Nic, ...] = ()
    keys: tuple[str, ...] = ()
    restart: RestartPolicy = "always"
    order: str = ""

    def vm_spec(self) -> VmSpec:
        """The VM this request defines (the one place a spec is made from a request)."""
        return VmSpec(**spec_fields(self))


class VmScheduled(VmEvent, frozen=True, kw_only=True, tag="vm.scheduled"):
    host: str


class VmSchedulingFailed(VmEvent, frozen=True, kw_only=True, tag="vm.scheduling_failed"):
    reason: str
    resource: str = ""


class VmStartRequested(VmEvent, frozen=True, kw_only=True, tag="vm.start_requested"):
    pass


class VmStopRequested(VmEvent, frozen=True, kw_only=True, tag="vm.stop_requested"):
    pass


class VmDeleteRequested(VmEvent, frozen=True, kw_only=True, tag="vm.delete_requested"):
    pass


class VmMigrationRequested(VmEvent, frozen=True, kw_only=True, tag="vm.migration_requested"):
    host: str = ""


class VmStarted(VmEvent, frozen=True, kw_only=True, tag="vm.started"):
    host: str


class VmStopped(VmEvent, frozen=True, kw_only=True, tag="vm.stopped"):
    host: str
    reason: str = ""


class VmCrashed(VmEvent, frozen=True, kw_only=True, tag="vm.crashed"):
    host: str
    reason: str


class VmDeleted(VmEvent, frozen=True, kw_only=True, tag="vm.deleted"):
    host: str = ""


class VmMigrationReady(VmEvent, frozen=True, kw_only=True, tag="vm.migration_ready"):
    host: str
    uri: str


class VmMigrated(VmEvent, frozen=True, kw_only=True, tag="vm.migrated"):
    from_host: str
    to_host: str


class VmMigrationFailed(VmEvent, frozen=True, kw_only=True, tag="vm.migration_failed"):
    reason: str


class VmEvacuated(VmEvent, frozen=True, kw_only=True, tag="vm.evacuated"):
    from_host: str
    to_host: str


class VmLost(VmEvent, frozen=True, kw_only=True, tag="vm.lost"):
    host: str
    reason: str


ConsoleKind = Literal["serial", "vnc"]


class VmConsoleOpened(VmEvent, frozen=True, kw_only=True, tag="vm.console_opened"):
    """Someone (the actor) attached to the VM's console: an audit fact, no state."""

    kind: ConsoleKind


class VmDnsNameAdded(VmEvent, frozen=True, kw_only=True, tag="vm.dns_name_added"):
    """The VM carries the DNS name ``name`` (a full name in the offered zone ``zone``)."""

    name: str
    zone: str


class VmDnsNameRemoved(VmEvent, frozen=True, kw_only=True, tag="vm.dns_name_removed"):
    name: str


class VmPtrSet(VmEvent, frozen=True, kw_only=True, tag="vm.ptr_set"):
    """The reverse name of one of the VM's addresses; ``name`` "" goes back to the default."""

    address: str
    name: str = ""


VM_EVENTS = (
    VmRequested,
    VmScheduled,
    VmSchedulingFailed,
    VmStartRequested,
    VmStopRequested,
    VmDeleteRequested,
    VmMigrationRequested,
    VmStarted,
    VmStopped,
    VmCrashed,
    VmDeleted,
    VmMigrationReady,
    VmMigrated,
    VmMigrationFailed,
    VmEvacuated,
    VmLost,
    VmConsoleOpened,
    VmDnsNameAdded,
    VmDnsNameRemoved,
    VmPtrSet,
)
