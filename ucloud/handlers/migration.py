"""Live migration's control plane: a destination for each request, and the ledger tidied.

Theory of operation
-------------------
A migration is a chain of events, each step taken by whoever holds what it needs::

    gateway     vm.<id>.migration_requested {host?}     (running VM, shared disk)
    here        host.<dst>.vm_placed {migration: true}  (OCC on dst: capacity reserved)
                host.<dst>.vm_migrate_in {from_host}
    hostd dst   vm.<id>.migration_ready {host: dst, uri: tcp:[addr]:port}
    dispatcher  host.<src>.vm_migrate_out {to_host, uri}
    hostd src   vm.<id>.migrated {from, to} + host.<src>.vm_released
                or vm.<id>.migration_failed {reason}   (the VM runs on at the source)

This module holds the pure part (``judge`` of a request on the VM's ``VmLife``, the
lifecycle's fold, ``destination``, ``unused`` reservations) and the handler ``Migrations``
(durable ``migration``, run by the scheduler service beside its capacity ledger). For a
request it loads the VM: a request that is not the one in flight is ignored; a VM that
no longer runs, or runs on the named host already, fails the migration
(``migration_failed`` appended with OCC on the VM). Otherwise the destination is the
admin's host if it fits, else ``place()`` over every host but the source (the scheduler's
rules and policy); the reservation is appended with OCC on that host (``ledger.reserve``, as the
scheduler does), and the destination's hostd is told. No host fits: ``migration_failed``
naming the resource.

When a migration ends (``migrated``, ``migration_failed``) or the VM is deleted, the
reservations the VM no longer uses are released: every one but its host's (all of them
for a deleted VM), unless another migration is in flight by then (its own end decides).
The source of a completed migration releases its own once its QEMU is gone (and its
hostd, should it die first, when it starts again).
Ids derive from the event reacted to, so a redelivery appends nothing twice.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from ucloud.config import SchedulerConfig
from ucloud.errors import ConflictError, LogError
from ucloud.eventlog import EventLog
from ucloud.events import (
    Cause,
    Event,
    HostVmMigrateIn,
    HostVmPlaced,
    HostVmReleased,
    Resources,
    VmDeleted,
    VmMigrated,
    VmMigrationFailed,
    VmMigrationRequested,
    subject,
)
from ucloud.handlers.ledger import LedgerFollower, reserve
from ucloud.handlers.placement import CapacityLedger, NoCapacity, Placement, Policy, place
from ucloud.lifecycle import VmLife, fold

log = logging.getLogger(__name__)

ACTOR = "system:scheduler"
DURABLE = "migration"
SUBJECTS = tuple(
    subject("vm", "*", name)
    for name in ("migration_requested", "migration_failed", "migrated", "deleted")
)


@dataclass(frozen=True, slots=True)
class Move:
    """Go ahead: reserve a destination for the VM running on ``source``."""

    source: str
    spec: Resources
    named: str = ""  # the admin's choice of destination; "" for the scheduler's


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


@dataclass(frozen=True, slots=True)
class Ignore:
    reason: str


def judge(flight: VmLife, request: VmMigrationRequested) -> Move | Fail | Ignore:
    """What a migration request leads to in the VM's state (pure)."""
    if flight.migration is None or flight.migration.id != request.id:
        return Ignore("it is not the migration in flight")
    if flight.deleting or flight.status == "deleted":
        return Fail("the VM is being deleted")
    if flight.status != "running" or not flight.host or flight.spec is None:
        return Fail(f"the VM is {flight.status}, not running")
    if request.host == flight.host:
        return Fail(f"the VM runs on {request.host} already")
    return Move(source=flight.host, spec=flight.spec, named=request.host)


def destination(
    move: Move, ledger: CapacityLedger, policy: Policy, avoid: Collection[str] = ()
) -> Placement | NoCapacity:
    """Where the VM goes: the named host if it fits, else ``place`` away from the source."""
    if not move.named:
        return place(move.spec, ledger, policy, {*avoid, move.source})
    host = ledger.hosts.get(move.named)
    if host is None or not host.registered:
        return NoCapacity("host", f"no host {move.named}")
    outcome = place(move.spec, CapacityLedger.of([host]), policy)
    if isinstance(outcome, NoCapacity):
        why = "it is down or drained" if outcome.resource == "host" else outcome.reason
        return NoCapacity(outcome.resource, f"host {move.named} cannot take it: {why}")
    return outcome


def unused(flight: VmLife, held: Collection[str]) -> list[str]:
    """The hosts whose reservation of the VM can go: all for a deleted VM; none while a
    migration is in flight (its end decides); else all but the VM's host."""
    if flight.status == "deleted":
        return sorted(held)
    if flight.migration is not None:
        return []
    return sorted(set(held) - {flight.host})


class _Again(enum.Enum):
    DECIDE = "decide again"


class Migrations:
    """The handler of migration requests and ends: ``handle`` goes to the consumer runner."""

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
        await self.follower.ready.wait()
        if isinstance(event, VmMigrationRequested):
            await self.start(event, delivered)
        elif isinstance(event, VmMigrationFailed | VmMigrated | VmDeleted):
            await self.tidy(event, delivered)

    async def start(self, request: VmMigrationRequested, delivered: int = 1) -> None:
        cause = Cause.of(request, ACTOR, self.clock())
        for _ in range(self.settings.conflict_retries):
            stored, last = await self.log.load("vm", request.vm)
            verdict = judge(fold(stored), request)
            if isinstance(verdict, Ignore):
                log.info("vm %s: migration request %s ignored: %s", request.vm, request.id,
                         verdict.reason)
                return
            if isinstance(verdict, Move):
                target = await self._reserve(request.vm, verdict, cause)
                if target is _Again.DECIDE:
                    continue
                if isinstance(target, str):
                    await self._tell(request, verdict, target, cause, delivered)
                    return
                verdict = Fail(f"no host to move it to: {target.reason}")
            failed = VmMigrationFailed(
                **cause.envelope("migration_failed"), vm=request.vm, reason=verdict.reason
            )
            try:
                await self.log.append(failed, expected=last)
            except ConflictError:
                continue  # the VM moved on: judge again
            log.info("vm %s: migration refused: %s", request.vm, verdict.reason)
            return
        raise LogError(f"vm {request.vm}: gave up after {self.settings.conflict_retries} tries")

    async def _reserve(self, vm: str, move: Move, cause: Cause) -> str | NoCapacity | _Again:
        """The destination now reserved for the VM, why there is none, or decide again."""
        follower, policy = self.follower, self.settings.policy
        held = [h for h in follower.ledger.hosts_of(vm) if h != move.source]
        if held and (not move.named or move.named in held):
            return move.named or held[0]  # an earlier delivery reserved it
        avoid = follower.stale()
        outcome = destination(move, follower.ledger, policy, avoid)
        if isinstance(outcome, NoCapacity) and (avoid - {move.source}):
            await follower.until(lambda _: not follower.stale(), self.settings.catch_up_s)
            return _Again.DECIDE
        if isinstance(outcome, NoCapacity):
            await follower.catch_up()
            outcome = destination(move, follower.ledger, policy, follower.stale())
        if isinstance(outcome, NoCapacity):
            return outcome
        host = outcome.host
        placed = HostVmPlaced(
            **cause.envelope(f"placed/{host}"), host=host, vm=vm, resources=move.spec,
            migration=True,
        )
        reserved = await reserve(follower, placed)
        return reserved if isinstance(reserved, str) else _Again.DECIDE

    async def _tell(
        self, request: VmMigrationRequested, move: Move, host: str, cause: Cause, delivered: int
    ) -> None:
        command = HostVmMigrateIn(
            **cause.envelope(f"migrate_in/{host}"), host=host, vm=request.vm,
            from_host=move.source,
        )
        if delivered > 1 and await self.log.find(command):
            return
        await self.log.append(command)
        log.info("vm %s: migrating from %s to %s", request.vm, move.source, host)

    async def tidy(
        self, event: VmMigrationFailed | VmMigrated | VmDeleted, delivered: int = 1
    ) -> None:
        """Release the reservations the VM no longer uses."""
        await self.follower.catch_up()
        stored, _ = await self.log.load("vm", event.vm)
        flight = fold(stored)
        cause = Cause.of(event, ACTOR, self.clock())
        held = set(self.follower.ledger.hosts_of(event.vm))
        if isinstance(event, VmMigrated):
            held.discard(event.from_host)  # the source lets go itself
        for host in unused(flight, held):
            released = HostVmReleased(
                **cause.envelope(f"released/{host}"), host=host, vm=event.vm,
                reason=f"not used after {event.event_name}",
            )
            if delivered > 1 and await self.log.find(released):
                continue
            await self.log.append(released)
            log.info("vm %s: reservation on %s released (%s)", event.vm, host, released.reason)
