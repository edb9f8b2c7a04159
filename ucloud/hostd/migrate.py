"""Live migration on a host: receiving a running VM, sending one, and fencing by the log.

Theory of operation
-------------------
Receiving (``host.<me>.vm_migrate_in``, ``receive``): the VM's disks must be shared
storage (RBD, or the filesystem store with ``[images] shared``) and already there; they
are opened, never made. Taps with the VM's MACs go on its networks' bridges, then QEMU
starts with the VM's command line and ``-incoming defer``. Over QMP: migration events on,
``migrate-incoming tcp:[<host.address>]:0``; the port QEMU took (``query-migrate``'s
socket address) makes the URI of ``vm.<id>.migration_ready {host: me, uri}``. A watcher
(``watch_incoming``) then waits for QEMU to run the guest (the migration completed: from
then on the VM is watched for crashes like any other; ``vm.migrated`` comes from the
source) or to end (the migration failed: taps and runtime directory go, and the source
says why). A QEMU that waits longer than ``host.migration_timeout_s`` plus a margin is
ended with ``vm.migration_failed``.

Sending (``host.<me>.vm_migrate_out``, ``send``) runs as a task of its own (the VM's
``sender``: the host's other commands go on meanwhile), under the VM's lock: migration
events and auto-converge on, ``max-bandwidth`` and ``downtime-limit`` from ``[host]``,
``migrate <uri>``, then ``query-migrate`` every 50 ms until it is completed, failed or
cancelled (or the timeout: ``migrate_cancel``). Completed: ``vm.migrated {from me, to}``,
QEMU (paused after the hand-over) quits, taps and runtime directory go,
``host.<me>.vm_released``. Anything else: the guest goes on here (``cont`` if QEMU left it
paused) and ``vm.<id>.migration_failed {reason}``. The figures of the last
``query-migrate`` are kept in ``HostVms.migrations`` and logged. A QEMU that is migrating
already, or handed its guest over (``postmigrate``), is not asked again: a hostd that
restarts mid-migration picks the migration up where QEMU is (``resume_sending``), and a
delete of the VM cancels a migration in flight first (``stays_for_delete``).

Fencing (``fence``): a VM whose latest placement is another host, or that is deleted, is
stopped here without a report (it is not this host's to report on), its taps and runtime
directory removed, a deleted VM's disks too (``rules.leftovers``). It runs when this host
hears ``host.<me>.vm_released`` (the capacity ledger let go of the VM here: a failed
migration to here, an evacuation away, a deletion) and when hostd starts.

The pure parts (URIs, reading ``query-migrate``) are the functions at the top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ucloud.config import Config, HostConfig
from ucloud.errors import InputError, Refused, UcloudError, VmError
from ucloud.eventlog import EventLog
from ucloud.events import (
    Cause,
    HostVmMigrateIn,
    HostVmMigrateOut,
    HostVmReleased,
    VmMigrated,
    VmMigrationFailed,
    VmMigrationReady,
)
from ucloud.hostd import lookup, rules
from ucloud.hostd.facts import Facts
from ucloud.hostd.machine import Machine, Want
from ucloud.hostd.plumbing import NicPlan, Plumbing
from ucloud.hostd.qemu import Launch, Qemu, StartSpec
from ucloud.hostd.qmp import QmpSession
from ucloud.images.base import DiskRef
from ucloud.images.open import open_store
from ucloud.images.store import ROOT_PREFIX

log = logging.getLogger(__name__)

POLL_S = 0.05
MIB = 1 << 20
INCOMING_MARGIN_S = 30.0  # a receiving QEMU waits this much longer than a sender tries
EVENTS_ON = {"capabilities": [{"capability": "events", "state": True}]}
# the sender also slows a guest that dirties memory faster than it can be sent, so that a
# busy guest still fits the downtime limit
SENDER = {"capabilities": [{"capability": c, "state": True} for c in ("events", "auto-converge")]}
FINAL = ("completed", "failed", "cancelled")
GOING = ("setup", "active", "pre-switchover", "device", "wait-unplug", "cancelling")


@dataclass(frozen=True, slots=True)
class MigrationFigures:
    """What ``query-migrate`` said at the end of a migration out of this host."""

    status: str
    total_ms: int = 0
    downtime_ms: int = 0
    setup_ms: int = 0
    transferred_bytes: int = 0
    ram_bytes: int = 0
    mbps: float = 0.0
    error: str = ""


class HostVms(Protocol):
    """What migration and fencing use of the host's VMs (``daemon.Hostd`` is the one)."""

    config: Config
    host: HostConfig
    me: str
    log: EventLog
    facts: Facts
    plumbing: Plumbing
    qemu: Qemu
    migrations: dict[str, MigrationFigures]

    def machine(self, vm: str) -> Machine: ...

    def forget(self, vm: str) -> None: ...

    async def launch_of(
        self, machine: Machine, spec: StartSpec, disks: list[DiskRef], taps: list[str],
        plans: list[NicPlan], *, incoming: bool = False,
    ) -> Launch: ...

    def argv(self, launch: Launch) -> list[str]: ...

    async def unplug(self, machine: Machine) -> None: ...

    def watch(self, machine: Machine) -> None: ...


def listen_uri(address: str) -> str:
    """Where a receiving QEMU listens: the host's underlay address, any free port."""
    return f"tcp:[{address}]:0"


def migration_uri(address: str, port: int) -> str:
    return f"tcp:[{address}]:{port}"


def bound_port(info: Mapping[str, Any]) -> int:
    """The TCP port a receiving QEMU listens on, from its ``query-migrate``."""
    for where in info.get("socket-address") or ():
        if where.get("type") == "inet" and str(where.get("port", "")).isdigit():
            return int(where["port"])
    raise ValueError(f"query-migrate names no listening port: {dict(info)!r}")


def figures(info: Mapping[str, Any]) -> MigrationFigures:
    """The state and figures of a migration from a sender's ``query-migrate``."""
    ram = info.get("ram") or {}
    return MigrationFigures(
        status=str(info.get("status", "none")),
        total_ms=int(info.get("total-time", 0)),
        downtime_ms=int(info.get("downtime", 0)),
        setup_ms=int(info.get("setup-time", 0)),
        transferred_bytes=int(ram.get("transferred", 0)),
        ram_bytes=int(ram.get("total", 0)),
        mbps=float(ram.get("mbps", 0.0)),
        error=str(info.get("error-desc", "")),
    )


def failure_reason(seen: MigrationFigures, to_host: str) -> str:
    why = seen.error or f"QEMU reports the migration {seen.status}"
    return f"migration to {to_host} failed: {why}; the VM runs on here"


# --- receiving ---------------------------------------------------------------------------


async def receive(
    hostd: HostVms, command: HostVmMigrateIn, facts: rules.VmFacts, cause: Cause
) -> None:
    """Start a QEMU waiting for the VM and say where it listens (``migration_ready``)."""
    machine = hostd.machine(command.vm)
    machine.want = Want.HALT  # until the guest runs here, an exit is no crash
    machine.cancel_restart()
    address = hostd.host.address or "::1"
    try:
        async with machine.lock:
            spec = await _spec(hostd, facts)
            if machine.runs():  # an earlier try that never said where it listens
                await machine.shutdown(0)
            session = await _launch_incoming(hostd, machine, spec)
            await session.execute("migrate-set-capabilities", EVENTS_ON)
            await session.execute("migrate-incoming", {"uri": listen_uri(address)})
            uri = migration_uri(address, bound_port(await session.execute("query-migrate")))
    except (UcloudError, ValueError) as exc:
        reason = f"{hostd.me} cannot receive the VM: {exc}"
        log.warning("vm %s: %s", command.vm, reason)
        await fence(hostd, machine, facts, force=True)
        failed = VmMigrationFailed(**hostd.facts.answer(cause, "migration_failed"), vm=command.vm,
                                   reason=reason)  # fmt: skip
        await hostd.facts.append(failed)
        return
    ready = VmMigrationReady(
        **hostd.facts.answer(cause, "migration_ready"), vm=command.vm, host=hostd.me, uri=uri
    )
    await hostd.facts.append(ready)
    log.info("vm %s: waiting for it from %s on %s", command.vm, command.from_host, uri)
    watch_incoming(hostd, machine)


async def _spec(hostd: HostVms, facts: rules.VmFacts) -> StartSpec:
    spec = lookup.spec_of(facts)
    if spec is None:
        raise InputError("vm", "the VM's request is not in the log")
    spec = await lookup.resolved(hostd.log, spec)
    if not hostd.config.images.shared_store(spec.store):
        raise Refused("disk", f"the VM's disk is on local storage ({spec.store}, [images] "
                              "shared is false here): it cannot migrate")  # fmt: skip
    return spec


async def _launch_incoming(hostd: HostVms, machine: Machine, spec: StartSpec) -> QmpSession:
    machine.runtime.check()
    machine.runtime.write_spec(spec)
    machine.spec = spec
    disks = await asyncio.to_thread(shared_disks, hostd, spec)
    plans = await lookup.nic_plans(hostd.log, spec)
    taps = await asyncio.to_thread(hostd.plumbing.attach, plans)
    launch = await hostd.launch_of(machine, spec, disks, taps, plans, incoming=True)
    await hostd.qemu.launch(hostd.argv(launch), machine.runtime)
    return await machine.attach()


def shared_disks(hostd: HostVms, spec: StartSpec) -> list[DiskRef]:
    """The VM's disks as the sender uses them; they must exist (nothing is made here)."""
    store = open_store(hostd.config, spec.store)
    if spec.store == "fs":
        root = hostd.config.paths.disks / spec.vm / f"{ROOT_PREFIX}{spec.image}.qcow2"
        if not root.is_file():
            raise VmError(spec.vm, "migrate in", f"its disk {root} is not here: is "
                          "images.disks_dir the same shared filesystem on every host?")
    disks = [store.clone_disk(spec.image, spec.vm, spec.spec.ssd_mib)]  # finds the clone
    if spec.spec.hdd_mib > 0:
        disks.append(store.create_blank(spec.vm, "hdd", spec.spec.hdd_mib))
    return disks


def watch_incoming(hostd: HostVms, machine: Machine) -> None:
    """Watch a receiving QEMU until the guest runs here or the QEMU ends."""
    session = machine.session
    if session is None or (machine.watcher is not None and not machine.watcher.done()):
        return
    machine.watcher = asyncio.create_task(
        _incoming(hostd, machine, session), name=f"incoming:{machine.vm}"
    )


async def _incoming(hostd: HostVms, machine: Machine, session: QmpSession) -> None:
    deadline = time.monotonic() + hostd.host.migration_timeout_s + INCOMING_MARGIN_S
    arrived = timed_out = False
    while not session.closed.is_set():
        try:
            status = await session.execute("query-status")
        except VmError:
            break
        if status.get("status") == "running":
            arrived = True
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        await asyncio.sleep(POLL_S)
    async with machine.lock:
        if machine.watcher is asyncio.current_task():
            machine.watcher = None
        if machine.session is not session:
            return  # fenced meanwhile
        if arrived:
            machine.want = Want.RUN
            machine.failures = 0
            machine.running_since = time.monotonic()
            log.info("vm %s: arrived; it runs here", machine.vm)
    if arrived:
        hostd.watch(machine)
        return
    facts = rules.fold((await hostd.log.load("vm", machine.vm))[0])
    await fence(hostd, machine, facts, force=True)
    if timed_out:
        reason = (f"no migration reached {hostd.me} within "
                  f"{hostd.host.migration_timeout_s + INCOMING_MARGIN_S:g}s")  # fmt: skip
        log.warning("vm %s: %s", machine.vm, reason)
        failed = VmMigrationFailed(**hostd.facts.fresh(), vm=machine.vm, reason=reason)
        await hostd.facts.append(failed)
    else:
        log.info("vm %s: the incoming migration ended without the VM; cleaned up", machine.vm)


# --- sending -----------------------------------------------------------------------------


def start_sending(hostd: HostVms, command: HostVmMigrateOut, cause: Cause) -> None:
    """Migrate the VM to ``command.to_host`` in a task of its own (the VM's ``sender``)."""
    machine = hostd.machine(command.vm)
    if machine.sending():
        log.info("vm %s: is being sent already", command.vm)
        return
    machine.sender = asyncio.create_task(send(hostd, command, cause), name=f"send:{command.vm}")


async def resume_sending(hostd: HostVms, machine: Machine, facts: rules.VmFacts) -> None:
    """After a restart: go on with the migration in flight out of this host, if its command
    came (it may have been taken before the restart and will not come again)."""
    if not facts.migration or facts.host != hostd.me or not facts.ready:
        return
    stored, _ = await hostd.log.load("host", hostd.me)
    command = next(
        (s.event for s in reversed(stored) if isinstance(s.event, HostVmMigrateOut)
         and s.event.vm == machine.vm and s.seq > facts.migration_seq),
        None,
    )  # fmt: skip
    if command is not None and command.to_host == facts.ready:
        log.info("vm %s: picking up its migration to %s", machine.vm, command.to_host)
        start_sending(hostd, command, hostd.facts.cause(command))


async def stays_for_delete(hostd: HostVms, machine: Machine) -> bool:
    """Before a delete: cancel a migration out of this host in flight and wait for its
    end; whether the VM is (still) here to be deleted."""
    sender, session = machine.sender, machine.session
    if sender is None or sender.done():
        return True
    if session is not None:
        with contextlib.suppress(VmError):
            await session.execute("migrate_cancel")
    with contextlib.suppress(Exception):
        await asyncio.shield(sender)
    facts = rules.fold((await hostd.log.load("vm", machine.vm))[0])
    return facts.host in ("", hostd.me)


async def send(hostd: HostVms, command: HostVmMigrateOut, cause: Cause) -> None:
    """Migrate the running VM to ``command.to_host``; its facts either way."""
    machine = hostd.machine(command.vm)
    async with machine.lock:
        try:
            seen = await _migrate(hostd, machine, command.uri)
        except VmError as exc:
            seen = MigrationFigures(status="failed", error=str(exc))
        if seen.status == "completed":
            machine.want = Want.GONE  # the paused QEMU left behind is no crash
            machine.cancel_restart()
    hostd.migrations[command.vm] = seen
    if seen.status != "completed":
        reason = failure_reason(seen, command.to_host)
        log.warning("vm %s: %s", command.vm, reason)
        await _carry_on(machine)
        failed = VmMigrationFailed(**hostd.facts.answer(cause, "migration_failed"), vm=command.vm,
                                   reason=reason)  # fmt: skip
        await hostd.facts.append(failed)
        return
    log.info("vm %s: migrated to %s in %d ms (downtime %d ms, %.0f MiB sent)", command.vm,
             command.to_host, seen.total_ms, seen.downtime_ms, seen.transferred_bytes / MIB)
    migrated = VmMigrated(**hostd.facts.answer(cause, "migrated"), vm=command.vm,
                          from_host=hostd.me, to_host=command.to_host)  # fmt: skip
    await hostd.facts.append(migrated)
    async with machine.lock:
        await machine.shutdown(0)
        await hostd.unplug(machine)
        await asyncio.to_thread(shutil.rmtree, machine.runtime.path, True)
    hostd.forget(command.vm)
    released = HostVmReleased(**hostd.facts.answer(cause, "vm_released"), host=hostd.me,
                              vm=command.vm, reason="migrated")  # fmt: skip
    await hostd.facts.append(released)


async def _migrate(hostd: HostVms, machine: Machine, uri: str) -> MigrationFigures:
    """Run QEMU's migration to ``uri`` to its end (under the VM's lock)."""
    if not machine.runs():
        return MigrationFigures(status="failed", error=f"QEMU does not run on {hostd.me}")
    session = await machine.attach()
    settings = hostd.host
    state = (await session.execute("query-status")).get("status")
    going = figures(await session.execute("query-migrate")).status in GOING
    if state != "postmigrate" and not going:  # else: asked before, by an earlier hostd
        await session.execute("migrate-set-capabilities", SENDER)
        await session.execute("migrate-set-parameters", {
            "max-bandwidth": settings.migration_max_bandwidth_mib_s * MIB,
            "downtime-limit": settings.migration_downtime_ms,
        })  # fmt: skip
        await session.execute("migrate", {"uri": uri})
    deadline = time.monotonic() + settings.migration_timeout_s
    settling = 20
    while True:
        try:
            seen = figures(await session.execute("query-migrate"))
        except VmError:
            if not machine.runs():
                raise
            session = await machine.attach()  # the connection dropped; QEMU lives: ask again
            seen = figures(await session.execute("query-migrate"))
        if seen.status == "completed" and not seen.total_ms and settling > 0:
            settling -= 1  # QEMU says completed a moment before it fills in the times
        elif seen.status in FINAL:
            return seen
        if time.monotonic() > deadline:
            with contextlib.suppress(VmError):
                await session.execute("migrate_cancel")
            return MigrationFigures(
                status="cancelled",
                error=f"not completed within {settings.migration_timeout_s:g}s; cancelled",
            )
        await asyncio.sleep(POLL_S)


async def _carry_on(machine: Machine) -> None:
    """After a failed migration: the guest runs here, as before (if QEMU still lives)."""
    if not machine.runs():
        return  # the crash watcher reports it and restarts it
    async with machine.lock:
        try:
            await machine.resume()
        except VmError as exc:
            log.error("vm %s: cannot let the guest run on after the migration: %s",
                      machine.vm, exc)


# --- fencing -----------------------------------------------------------------------------


async def fence(
    hostd: HostVms, machine: Machine, facts: rules.VmFacts, *, force: bool = False
) -> None:
    """Stop a VM that is not this host's (no report) and remove what ``leftovers`` allows.

    ``force``: a receiving QEMU of this host that did not get the VM (whatever the log
    says of the VM, its runtime directory here goes).
    """
    what = rules.leftovers(facts, hostd.me)
    if what == "keep" and not force:
        return
    machine.want = Want.GONE
    machine.cancel_restart()
    async with machine.lock:
        if machine.runs():
            log.warning("vm %s: runs here but belongs to %s: stopped", machine.vm,
                        facts.host or "nobody")
        await machine.shutdown(0)
        await hostd.unplug(machine)
        if what == "runtime and disks":
            spec = machine.spec or machine.runtime.read_spec()
            kind = spec.store if spec is not None else await lookup.store_of_vm(
                hostd.log, machine.vm)
            await asyncio.to_thread(open_store(hostd.config, kind).delete_disks, machine.vm)
        await asyncio.to_thread(shutil.rmtree, machine.runtime.path, True)
    hostd.forget(machine.vm)
