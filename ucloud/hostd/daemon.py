"""hostd's VMs: commands in, QEMU processes and facts out; crashes restarted; reattaching.

Theory of operation
-------------------
``handle`` is the consumer of ``host.<me>.>``. For ``vm_start``/``vm_stop``/``vm_delete``
it loads the VM's aggregate, lets ``rules.judge_command`` say whether the command still
holds, acts under the VM's lock and appends the fact that answers it, its id derived from
the command's (``vm.<id>.started`` / ``stopped``; for a delete ``host.<me>.vm_released``
then ``vm.<id>.deleted``). A start that fails appends ``vm.<id>.crashed`` with the reason.

- start: disks from the image store (a clone of the image, a blank hdd), a tap per NIC from
  the ``Plumbing``, QEMU launched daemonized and paused, QMP attached, ``cont``; the fact
  is appended once QMP reports the VM running. Starting a VM that runs changes nothing.
- stop: ACPI power button, QMP ``quit`` after ``host.stop_timeout_s``, SIGKILL last; taps
  removed; the disk stays. delete: ``quit`` at once, taps, disks and runtime directory go.

A watcher per running VM waits for its QMP connection to close. If hostd wanted the VM
running, the end was a crash (``vm.<id>.crashed``, fresh id) and the VM is restarted after
``rules.restart_delay`` (policy ``always``) with ``vm.<id>.started`` when it runs; a guest
that powered itself off is ``vm.<id>.stopped`` instead. ``reconcile``, before the consumer
starts, reattaches to every VM of this host (runtime directories and the host's
placements) and makes the host match the log (``rules.reconcile``). ``close`` lets go of
the VMs and never stops one: VMs outlive hostd.

Live migration (``vm_migrate_in``/``vm_migrate_out``) and fencing (a VM whose latest
placement is elsewhere is stopped here, on ``host.<me>.vm_released`` and at reconcile)
live in ``migrate.py``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ucloud.config import Config
from ucloud.errors import InputError, UcloudError
from ucloud.eventlog import EventLog
from ucloud.events import (
    Cause,
    Event,
    HostVmDelete,
    HostVmMigrateIn,
    HostVmMigrateOut,
    HostVmReleased,
    HostVmStart,
    HostVmStop,
    VmCrashed,
    VmDeleted,
    VmStarted,
    VmStopped,
)
from ucloud.events.base import valid_token
from ucloud.hostd import lookup, migrate, rules
from ucloud.hostd.accel import Accelerator
from ucloud.hostd.facts import Facts
from ucloud.hostd.machine import Machine, Want
from ucloud.hostd.plumbing import NicPlan, Plumbing
from ucloud.hostd.qemu import Launch, Qemu, RuntimeDir, StartSpec, TapNic, qemu_argv
from ucloud.hostd.qmp import QmpSession
from ucloud.ids import derive_id
from ucloud.images.base import DiskRef
from ucloud.images.open import open_store

log = logging.getLogger(__name__)

GONE_WAIT_S = 5.0  # after QMP closed, how long QEMU may take to be gone


@dataclass(frozen=True, slots=True)
class StartTiming:
    """One start, for benchmarks: when hostd began, and QEMU's own part (launch to running)."""

    began: datetime
    qemu_s: float


class Hostd:
    def __init__(
        self,
        config: Config,
        log_: EventLog,
        *,
        plumbing: Plumbing,
        qemu: Qemu,
        accel: Accelerator,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.host = config.host
        self.me = config.host.id
        self.actor = f"system:hostd:{self.me}"
        self.log = log_
        self.plumbing = plumbing
        self.qemu = qemu
        self.accel = accel
        self.clock = clock
        self.facts = Facts(log_, self.actor, clock)
        self.root = config.paths.runtime
        self.machines: dict[str, Machine] = {}
        self.timings: dict[str, StartTiming] = {}
        self.migrations: dict[str, migrate.MigrationFigures] = {}  # the last one out, per VM

    def machine(self, vm: str) -> Machine:
        if not valid_token(vm):
            raise InputError("vm", f"{vm!r} is not a VM id")
        found = self.machines.get(vm)
        if found is None:
            found = self.machines[vm] = Machine(RuntimeDir(self.root, vm), self.qemu)
        return found

    def forget(self, vm: str) -> None:
        """The VM is no longer this host's: its machine and figures go."""
        self.machines.pop(vm, None)
        self.timings.pop(vm, None)

    # --- commands -----------------------------------------------------------------------

    async def handle(self, event: Event, seq: int, delivered: int) -> None:
        """The consumer's handler: acts on this host's VM commands."""
        if delivered > 1:
            self.facts.redelivered(event.id)
        if isinstance(event, HostVmMigrateIn | HostVmMigrateOut | HostVmReleased):
            if event.host == self.me:
                await self.handle_migration(event, seq)
            return
        if not isinstance(event, HostVmStart | HostVmStop | HostVmDelete) or event.host != self.me:
            return
        began = self.clock()
        # the command's cause is a VM intent (the dispatcher's): the VM as loaded holds it
        stored, _ = await self.log.load("vm", event.vm, including=_vm_cause(event))
        facts = rules.fold(stored)
        reason = rules.judge_command(event, seq, facts, self.me)
        if reason is not None:
            log.info("vm %s: %s at %d ignored: %s", event.vm, event.tag(), seq, reason)
            return
        cause = Cause.of(event, self.actor, began)
        machine = self.machine(event.vm)
        if isinstance(event, HostVmStart):
            await self.start(machine, lookup.spec_of_command(event), cause, began)
        elif isinstance(event, HostVmStop):
            await self.stop(machine, cause)
        else:
            await self.delete(machine, cause)

    async def handle_migration(
        self, event: HostVmMigrateIn | HostVmMigrateOut | HostVmReleased, seq: int
    ) -> None:
        stored, _ = await self.log.load("vm", event.vm)
        facts = rules.fold(stored)
        if isinstance(event, HostVmReleased):  # fencing: let go of what is not ours
            if rules.desired(facts, self.me) is rules.Desired.GONE:
                await migrate.fence(self, self.machine(event.vm), facts)
            return
        reason = rules.judge_migration(event, seq, facts, self.me)
        if reason is None and isinstance(event, HostVmMigrateIn):
            ready = derive_id(event.id, "migration_ready")
            if any(s.event.id == ready for s in stored):
                reason = "it is waited for already"
        if reason is not None:
            log.info("vm %s: %s at %d ignored: %s", event.vm, event.tag(), seq, reason)
            return
        cause = self.facts.cause(event)
        if isinstance(event, HostVmMigrateIn):
            await migrate.receive(self, event, facts, cause)
        else:
            migrate.start_sending(self, event, cause)

    async def start(
        self, machine: Machine, spec: StartSpec, cause: Cause, began: datetime
    ) -> None:
        machine.want = Want.RUN
        machine.cancel_restart()
        async with machine.lock:
            if machine.want is not Want.RUN:
                return
            try:
                await self._run(machine, spec, began)
            except UcloudError as exc:
                await self._start_failed(machine, exc, self.facts.answer(cause, "start_failed"))
                return
        started = VmStarted(**self.facts.answer(cause, "started"), vm=machine.vm, host=self.me)
        await self.facts.append(started)

    async def stop(self, machine: Machine, cause: Cause) -> None:
        machine.want = Want.HALT
        machine.cancel_restart()
        async with machine.lock:
            how = await machine.shutdown(self.host.stop_timeout_s)
            await self.unplug(machine)
        log.info("vm %s: stopped (%s)", machine.vm, how)
        stopped = VmStopped(**self.facts.answer(cause, "stopped"), vm=machine.vm, host=self.me)
        await self.facts.append(stopped)

    async def delete(self, machine: Machine, cause: Cause) -> None:
        if not await migrate.stays_for_delete(self, machine):
            return  # it moved out meanwhile: its delete goes to its new host
        machine.want = Want.GONE
        machine.cancel_restart()
        async with machine.lock:
            await machine.shutdown(0)
            await self.unplug(machine)
            spec = machine.spec or machine.runtime.read_spec()
            if spec is not None:
                kind = spec.store
            else:
                kind = await lookup.store_of_vm(self.log, machine.vm)
            await asyncio.to_thread(open_store(self.config, kind).delete_disks, machine.vm)
            await asyncio.to_thread(shutil.rmtree, machine.runtime.path, True)
        released = HostVmReleased(
            **self.facts.answer(cause, "vm_released"), host=self.me, vm=machine.vm, reason="deleted"
        )
        await self.facts.append(released)
        deleted = VmDeleted(**self.facts.answer(cause, "deleted"), vm=machine.vm, host=self.me)
        await self.facts.append(deleted)
        self.forget(machine.vm)
        log.info("vm %s: deleted with its disks", machine.vm)

    # --- running QEMU -------------------------------------------------------------------

    async def _run(self, machine: Machine, spec: StartSpec, began: datetime) -> None:
        """Make the VM run (under its lock): adopt a live QEMU, else launch one."""
        if machine.runs():
            machine.spec = machine.spec or machine.runtime.read_spec() or spec
            await machine.resume()
            self.watch(machine)
            return
        spec = await lookup.resolved(self.log, spec)
        machine.runtime.check()
        machine.runtime.write_spec(spec)
        machine.spec = spec
        store = open_store(self.config, spec.store)
        disks = [await asyncio.to_thread(store.clone_disk, spec.image, spec.vm, spec.spec.ssd_mib)]
        if spec.spec.hdd_mib > 0:
            disks.append(
                await asyncio.to_thread(store.create_blank, spec.vm, "hdd", spec.spec.hdd_mib)
            )
        plans = await lookup.nic_plans(self.log, spec)
        taps = await asyncio.to_thread(self.plumbing.attach, plans)
        launch = await self.launch_of(machine, spec, disks, taps, plans)
        qemu_s = await machine.launch(self.argv(launch))
        self.timings[spec.vm] = StartTiming(began=began, qemu_s=qemu_s)
        log.info("vm %s: QEMU (%s) running after %.2fs", spec.vm, launch.accel, qemu_s)
        self.watch(machine)

    async def launch_of(
        self, machine: Machine, spec: StartSpec, disks: list[DiskRef], taps: list[str],
        plans: list[NicPlan], *, incoming: bool = False,
    ) -> Launch:
        """What QEMU runs the VM with; ``incoming``: the VM arrives by live migration."""
        store = open_store(self.config, spec.store)
        return Launch(
            vm=spec.vm, directory=str(machine.runtime.path), cpu=spec.spec.cpu,
            ram_mib=spec.spec.ram_mib, accel=await self.accel.get(),
            cpu_model=self.host.cpu_model,
            disks=tuple(
                tuple(store.qemu_blockdev(disk, node))
                for disk, node in zip(disks, ("root", "hdd"), strict=False)
            ),
            nics=tuple(TapNic(tap=t, mac=p.mac) for t, p in zip(taps, plans, strict=True)),
            incoming=incoming,
        )

    def argv(self, launch: Launch) -> list[str]:
        return qemu_argv(self.host.qemu, launch)

    async def unplug(self, machine: Machine) -> None:
        """Remove the VM's taps (as its runtime spec names them); QEMU must be gone."""
        spec = machine.spec or machine.runtime.read_spec()
        if spec is None or not spec.nics:
            return
        try:
            plans = await lookup.nic_plans(self.log, spec)
        except InputError as exc:
            log.warning("vm %s: cannot name its taps (%s); left in place", machine.vm, exc)
            return
        await asyncio.to_thread(self.plumbing.detach, plans)

    async def _start_failed(
        self, machine: Machine, exc: UcloudError, envelope: dict[str, Any]
    ) -> None:
        log.warning("vm %s: cannot start: %s", machine.vm, exc)
        reason = f"cannot start: {exc}"
        machine.last_reason = reason
        await self.facts.append(VmCrashed(**envelope, vm=machine.vm, host=self.me, reason=reason))
        if not isinstance(exc, InputError) and machine.spec is not None:
            machine.failures += 1
            self._restart_later(machine)

    # --- crashes and restarts -----------------------------------------------------------

    def watch(self, machine: Machine) -> None:
        """Watch a running VM for its QEMU's end: a crash (restarted) or a power-off."""
        session = machine.session
        if session is None or (machine.watcher is not None and not machine.watcher.done()):
            return
        machine.watcher = asyncio.create_task(
            self._watch_one(machine, session), name=f"watch:{machine.vm}"
        )

    async def _watch_one(self, machine: Machine, session: QmpSession) -> None:
        await session.closed.wait()
        shutdown = session.last_event("SHUTDOWN")
        await self.qemu.wait_gone(machine.runtime, GONE_WAIT_S)
        async with machine.lock:
            machine.watcher = None
            if machine.session is not session:
                return  # a stop ended it, or a new QEMU runs
            await machine.detach()
            if machine.runs():
                log.warning("vm %s: QMP closed but QEMU lives; attaching again", machine.vm)
                await machine.attach()
                self.watch(machine)
                return
            data = shutdown.get("data") if shutdown else None
            kind = rules.exit_kind(machine.want is Want.RUN, data)
            if kind == "expected":
                return
            if kind == "powered_off":
                machine.want = Want.HALT
                await self.unplug(machine)
                log.info("vm %s: the guest powered off", machine.vm)
                off = VmStopped(**self.facts.fresh(), vm=machine.vm, host=self.me,
                                reason="the guest powered off")  # fmt: skip
                await self.facts.append(off)
                return
            reason = rules.crash_reason(data)
            ran = time.monotonic() - machine.running_since
            machine.failures = rules.failures_after(
                machine.failures, ran, self.host.restart_stable_s
            )
            machine.last_reason = reason
            log.warning("vm %s: crashed: %s", machine.vm, reason)
            await self.facts.append(
                VmCrashed(**self.facts.fresh(), vm=machine.vm, host=self.me, reason=reason)
            )
            self._restart_later(machine)

    def _restart_later(self, machine: Machine) -> None:
        spec = machine.spec
        if spec is None:
            return
        delay = rules.restart_delay(spec.restart, machine.failures, self.host.restart_backoff_s)
        if delay is None:
            log.info("vm %s: restart policy %s: left crashed", machine.vm, spec.restart)
            return
        machine.cancel_restart()
        machine.restarter = asyncio.create_task(
            self._restart(machine, spec, delay), name=f"restart:{machine.vm}"
        )

    async def _restart(self, machine: Machine, spec: StartSpec, delay: float) -> None:
        log.info("vm %s: restarting in %gs (crash %d in a row)", machine.vm, delay,
                 machine.failures)
        await asyncio.sleep(delay)
        async with machine.lock:
            if machine.want is not Want.RUN or machine.restarter is not asyncio.current_task():
                return
            machine.restarter = None
            try:
                await self._run(machine, spec, self.clock())
            except UcloudError as exc:
                reason = f"restart failed: {exc}"
                log.warning("vm %s: %s", machine.vm, reason)
                machine.failures += 1
                if reason != machine.last_reason:
                    machine.last_reason = reason
                    await self.facts.append(
                        VmCrashed(**self.facts.fresh(), vm=machine.vm, host=self.me, reason=reason)
                    )
                self._restart_later(machine)
                return
        log.info("vm %s: restarted", machine.vm)
        await self.facts.append(VmStarted(**self.facts.fresh(), vm=machine.vm, host=self.me))

    # --- reattaching --------------------------------------------------------------------

    async def reconcile(self) -> list[rules.Action]:
        """Reattach to this host's VMs and make the host match the log; the actions taken."""
        found = set()
        if self.root.is_dir():
            found = {p.name for p in self.root.iterdir() if p.is_dir() and valid_token(p.name)}
        placed = await lookup.placed_vms(self.log, self.me)
        vms = found | placed
        facts: dict[str, rules.VmFacts] = {}
        last: dict[str, str] = {}
        state: dict[str, tuple[rules.Desired, bool]] = {}
        for vm in sorted(vms):
            stored, _ = await self.log.load("vm", vm)
            facts[vm] = rules.fold(stored)
            last[vm] = stored[-1].event.id if stored else ""
            state[vm] = (rules.desired(facts[vm], self.me), self.machine(vm).runs())
        actions = rules.reconcile(state)
        for action in actions:
            try:
                await self._reconcile_one(action, facts[action.vm], state[action.vm][0])
            except UcloudError as exc:
                log.error("vm %s: reconciling (%s) failed: %s", action.vm, action, exc)
        for vm in sorted(vms - {a.vm for a in actions}):
            if state[vm][0] is rules.Desired.GONE:
                try:  # fencing: what is left here of a VM that lives elsewhere (or died)
                    await migrate.fence(self, self.machine(vm), facts[vm])
                except UcloudError as exc:
                    log.error("vm %s: cleaning up after it failed: %s", vm, exc)
                self.machines.pop(vm, None)
        for vm in sorted(placed):  # reservations of VMs that left without letting go
            if rules.leftovers(facts[vm], self.me) != "keep" and not facts[vm].migration:
                released = HostVmReleased(
                    **self.facts.after(last[vm], f"released/{self.me}"), host=self.me, vm=vm,
                    reason="not on this host",
                )
                await self.facts.append(released)
        log.info("reattached: %d VM(s) found, %s", len(vms),
                 ", ".join(f"{type(a).__name__.lower()} {a.vm}" for a in actions) or "no change")
        return actions

    async def _reconcile_one(
        self, action: rules.Action, facts: rules.VmFacts, want: rules.Desired
    ) -> None:
        machine = self.machine(action.vm)
        spec = machine.runtime.read_spec() or lookup.spec_of(facts)
        machine.spec = spec
        if isinstance(action, rules.Adopt):
            machine.want = Want.RUN
            async with machine.lock:
                if want is rules.Desired.RUN and not facts.migration:
                    await machine.resume()
                else:  # a migration in flight: QEMU may have handed the guest over
                    await machine.attach()
                self.watch(machine)
            log.info("vm %s: running, reattached", action.vm)
            await migrate.resume_sending(self, machine, facts)
        elif isinstance(action, rules.Receive):
            async with machine.lock:
                await machine.attach()
            migrate.watch_incoming(self, machine)
            log.info("vm %s: still arriving by migration, watched again", action.vm)
        elif isinstance(action, rules.Stop) and rules.leftovers(facts, self.me) != "keep":
            await migrate.fence(self, machine, facts)  # it lives elsewhere (or is deleted)
        elif isinstance(action, rules.Start):
            machine.want = Want.RUN
            if facts.status != "crashed":
                reason = "QEMU was not running when hostd started"
                machine.last_reason = reason
                await self.facts.append(
                    VmCrashed(**self.facts.fresh(), vm=action.vm, host=self.me, reason=reason)
                )
            machine.failures += 1
            self._restart_later(machine)
        else:
            machine.want = Want.GONE if want is rules.Desired.GONE else Want.HALT
            async with machine.lock:
                await machine.shutdown(0)
                await self.unplug(machine)
            log.warning("vm %s: was running but %s here: stopped", action.vm,
                        "is stopped" if action.report else "does not belong")
            if action.report:
                reason = "found running while stopped; stopped by hostd"
                await self.facts.append(
                    VmStopped(**self.facts.fresh(), vm=action.vm, host=self.me, reason=reason)
                )

    async def close(self) -> None:
        """Let go of every VM (watchers, restarts, QMP sessions); QEMU processes run on."""
        for machine in list(self.machines.values()):
            await machine.forget()


DISPATCHER = "system:dispatcher"


def _vm_cause(command: Event) -> str:
    """The VM intent a command of the dispatcher was caused by (it is in the VM's
    aggregate), or "" for a command of anyone else."""
    return command.causation if command.actor == DISPATCHER else ""
