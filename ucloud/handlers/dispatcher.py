"""The dispatcher: turns VM lifecycle intents into commands to the VM's host.

Theory of operation
-------------------
It consumes ``vm.*.scheduled`` (start the VM where it was placed), ``start_requested``,
``stop_requested`` and ``delete_requested``, and the steps of migration and evacuation:
``migration_ready``, ``migrated``, ``evacuated`` and ``lost`` (durable ``dispatcher``).
For each it loads the VM's aggregate, folds it into a ``VmLife`` (``lifecycle.py``:
status, host, the request, whether a delete was asked for, the migration in flight) and
lets ``dispatch`` decide, purely:

- a command to the host: ``host.<h>.vm_start`` (self-contained: the VM's spec whole, as
  its request made it, and what the spec names resolved from the log when the command is
  sent: the image's store, the networks' VNIs and IPAM), ``vm_stop`` or ``vm_delete``;
- for migration and evacuation: ``host.<source>.vm_migrate_out {to_host, uri}`` once the
  destination is ready; ``host.<new>.vm_start`` for an evacuated VM; for a lost one,
  ``host.<its host>.vm_start``, which waits for that host to come back; after
  ``migrated``, the delete of a VM deleted meanwhile, to its new host (the host it left
  refuses it);
- ``vm.<id>.deleted`` directly, for a delete of a VM that never got a host (requested or
  failed) or whose host died with it (lost); appended expecting the VM's last sequence, so
  that it and a scheduler's ``vm.<id>.scheduled`` cannot both win;
- nothing, with the reason logged, when the intent makes no sense in the VM's state (the
  gateway refuses those earlier; a redelivery of an old intent lands here too).

Ids derive from the intent's id, so a redelivered intent appends nothing new; past the
log's de-duplication window a redelivery looks for the command in its aggregate first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from ucloud.consumer import run_consumer
from ucloud.errors import ConflictError, InputError, LogError
from ucloud.eventlog import EventLog
from ucloud.events import (
    Cause,
    Event,
    HostVmDelete,
    HostVmMigrateOut,
    HostVmStart,
    HostVmStop,
    VmDeleted,
    VmDeleteRequested,
    VmEvacuated,
    VmEvent,
    VmLost,
    VmMigrated,
    VmMigrationReady,
    VmRequested,
    VmScheduled,
    VmStartRequested,
    VmStopRequested,
    subject,
)
from ucloud.lifecycle import VmLife, fold
from ucloud.resolve import resolve
from ucloud.services import ServiceContext

log = logging.getLogger(__name__)

ACTOR = "system:dispatcher"
DURABLE = "dispatcher"
INTENTS = (
    VmScheduled, VmStartRequested, VmStopRequested, VmDeleteRequested, VmMigrationReady,
    VmEvacuated, VmLost, VmMigrated,
)
SUBJECTS = tuple(subject("vm", "*", cls.tag().split(".", 1)[1]) for cls in INTENTS)
RETRIES = 8


def dispatch(state: VmLife, intent: VmEvent, cause: Cause) -> Event | str:
    """The event an intent leads to in the VM's state, or why there is none (pure)."""
    if state.status == "none" or state.request is None:
        return "no such VM"
    if state.status == "deleted":
        return "the VM is deleted"
    if isinstance(intent, VmDeleteRequested):
        if state.status in ("requested", "failed", "lost"):
            return VmDeleted(**cause.envelope("deleted"), vm=intent.vm, host=state.host)
        return HostVmDelete(**cause.envelope("vm_delete"), host=state.host, vm=intent.vm)
    if isinstance(intent, VmMigrated):  # a delete sent to the host it left: send it again
        if not state.deleting or state.host != intent.to_host:
            return "nothing waits for the migration to end"
        return HostVmDelete(**cause.envelope("vm_delete"), host=state.host, vm=intent.vm)
    if state.deleting:
        return "the VM is being deleted"
    if isinstance(intent, VmScheduled):
        if state.status != "scheduled" or state.host != intent.host:
            return f"the VM is {state.status} on {state.host or 'no host'}"
        return _start(state, state.request, cause)
    if isinstance(intent, VmEvacuated | VmLost):
        wanted, there = ("scheduled", intent.to_host) if isinstance(intent, VmEvacuated) else (
            "lost", intent.host)
        if state.status != wanted or state.host != there:
            return f"the VM is {state.status} on {state.host or 'no host'}"
        return _start(state, state.request, cause)
    if isinstance(intent, VmMigrationReady):
        if state.migration is None or state.status != "running" or intent.host == state.host:
            return f"no migration of the VM waits for its source (it is {state.status})"
        return HostVmMigrateOut(
            **cause.envelope("vm_migrate_out"), host=state.host, vm=intent.vm,
            to_host=intent.host, uri=intent.uri,
        )
    if isinstance(intent, VmStartRequested):
        if state.status not in ("stopped", "crashed"):
            return f"a start needs a stopped VM; it is {state.status}"
        return _start(state, state.request, cause)
    if isinstance(intent, VmStopRequested):
        if state.status not in ("scheduled", "running", "crashed"):
            return f"a stop needs a VM on a host; it is {state.status}"
        return HostVmStop(**cause.envelope("vm_stop"), host=state.host, vm=intent.vm)
    return f"{intent.tag()} is not an intent the dispatcher handles"


def _start(state: VmLife, request: VmRequested, cause: Cause) -> HostVmStart:
    return HostVmStart.of(cause.envelope("vm_start"), state.host, request.vm_spec())


async def resolved(log_: EventLog, start: HostVmStart) -> HostVmStart:
    """The start command with what its spec names (image store, networks) as the log has
    them now; as it was when something is missing (hostd then says what)."""
    try:
        found = await resolve(log_, start.vm_spec())
    except InputError:
        return start
    return msgspec.structs.replace(start, resolved=found)


class Dispatcher:
    """The handler of the dispatcher: ``handle`` is given to the consumer runner."""

    def __init__(
        self, log_: EventLog, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.log = log_
        self.clock = clock

    async def handle(self, intent: Event, seq: int, delivered: int) -> None:
        if not isinstance(intent, INTENTS):
            return
        cause = Cause.of(intent, ACTOR, self.clock())
        for _ in range(RETRIES):
            stored, last = await self.log.load("vm", intent.vm, including=intent.id)
            outcome = dispatch(fold(stored), intent, cause)
            if isinstance(outcome, str):
                log.info("vm %s: %s at %d ignored: %s", intent.vm, intent.tag(), seq, outcome)
                return
            if isinstance(outcome, HostVmStart):
                outcome = await resolved(self.log, outcome)
            if delivered > 1 and await self.log.find(outcome):
                return
            expected = last if isinstance(outcome, VmDeleted) else None
            try:
                await self.log.append(outcome, expected=expected)
            except ConflictError:
                continue  # the VM moved (a scheduler placed it meanwhile): decide again
            log.info("vm %s: %s -> %s", intent.vm, intent.tag(), outcome.subject)
            return
        raise LogError(f"vm {intent.vm}: gave up after {RETRIES} conflicts")


async def run(ctx: ServiceContext) -> None:
    """The ``dispatcher`` service."""
    await run_consumer(
        ctx.log, ctx.store, durable=DURABLE, subjects=SUBJECTS, handle=Dispatcher(ctx.log).handle,
        settings=ctx.config.consumer, poison_prefix=f"{ctx.config.etcd.prefix}_poison/",
        name=ctx.name,
    )
