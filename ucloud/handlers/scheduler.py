"""The scheduler: puts each requested VM on a host, without ever overbooking one.

Theory of operation
-------------------
It consumes ``vm.*.requested`` (durable ``scheduler``, shared by every scheduler) and
``host.*.down``. Beside the consumer it follows the host events of the log from sequence
1 into a ``CapacityLedger`` (``LedgerFollower``, ``ledger.py``); the ledger is only ever
the fold of the log, so a scheduler may restart or run in many copies.

For a request: load the VM's aggregate; if it is already scheduled, failed, deleted or
being deleted there is nothing to do. (A first delivery skips the load: the append of
``vm.scheduled`` expects the request's own sequence, so anything that followed the
request makes it conflict, and the VM is loaded then.) A reservation the ledger already
holds for the VM (an earlier delivery that got that far) is reused; otherwise ``place()``
decides and the scheduler reserves (``ledger.reserve``): ``host.<h>.vm_placed`` expecting
the host's last sequence as the ledger knows it. Another scheduler that placed on the
host first makes that a conflict. Either way the ledger is now behind on that host: until
it shows the placement (or passes the sequence that conflicted), decisions pass the host
over, so the next decision need not wait for the follower. Only a decision that finds no
room while passing hosts over waits for them.

Then ``vm.<id>.scheduled`` is appended expecting the VM's last sequence. If the VM moved
meanwhile, it is loaded again: scheduled elsewhere (a concurrent delivery won) or deleted
-> the reservation is released; otherwise the append is tried again. No fit ->
``vm.<id>.scheduling_failed`` naming the resource. Ids derive from the request's id and
the host, so a redelivered request appends nothing twice.

The follower may lag the consumer. A stale ledger cannot overbook (the host's sequence
moved, so the append conflicts) nor use a drained or down host (same), but it could miss
a host registered just before the request; so before a failure, which is final, the
scheduler folds what the log holds beyond its ledger and decides once more.

The scheduler service also runs, on the same ledger, the migration handler (durable
``migration``: a destination for each ``vm.*.migration_requested``, ``migration.py``) and
the evacuator (the VMs of a host down longer than ``evacuate_after_s``,
``evacuation.py``); this consumer only notes ``host.*.down``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from ucloud.config import SchedulerConfig
from ucloud.consumer import run_consumer
from ucloud.errors import ConflictError, LogError
from ucloud.eventlog import EventLog
from ucloud.events import (
    Cause,
    Event,
    HostDown,
    HostVmPlaced,
    HostVmReleased,
    Stored,
    VmRequested,
    VmScheduled,
    VmSchedulingFailed,
    subject,
)
from ucloud.handlers import evacuation, migration
from ucloud.handlers.ledger import LedgerFollower, reserve
from ucloud.handlers.placement import NoCapacity, place
from ucloud.lifecycle import VmLife, fold
from ucloud.metrics import SCHEDULER_CONFLICTS, SCHEDULER_DECISIONS
from ucloud.services import ServiceContext

log = logging.getLogger(__name__)

ACTOR = "system:scheduler"
DURABLE = "scheduler"
SUBJECTS = (subject("vm", "*", "requested"), subject("host", "*", "down"))


def settled(life: VmLife) -> bool:
    """Whether a VM needs no scheduling: it has a host or a failure, or is going away."""
    return life.status != "requested" or life.deleting


class _Again(enum.Enum):
    """What to do when a reservation did not come about."""

    HOST = "decide again"  # the host moved on (or the ledger was behind)
    VM_MOVED = "load the VM again"  # appending the failure conflicted
    DONE = "nothing more"  # the failure is recorded


class Scheduler:
    """The handler of one scheduler: ``handle`` is given to the consumer runner."""

    def __init__(
        self,
        log_: EventLog,
        follower: LedgerFollower,
        settings: SchedulerConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = log_
        self.follower = follower
        self.settings = settings
        self.clock = clock

    async def handle(self, event: Event, seq: int, delivered: int) -> None:
        if isinstance(event, HostDown):
            log.warning("host %s is down; its VMs move after %gs unless it returns",
                        event.host, self.settings.evacuate_after_s)
        elif isinstance(event, VmRequested):
            await self.follower.ready.wait()
            await self.schedule(event, seq, delivered)

    async def schedule(self, request: VmRequested, seq: int = 0, delivered: int = 1) -> None:
        cause = Cause.of(request, ACTOR, self.clock())
        mine = ""  # the host this call reserved
        vm: tuple[list[Stored], int] | None = None
        if seq and delivered == 1:
            # A first delivery takes the request for the whole aggregate: if anything
            # followed it, vm.scheduled (expecting the request's sequence) conflicts, and
            # the VM is loaded then.
            vm = ([Stored(seq, request)], seq)
        for _ in range(self.settings.conflict_retries):
            if vm is None:
                vm = await self.log.load("vm", request.vm)
            stored, vm_last = vm
            if settled(fold(stored)):
                await self._release_unused(request, cause, stored, mine)
                return
            held = self.follower.ledger.hosts_of(request.vm)
            host = mine or (held[0] if held else await self._reserve(request, cause, vm_last))
            if host is _Again.DONE:
                return
            if host is _Again.VM_MOVED:
                vm = None
            if not isinstance(host, str):
                continue
            mine = host
            scheduled = VmScheduled(**cause.envelope(f"scheduled/{host}"), vm=request.vm, host=host)
            try:
                await self.log.append(scheduled, expected=vm_last)
            except ConflictError:
                SCHEDULER_CONFLICTS.labels("vm").inc()
                vm = None  # the VM moved: load it and see
                continue
            SCHEDULER_DECISIONS.labels("scheduled").inc()
            log.info("vm %s scheduled on %s", request.vm, host)
            return
        raise LogError(f"vm {request.vm}: gave up after {self.settings.conflict_retries} conflicts")

    async def _reserve(self, request: VmRequested, cause: Cause, vm_last: int) -> str | _Again:
        """The host now reserved for the VM, or what to do instead."""
        follower, policy = self.follower, self.settings.policy
        avoid = follower.stale()
        outcome = place(request.spec, follower.ledger, policy, avoid)
        if isinstance(outcome, NoCapacity) and avoid:  # not final: wait for those hosts
            await follower.until(lambda _: not follower.stale(), self.settings.catch_up_s)
            return _Again.HOST
        if isinstance(outcome, NoCapacity):  # final: decide again on the newest ledger
            await follower.catch_up()
            outcome = place(request.spec, follower.ledger, policy, follower.stale())
        if isinstance(outcome, NoCapacity):
            failed = VmSchedulingFailed(
                **cause.envelope("scheduling_failed"), vm=request.vm, reason=outcome.reason,
                resource=outcome.resource,
            )
            try:
                await self.log.append(failed, expected=vm_last)
            except ConflictError:
                SCHEDULER_CONFLICTS.labels("vm").inc()
                return _Again.VM_MOVED
            SCHEDULER_DECISIONS.labels("failed").inc()
            log.info("vm %s not scheduled: %s", request.vm, outcome.reason)
            return _Again.DONE
        host = outcome.host
        placed = HostVmPlaced(
            **cause.envelope(f"placed/{host}"), host=host, vm=request.vm, resources=request.spec
        )
        reserved = await reserve(follower, placed)
        return reserved if isinstance(reserved, str) else _Again.HOST

    async def _release_unused(
        self, request: VmRequested, cause: Cause, stored: list[Stored], mine: str
    ) -> None:
        """Give back reservations the VM will not use: ours if it was scheduled elsewhere,
        every one if it was never scheduled (failed, or deleted first)."""
        on = {s.event.host for s in stored if isinstance(s.event, VmScheduled)}
        unused = {mine} - on if on else {mine, *self.follower.ledger.hosts_of(request.vm)}
        for host in sorted(unused - {""}):
            released = HostVmReleased(
                **cause.envelope(f"released/{host}"), host=host, vm=request.vm,
                reason="scheduled elsewhere" if on else "not scheduled",
            )
            await self.log.append(released)
            log.info("vm %s: reservation on %s released (%s)", request.vm, host, released.reason)


async def run(ctx: ServiceContext) -> None:
    """The ``scheduler`` service: a ledger follower, a consumer of VM requests, the
    migration handler and the evacuator."""
    follower = LedgerFollower(ctx.log)
    scheduler = Scheduler(ctx.log, follower, ctx.config.scheduler)
    migrations = migration.Migrations(ctx.log, follower, ctx.config.scheduler)
    evacuator = evacuation.Evacuator(
        ctx.log, follower, ctx.config.scheduler, ctx.config.images
    )
    async with asyncio.TaskGroup() as group:
        group.create_task(follower.run(), name="scheduler:ledger")
        group.create_task(evacuator.run(), name="scheduler:evacuator")
        group.create_task(
            run_consumer(
                ctx.log, ctx.store, durable=migration.DURABLE, subjects=migration.SUBJECTS,
                handle=migrations.handle, settings=ctx.config.consumer,
                poison_prefix=f"{ctx.config.etcd.prefix}_poison/", name=ctx.name,
            ),
            name="scheduler:migration",
        )
        group.create_task(
            run_consumer(
                ctx.log, ctx.store, durable=DURABLE, subjects=SUBJECTS, handle=scheduler.handle,
                settings=ctx.config.consumer, poison_prefix=f"{ctx.config.etcd.prefix}_poison/",
                name=ctx.name,
            ),
            name="scheduler:consumer",
        )
