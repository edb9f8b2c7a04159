"""Evacuation: the VMs of a host that stays down go elsewhere, or are marked lost.

Theory of operation
-------------------
The liveness monitor appends ``host.<h>.down`` when a host's lease expires. The
``Evacuator`` (run by the scheduler service, beside its capacity ledger) looks at every
host the ledger has down; once it has been down for ``[scheduler] evacuate_after_s``
(``now`` against the ``at`` of its ``down`` event), each VM the ledger holds there is
decided on by ``decide`` (pure) from the VM's ``VmLife`` (``lifecycle.fold``) and whether
its disk is shared storage (RBD, or the filesystem store with ``[images] shared``):

- a VM that should run there (running, scheduled, or crashed with restart ``always``)
  on a shared disk is **evacuated**: ``place()`` picks a live host (the scheduler's
  rules), ``host.<new>.vm_placed`` with OCC on that host, ``vm.<id>.evacuated {from,
  to}`` with OCC on the VM, then ``host.<h>.vm_released``. The dispatcher starts it on
  the new host from the same disk;
- such a VM on a local disk is **lost**: ``vm.<id>.lost {host, reason}``. Its capacity
  stays reserved on the dead host (its disk is there), and the dispatcher leaves a start
  command for that host: a host that comes back runs it again. Deleting a lost VM
  releases the reservation (the migration handler tidies after ``vm.deleted``);
- a migration in flight from the host, or to it before the destination said it was
  ready, is failed first (``vm.migration_failed``); the next pass evacuates the VM;
- stopped VMs, VMs being deleted, and VMs that crashed with restart ``never`` stay;
  a reservation of a VM that is deleted or lives elsewhere is released.

The grace period keeps a host that merely restarts its hostd (or blinks) from losing its
VMs. Several schedulers may run: every id derives from the ``down`` event, the VM and the
sequence it was decided on (and the new host), appends to the VM expect that sequence,
and a scheduler whose evacuation lost that race releases the host it had reserved. A
host that comes back must not run a VM that now runs elsewhere: its hostd stops such
stale copies when it hears ``host.<h>.vm_released`` and when it starts (fencing by the
log, ``hostd/migrate.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ucloud.config import ImagesConfig, SchedulerConfig
from ucloud.errors import ConflictError, UcloudError
from ucloud.eventlog import EventLog
from ucloud.events import (
    Cause,
    HostDown,
    HostVmPlaced,
    HostVmReleased,
    ImageRequested,
    VmEvacuated,
    VmLost,
    VmMigrationFailed,
)
from ucloud.handlers.ledger import LedgerFollower, Taken, reserve
from ucloud.handlers.placement import NoCapacity, place
from ucloud.lifecycle import VmLife, fold

log = logging.getLogger(__name__)

ACTOR = "system:scheduler"
TICK_S = 5.0  # how often a pass looks again while some host's VMs wait


@dataclass(frozen=True, slots=True)
class Down:
    """A host that is down: its ``down`` event and when that happened."""

    host: str
    event: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Wait:
    until: datetime


@dataclass(frozen=True, slots=True)
class Evacuate:
    pass


@dataclass(frozen=True, slots=True)
class MarkLost:
    reason: str


@dataclass(frozen=True, slots=True)
class FailMigration:
    reason: str


@dataclass(frozen=True, slots=True)
class Release:
    reason: str


@dataclass(frozen=True, slots=True)
class Stay:
    reason: str


Decision = Wait | Evacuate | MarkLost | FailMigration | Release | Stay


def should_run(flight: VmLife) -> bool:
    if flight.status in ("running", "scheduled"):
        return True
    return flight.status == "crashed" and flight.restart == "always"


def decide(down: Down, now: datetime, grace_s: float, flight: VmLife, shared: bool) -> Decision:
    """What becomes of a VM the ledger holds on a host that is down (pure)."""
    until = down.at + timedelta(seconds=grace_s)
    if now < until:
        return Wait(until)
    h = down.host
    if flight.status == "none":
        return Stay("the log does not know the VM")
    if flight.status == "deleted":
        return Release("the VM is deleted")
    if flight.host != h:
        if flight.migration is None:
            return Release(f"the VM is on {flight.host or 'no host'}")
        if flight.ready:
            return Stay(f"its migration to {flight.ready} ends at its source")
        return FailMigration(f"the destination {h} went down")
    if flight.deleting:
        return Stay(f"it is being deleted; the delete waits for {h}")
    if flight.migration is not None:
        return FailMigration(f"its host {h} went down")
    if not should_run(flight):
        return Stay(f"it is {flight.status}: it stays on {h}")
    if shared:
        return Evacuate()
    since = down.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return MarkLost(f"host {h} is down since {since} UTC and the VM's disk is on its "
                    "local storage")  # fmt: skip


class Evacuator:
    """Evacuates the VMs of hosts that stay down; ``run`` until cancelled."""

    def __init__(
        self,
        log_: EventLog,
        follower: LedgerFollower,
        settings: SchedulerConfig,
        images: ImagesConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = log_
        self.follower = follower
        self.settings = settings
        self.images = images
        self.clock = clock
        self._downs: dict[str, Down] = {}  # the down event id -> the host and its time
        self._settled: set[tuple[str, str]] = set()  # (down event, vm): nothing more to do
        self._stores: dict[str, str] = {}  # image -> its store kind

    async def run(self) -> None:
        await self.follower.ready.wait()
        while True:
            changed = self.follower.changed()
            try:
                pending = await self.sweep()
            except UcloudError as exc:
                log.warning("evacuation pass failed (%s); trying again", exc)
                pending = True
            wait = min(TICK_S, max(self.settings.evacuate_after_s / 4, 0.2))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait if pending else None):
                    await changed.wait()

    async def sweep(self) -> bool:
        """One pass over the down hosts; whether some VM is still to be seen to."""
        pending = False
        now = self.clock()
        for host in list(self.follower.ledger.hosts.values()):
            if not host.registered or host.up or not host.vms:
                continue
            down = await self._down(host.id, host.since)
            if down is None:
                continue
            for vm in sorted(host.vms):
                if (down.event, vm) not in self._settled:
                    pending |= not await self._one(down, vm, now)
        return pending

    async def _down(self, host: str, since: str) -> Down | None:
        found = self._downs.get(since)
        if found is None:
            stored, _ = await self.log.load("host", host)
            event = next((s.event for s in stored if s.event.id == since), None)
            if not isinstance(event, HostDown):
                return None
            found = self._downs[since] = Down(host=host, event=event.id, at=event.at)
        return found

    async def _one(self, down: Down, vm: str, now: datetime) -> bool:
        """Decide on one VM and act; True when nothing more is to be done for it."""
        stored, last = await self.log.load("vm", vm)
        flight = fold(stored)
        shared = await self._shared(flight)
        decision = decide(down, now, self.settings.evacuate_after_s, flight, shared)
        if isinstance(decision, Wait):
            return False
        cause = Cause(actor=ACTOR, at=now, causation=down.event, correlation=down.event)
        if isinstance(decision, Stay):
            self._settled.add((down.event, vm))
            return True
        if isinstance(decision, Evacuate):
            return await self._evacuate(down, vm, flight, last, cause)
        try:
            if isinstance(decision, MarkLost):
                await self.log.append(
                    VmLost(**cause.envelope(f"lost/{vm}"), vm=vm, host=down.host,
                           reason=decision.reason),
                    expected=last,
                )  # fmt: skip
                self._settled.add((down.event, vm))
                log.warning("vm %s: lost: %s", vm, decision.reason)
            elif isinstance(decision, FailMigration):
                await self.log.append(
                    VmMigrationFailed(**cause.envelope(f"migration_failed/{vm}"), vm=vm,
                                      reason=decision.reason),
                    expected=last,
                )  # fmt: skip
                log.warning("vm %s: migration failed: %s", vm, decision.reason)
                return False  # the next pass evacuates it
            else:
                await self.log.append(HostVmReleased(
                    **cause.envelope(f"released/{vm}"), host=down.host, vm=vm,
                    reason=decision.reason,
                ))  # fmt: skip
                self._settled.add((down.event, vm))
        except ConflictError:
            return False  # the VM moved on meanwhile: the next pass decides again
        return True

    async def _shared(self, flight: VmLife) -> bool:
        if flight.request is None:
            return False
        image = flight.request.image
        kind = self._stores.get(image)
        if kind is None:
            stored, _ = await self.log.load("image", image)
            request = next((s.event for s in stored if isinstance(s.event, ImageRequested)), None)
            kind = self._stores[image] = request.store if request is not None else "fs"
        return self.images.shared_store(kind)

    async def _evacuate(
        self, down: Down, vm: str, flight: VmLife, last: int, cause: Cause
    ) -> bool:
        follower, spec = self.follower, flight.spec
        assert spec is not None
        avoid = {*follower.stale(), down.host}
        outcome = place(spec, follower.ledger, self.settings.policy, avoid)
        if isinstance(outcome, NoCapacity):
            log.warning("vm %s: cannot evacuate from %s yet: %s", vm, down.host, outcome.reason)
            return False
        host = outcome.host
        placed = HostVmPlaced(
            **cause.envelope(f"evacuate/{vm}/{last}/placed/{host}"), host=host, vm=vm,
            resources=spec,
        )
        if isinstance(await reserve(follower, placed), Taken):
            return False
        evacuated = VmEvacuated(
            **cause.envelope(f"evacuated/{vm}/{last}/{host}"), vm=vm, from_host=down.host,
            to_host=host,
        )
        try:
            await self.log.append(evacuated, expected=last)
        except ConflictError:  # another scheduler (or the VM's owner) came first
            await self._give_back(vm, host, last, cause)
            return False
        await self.log.append(HostVmReleased(
            **cause.envelope(f"evacuate/{vm}/released"), host=down.host, vm=vm,
            reason=f"evacuated to {host}",
        ))  # fmt: skip
        log.warning("vm %s: evacuated from %s to %s", vm, down.host, host)
        return True

    async def _give_back(self, vm: str, host: str, last: int, cause: Cause) -> None:
        stored, _ = await self.log.load("vm", vm)
        if fold(stored).host == host:
            return
        await self.log.append(HostVmReleased(
            **cause.envelope(f"evacuate/{vm}/{last}/unused/{host}"), host=host, vm=vm,
            reason="evacuated by another scheduler",
        ))  # fmt: skip
