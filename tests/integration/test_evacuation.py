"""Evacuation: on the real log with two schedulers racing, and with real hosts that die.

``test_two_evacuators_move_each_vm_once`` runs two ``Evacuator``s (two schedulers, each
with its own ledger) against the session's nats-server, with a clock of the test's own.
``test_a_dead_hosts_vms_restart_elsewhere_and_its_stale_copies_stop`` stops a namespace
host's hostd (its lease then expires: the monitor appends ``host.down``) and checks that
its VMs run again on the other host, and that the host, when it returns, stops the copy
it still ran. ``namespace_cloud`` (hosts in network namespaces sharing a filesystem
store, ``tests/namespace_cloud.py``) serves the migration tests too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.multihost import Cluster, Host
from tests.namespace_cloud import eventually, lan, namespace_cloud, shared_tiny
from ucloud import events as ev
from ucloud.config import ImagesConfig, SchedulerConfig
from ucloud.eventlog import EventLog
from ucloud.events import Resources
from ucloud.events.types import StoreKind
from ucloud.handlers.dispatcher import Dispatcher
from ucloud.handlers.evacuation import Evacuator
from ucloud.handlers.ledger import LedgerFollower
from ucloud.handlers.migration import Migrations
from ucloud.hostd.lease import alive_prefix
from ucloud.hostd.qemu import QemuProcess, RuntimeDir
from ucloud.ids import new_id

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
SPEC = Resources(cpu=1, ram_mib=512, ssd_mib=1024)
HOST = Resources(cpu=4, ram_mib=4096, ssd_mib=100_000)


def at(seconds: float) -> dict[str, Any]:
    return {"id": new_id(), "at": T0 + timedelta(seconds=seconds), "actor": "system:test"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@contextlib.asynccontextmanager
async def followers(log: EventLog, count: int) -> AsyncIterator[list[LedgerFollower]]:
    made = [LedgerFollower(log) for _ in range(count)]
    tasks = [asyncio.create_task(f.run()) for f in made]
    try:
        for follower in made:
            await follower.ready.wait()
        yield made
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def vm_on(log: EventLog, image: str, host: str, *later: type[ev.VmEvent]) -> str:
    vm = new_id()
    await log.append(ev.VmRequested(**at(0), vm=vm, owner="o", name=vm[-8:], spec=SPEC,
                                    image=image))
    await log.append(ev.HostVmPlaced(**at(0), host=host, vm=vm, resources=SPEC))
    await log.append(ev.VmScheduled(**at(0), vm=vm, host=host))
    await log.append(ev.VmStarted(**at(0), vm=vm, host=host))
    for kind in later:
        extra: dict[str, Any] = {"host": host} if kind is ev.VmStopped else {}
        await log.append(kind(**at(0), vm=vm, **extra))
    return vm


async def kinds(log: EventLog, vm: str) -> list[str]:
    stored, _ = await log.load("vm", vm)
    return [s.event.event_name for s in stored]


@pytest.mark.timeout(60)
async def test_two_evacuators_move_each_vm_once(event_log: EventLog) -> None:
    log = event_log
    for host in ("h1", "h2", "h3"):
        await log.append(ev.HostRegistered(**at(0), host=host, capacity=HOST))
    await log.append(ev.HostDrained(**at(0), host="h3"))
    shared, local = new_id(), new_id()
    stores: tuple[tuple[str, StoreKind], ...] = ((shared, "rbd"), (local, "fs"))
    for image, store in stores:
        await log.append(ev.ImageRequested(**at(0), image=image, owner="admin", name=image,
                                           file=new_id(), public=True, store=store))
    moves = await vm_on(log, shared, "h1")
    dies = await vm_on(log, local, "h1")
    sleeps = await vm_on(log, shared, "h1", ev.VmStopRequested, ev.VmStopped)
    travels = await vm_on(log, shared, "h1", ev.VmMigrationRequested)
    elsewhere = await vm_on(log, shared, "h2")
    await log.append(ev.HostDown(**at(0), host="h1"))

    clock = Clock()
    settings = SchedulerConfig(evacuate_after_s=60)
    async with followers(log, 2) as (one, two):
        evacuators = [Evacuator(log, f, settings, ImagesConfig(shared=False), clock)
                      for f in (one, two)]
        await one.until(lambda ledger: not ledger.hosts["h1"].up, 5)
        await two.until(lambda ledger: not ledger.hosts["h1"].up, 5)
        before = await log.last_sequence()
        clock.now = T0 + timedelta(seconds=59)
        assert await evacuators[0].sweep()  # within the grace period: waiting, nothing done
        assert await log.last_sequence() == before

        clock.now = T0 + timedelta(seconds=61)
        for _ in range(6):  # both schedulers at once, a few passes, as their loops would
            await asyncio.gather(*(e.sweep() for e in evacuators))
            await asyncio.sleep(0.1)

        assert (await kinds(log, moves)).count("evacuated") == 1
        assert (await kinds(log, travels))[-2:] == ["migration_failed", "evacuated"]
        stored, _ = await log.load("vm", dies)
        lost = stored[-1].event
        assert isinstance(lost, ev.VmLost) and lost.host == "h1"
        assert "local storage" in lost.reason
        assert (await kinds(log, sleeps))[-1] == "stopped"  # a stopped VM waits for its host
        assert (await kinds(log, elsewhere))[-1] == "started"

        await one.catch_up()
        ledger = one.ledger
        for vm in (moves, travels):
            assert ledger.hosts_of(vm) == ("h2",)  # placed once, and let go of on h1
        assert ledger.hosts_of(dies) == ("h1",)  # a lost VM's disk is there: kept
        assert ledger.hosts_of(sleeps) == ("h1",)
        free = ledger.hosts["h2"].free
        assert free.ram_mib == HOST.ram_mib - 3 * SPEC.ram_mib  # nothing booked twice
        evacuated = [s.event for s in (await log.load("vm", moves))[0]
                     if isinstance(s.event, ev.VmEvacuated)]
        assert [(e.from_host, e.to_host) for e in evacuated] == [("h1", "h2")]

        # the dispatcher starts the evacuated VM on h2, and leaves the lost one's start for
        # h1; deleting the lost VM gives its capacity on h1 back
        dispatcher = Dispatcher(log)
        for event in (evacuated[0], lost):
            await dispatcher.handle(event, 0, 1)
        starts = {(h, s.event.vm) for h in ("h1", "h2") for s in (await log.load("host", h))[0]
                  if isinstance(s.event, ev.HostVmStart)}
        assert {("h2", moves), ("h1", dies)} <= starts
        await log.append(ev.VmDeleteRequested(**at(70), vm=dies))
        deleted = ev.VmDeleted(**at(71), vm=dies)
        await log.append(deleted)
        await Migrations(log, one, settings).handle(deleted, 0, 1)
        await one.catch_up()
        assert one.ledger.hosts_of(dies) == ()


async def on_host(cluster: Cluster, vm: str) -> str:
    view: dict[str, Any] = (await cluster.gw.client(cluster.gw.admin).get(f"/v1/vms/{vm}")).json()
    return str(view["host"]) if view["status"] == "running" else ""


def qemu_of(host: Host, vm: str) -> int | None:
    return QemuProcess().pid(RuntimeDir(Path(host.config.host.runtime_dir), vm))


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_dead_hosts_vms_restart_elsewhere_and_its_stale_copies_stop(
    tmp_path: Path,
) -> None:
    grace = 5.0
    async with namespace_cloud(tmp_path, grace_s=grace, lease_ttl_s=3) as cluster:
        _, h2, h3 = cluster.hosts
        admin = cluster.gw.client(cluster.gw.admin)
        alice = await cluster.gw.new_user("alice")
        client = cluster.gw.client(alice)
        await shared_tiny(cluster)
        await lan(cluster, alice, "lan")
        assert (await admin.post(f"/v1/hosts/{h3.id}/drain")).status_code == 202
        vms = []
        for name, nets in (("dead", []), ("stale", ["lan"])):  # both on h2
            answer = await client.post("/v1/vms", json={
                "name": name, "image": "tiny", "cpu": 1, "ram": "128M", "ssd": 1,
                "networks": nets})  # fmt: skip
            assert answer.status_code == 202, answer.text
            vms.append(answer.json()["id"])
        dead, stale = vms
        for vm in vms:
            await eventually(cluster, f"vm {vm} on {h2.id}",
                             lambda v=vm: _is_on(cluster, v, h2.id))
        assert (await admin.post(f"/v1/hosts/{h3.id}/undrain")).status_code == 202
        mac = (await client.get(f"/v1/vms/{stale}")).json()["nics"][0]["mac"]
        tap = f"tap{stale.replace('-', '')[-10:]}0"[:15]  # its NIC's port on h2
        assert tap in h2.space.links()

        # h2 dies: hostd gone; the QEMU of "dead" dies with it, "stale" keeps running
        await asyncio.to_thread(h2.process.terminate)  # type: ignore[union-attr]
        await asyncio.to_thread(h2.process.wait, 30)  # type: ignore[union-attr]
        QemuProcess().kill(RuntimeDir(Path(h2.config.host.runtime_dir), dead))
        assert qemu_of(h2, stale) is not None
        await cluster.gw.store.delete(f"{alive_prefix(cluster.config.etcd.prefix)}{h2.id}")

        async def down() -> ev.HostDown | None:
            stored, _ = await cluster.gw.log.load("host", h2.id)
            found = [s.event for s in stored if isinstance(s.event, ev.HostDown)]
            return found[-1] if found else None

        went = await eventually(cluster, f"{h2.id} down", down, 30, hosts_alive=False)
        began = time.monotonic()
        await eventually(cluster, "the dead VM running elsewhere",
                         lambda: _is_on(cluster, dead, h3.id), grace + 30, hosts_alive=False)
        print(f"{dead} runs on {h3.id} {time.monotonic() - began:.1f}s after {went.tag()}")
        for vm in vms:
            kinds_ = [s.event for s in (await cluster.gw.log.load("vm", vm))[0]]
            assert any(isinstance(e, ev.VmEvacuated) and e.to_host == h3.id for e in kinds_)
        assert qemu_of(h2, stale) is not None  # the stale copy runs on until h2 hears of it

        # h2 comes back: its hostd stops the stale copy (the log says it is on h3), starts
        # nothing, and removes what it kept of both
        await asyncio.to_thread(h2.start)
        await eventually(cluster, "the stale copy stopped",
                         lambda: _gone(h2, stale), 60)
        await eventually(cluster, "the VM with the stale copy running elsewhere",
                         lambda: _is_on(cluster, stale, h3.id), 90)
        for vm in vms:
            assert not RuntimeDir(Path(h2.config.host.runtime_dir), vm).path.exists()
            events = [s.event for s in (await cluster.gw.log.load("vm", vm))[0]]
            after = events[next(i for i, e in enumerate(events) if isinstance(e, ev.VmEvacuated)):]
            assert not any(isinstance(e, ev.VmStarted | ev.VmCrashed | ev.VmStopped)
                           and e.host == h2.id for e in after)
        assert tap not in h2.space.links()  # its port is gone from h2
        assert (await client.get(f"/v1/vms/{stale}")).json()["nics"][0]["mac"] == mac
        hosts = (await admin.get("/v1/hosts")).json()
        held = {h["id"]: h["vms"] for h in hosts}
        assert set(vms) <= set(held[h3.id]) and not set(vms) & set(held[h2.id])
        for vm in vms:
            assert (await client.delete(f"/v1/vms/{vm}")).status_code == 202


async def _is_on(cluster: Cluster, vm: str, host: str) -> bool:
    return await on_host(cluster, vm) == host


async def _gone(host: Host, vm: str) -> bool:
    return qemu_of(host, vm) is None
