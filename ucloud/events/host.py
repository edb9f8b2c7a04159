"""Events of the ``host`` aggregate: registry, liveness, the capacity ledger, commands.

The capacity ledger is this aggregate: ``vm_placed`` reserves, ``vm_released`` frees.
``vm_start``/``vm_stop``/``vm_delete``/``vm_migrate_*`` are commands to the host's hostd,
which consumes ``host.<me>.>``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ucloud.events.base import Event
from ucloud.events.types import Nic, Resolved, Resources, RestartPolicy, VmSpec, spec_fields


class HostEvent(Event, frozen=True, kw_only=True):
    host: str
    aggregate: ClassVar[str] = "host"


class HostRegistered(HostEvent, frozen=True, kw_only=True, tag="host.registered"):
    capacity: Resources
    address: str = ""
    router: bool = False


class HostDrained(HostEvent, frozen=True, kw_only=True, tag="host.drained"):
    pass


class HostUndrained(HostEvent, frozen=True, kw_only=True, tag="host.undrained"):
    pass


class HostDown(HostEvent, frozen=True, kw_only=True, tag="host.down"):
    pass


class HostUp(HostEvent, frozen=True, kw_only=True, tag="host.up"):
    pass


class HostVmPlaced(HostEvent, frozen=True, kw_only=True, tag="host.vm_placed"):
    vm: str
    resources: Resources
    migration: bool = False


class HostVmReleased(HostEvent, frozen=True, kw_only=True, tag="host.vm_released"):
    vm: str
    reason: str = ""


class HostVmStart(HostEvent, frozen=True, kw_only=True, tag="host.vm_start"):
    """Start (or create and start) a VM; self-contained so hostd needs no other read.

    The VM's spec travels whole (its fields at the top level, as stored logs have them);
    ``resolved`` is what the spec names as the dispatcher read it (the image's store, the
    networks). A command stored before ``resolved`` existed has none: hostd reads the log.
    """

    vm: str
    owner: str
    name: str
    spec: Resources
    image: str
    nics: tuple[Nic, ...] = ()
    restart: RestartPolicy = "always"
    resolved: Resolved | None = None

    @classmethod
    def of(
        cls, envelope: dict[str, Any], host: str, vm: VmSpec, resolved: Resolved | None = None
    ) -> HostVmStart:
        return cls(**envelope, host=host, **spec_fields(vm), resolved=resolved)

    def vm_spec(self) -> VmSpec:
        return VmSpec(**spec_fields(self))


class HostVmStop(HostEvent, frozen=True, kw_only=True, tag="host.vm_stop"):
    vm: str


class HostVmDelete(HostEvent, frozen=True, kw_only=True, tag="host.vm_delete"):
    vm: str


class HostVmMigrateIn(HostEvent, frozen=True, kw_only=True, tag="host.vm_migrate_in"):
    vm: str
    from_host: str


class HostVmMigrateOut(HostEvent, frozen=True, kw_only=True, tag="host.vm_migrate_out"):
    vm: str
    to_host: str
    uri: str


HOST_EVENTS = (
    HostRegistered,
    HostDrained,
    HostUndrained,
    HostDown,
    HostUp,
    HostVmPlaced,
    HostVmReleased,
    HostVmStart,
    HostVmStop,
    HostVmDelete,
    HostVmMigrateIn,
    HostVmMigrateOut,
)
