"""Live migration end to end: real QEMU (TCG) moved between hosts, the log telling the story.

``two_hosts``: the gateway, projector, scheduler (with its migration handler and
evacuator) and dispatcher, and two hostd services, all in this event loop on this
machine; the hosts share the filesystem store (``[images] shared``), or the session's Ceph
pool for RBD disks. The guest's HPET main counter (100 MHz from the VM's clock, reset by a
reboot, carried by a migration) is its uptime counter, read over the hostd's own QMP session.

``test_a_vm_moves_between_namespace_hosts_while_pinged`` runs the hosts as ``ucloud serve
hostd`` processes in network namespaces on an IPv6 underlay (``namespace_cloud`` of
``test_evacuation.py``, built on ``tests/multihost.py``), the VM on a VXLAN network, the
migration asked for with the real CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.ceph_cluster import CephCluster
from tests.integration.gateway_harness import Running, User, running_gateway, system
from tests.integration.hostd_harness import built, cloud_config, kill_all
from tests.multihost import (
    Namespace,
    ping,
    ucloud_binary,
)
from tests.namespace_cloud import (
    cancelled,
    eventually,
    lan,
    namespace_cloud,
    shared_tiny,
)
from ucloud import events as ev
from ucloud.config import Config
from ucloud.handlers.dispatcher import run as run_dispatcher
from ucloud.handlers.scheduler import run as run_scheduler
from ucloud.hostd.daemon import Hostd
from ucloud.hostd.plumbing import NoPlumbing
from ucloud.hostd.qemu import QemuProcess, RuntimeDir
from ucloud.hostd.service import run as run_hostd
from ucloud.ids import new_id
from ucloud.images.rbd_store import RbdStore
from ucloud.images.store import FsStore
from ucloud.net_addr import eui64
from ucloud.services import ServiceContext, Shared

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.timeout(300)]
UP_LINE = "ucloud-tiny: up"


@dataclass
class Pair:
    """A cloud with two hosts on this machine."""

    gw: Running
    config: Config
    hosts: dict[str, Config]
    user: User
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    contexts: dict[str, ServiceContext] = field(default_factory=dict)

    def start(self, name: str, service: Any, config: Config | None = None) -> None:
        ctx = ServiceContext(
            config=config or self.config, log=self.gw.log, store=self.gw.store, name=name,
            shared=Shared(plumbing=NoPlumbing()),
        )
        self.contexts[name] = ctx
        self.tasks[name] = asyncio.create_task(service(ctx), name=f"test:{name}")

    async def stop(self, name: str) -> None:
        await cancelled(self.tasks.pop(name))

    def hostd(self, host: str) -> Hostd:
        found = self.contexts[host].shared.hostd
        assert isinstance(found, Hostd)
        return found

    def runtime(self, host: str, vm: str) -> RuntimeDir:
        return RuntimeDir(Path(self.hosts[host].host.runtime_dir), vm)

    def check(self) -> None:
        for name, task in self.tasks.items():
            if task.done() and not task.cancelled():
                raise AssertionError(f"service {name} ended: {task.exception()!r}")

    async def view(self, vm: str) -> dict[str, Any]:
        answer = await self.gw.client(self.user).get(f"/v1/vms/{vm}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    async def until(self, what: str, check: Any, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := await check()):
            self.check()
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)
        return value

    async def running(self, vm: str, away_from: str = "") -> dict[str, Any]:
        async def there() -> dict[str, Any] | None:
            seen = await self.view(vm)
            moved = seen["host"] != away_from
            return seen if seen["status"] == "running" and moved else None

        found: dict[str, Any] = await self.until(f"vm {vm} running", there)
        return found

    async def events(self, vm: str) -> list[ev.Event]:
        stored, _ = await self.gw.log.load("vm", vm)
        return [s.event for s in stored]

    async def booted(self, host: str, vm: str) -> None:
        serial = self.runtime(host, vm).serial

        async def up() -> bool:
            return serial.exists() and UP_LINE in serial.read_text(errors="replace")

        await self.until(f"{UP_LINE} from vm {vm}", up, timeout=120)

    async def uptime_ticks(self, host: str, vm: str) -> int:
        """The guest's HPET main counter, through the hostd's QMP session."""
        machine = self.hostd(host).machines[vm]
        assert machine.session is not None
        said = await machine.session.execute(
            "human-monitor-command", {"command-line": "xp /gx 0xfed000f0"}
        )
        return int(str(said).split(":")[1].strip(), 16)


@contextlib.asynccontextmanager
async def two_hosts(
    config: Config, tmp_path: Path, host: dict[str, Any] | None = None, **images: Any
) -> AsyncIterator[Pair]:
    runtimes = [Path(tempfile.mkdtemp(prefix="uc", dir="/tmp")) for _ in range(2)]
    base = cloud_config(config, tmp_path, runtimes[0], cpu=2, ram_mib=2048, ssd_mib=20_000,
                        **(host or {}))
    base = msgspec.structs.replace(
        base, images=msgspec.structs.replace(base.images, **{"shared": True, **images}),
    )
    hosts = {}
    for runtime in runtimes:
        ident = "h" + new_id().replace("-", "")[-10:]
        hosts[ident] = msgspec.structs.replace(
            base, host=msgspec.structs.replace(base.host, id=ident, runtime_dir=str(runtime))
        )
    try:
        async with running_gateway(base) as gw:
            pair = Pair(gw=gw, config=base, hosts=hosts, user=await gw.new_user())
            try:
                pair.start("scheduler", run_scheduler)
                pair.start("dispatcher", run_dispatcher)
                for ident, mine in hosts.items():
                    pair.start(ident, run_hostd, mine)

                async def registered() -> bool:
                    answer = await gw.client(gw.admin).get("/v1/hosts")
                    return {h["id"] for h in answer.json()} >= set(hosts)

                await pair.until("both hosts registered", registered, timeout=60)
                yield pair
            finally:
                for name in list(pair.tasks):
                    await pair.stop(name)
    finally:
        for runtime in runtimes:
            await asyncio.to_thread(kill_all, runtime)


async def tiny_image(pair: Pair, ceph: CephCluster | None = None) -> str:
    """The tiny guest as a public image, in the filesystem store or the Ceph pool."""
    qcow2 = await asyncio.to_thread(built, "tiny")
    image = new_id()
    raw = Path(pair.config.data_dir) / f"{image}.raw.tmp"
    raw.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(
        subprocess.run, ["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True
    )
    try:
        if ceph is None:
            store: FsStore | RbdStore = FsStore(pair.config.paths.images, pair.config.paths.disks)
        else:
            store = RbdStore(ceph.pool, str(ceph.conf))
        size = await asyncio.to_thread(store.import_raw, image, raw)
    finally:
        raw.unlink(missing_ok=True)
    await pair.gw.append(
        ev.ImageRequested(**system(), image=image, owner="admin", name="tiny", file=new_id(),
                          public=True, store="rbd" if ceph else "fs"),
        ev.ImageCreated(**system(), image=image, size=size, checksum="0"),
    )  # fmt: skip
    return image


async def create(pair: Pair, name: str, ram: str = "128M") -> str:
    answer = await pair.gw.client(pair.user).post(
        "/v1/vms", json={"name": name, "image": "tiny", "cpu": 1, "ram": ram, "ssd": 1}
    )
    assert answer.status_code == 202, answer.text
    vm: str = answer.json()["id"]
    return vm


async def migrate(pair: Pair, vm: str) -> None:
    answer = await pair.gw.client(pair.user).post(f"/v1/vms/{vm}/migrate")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "migrating"


async def held_by(pair: Pair, host: str) -> list[str]:
    answer = await pair.gw.client(pair.gw.admin).get("/v1/hosts")
    vms: list[str] = next(h["vms"] for h in answer.json() if h["id"] == host)
    return vms


async def moves_and_keeps_running(pair: Pair, vm: str) -> None:
    source = (await pair.running(vm))["host"]
    (target,) = set(pair.hosts) - {source}
    await pair.booted(source, vm)
    before = await pair.uptime_ticks(source, vm)
    await migrate(pair, vm)
    moved = await pair.running(vm, away_from=source)
    assert moved["host"] == target and moved["reason"] == ""
    after = await pair.uptime_ticks(target, vm)
    assert after > before  # the same guest, its clock carried on: no reboot
    assert UP_LINE not in pair.runtime(target, vm).serial.read_text(errors="replace")

    kinds = [type(e) for e in await pair.events(vm)]
    tail = [ev.VmMigrationRequested, ev.VmMigrationReady, ev.VmMigrated]
    assert [k for k in kinds if k in tail] == tail
    ready = next(e for e in await pair.events(vm) if isinstance(e, ev.VmMigrationReady))
    assert ready.host == target and ready.uri.startswith("tcp:[::1]:")
    await pair.until("the ledger moved", lambda: _holds(pair, target, source, vm))
    hosts_events = {h: [s.event for s in (await pair.gw.log.load("host", h))[0]]
                    for h in pair.hosts}
    placed = [e for e in hosts_events[target] if isinstance(e, ev.HostVmPlaced) and e.vm == vm]
    assert [p.migration for p in placed] == [True]
    assert any(isinstance(e, ev.HostVmMigrateOut) for e in hosts_events[source])
    released = [e for e in hosts_events[source] if isinstance(e, ev.HostVmReleased)]
    assert [r.reason for r in released if r.vm == vm] == ["migrated"]

    figures = pair.hostd(source).migrations[vm]
    assert figures.status == "completed" and 0 < figures.downtime_ms < figures.total_ms
    assert QemuProcess().pid(pair.runtime(source, vm)) is None
    assert not pair.runtime(source, vm).path.exists()  # the source let go of everything


async def _holds(pair: Pair, target: str, source: str, vm: str) -> bool:
    return vm in await held_by(pair, target) and vm not in await held_by(pair, source)


async def delete(pair: Pair, vm: str) -> None:
    client = pair.gw.client(pair.user)
    assert (await client.delete(f"/v1/vms/{vm}")).status_code == 202

    async def gone() -> bool:
        return (await client.get(f"/v1/vms/{vm}")).status_code == 404

    await pair.until(f"vm {vm} deleted", gone)


async def test_a_running_vm_moves_to_the_other_host_on_a_shared_filesystem(
    config: Config, tmp_path: Path
) -> None:
    async with two_hosts(config, tmp_path) as pair:
        await tiny_image(pair)
        vm = await create(pair, "mover")
        await moves_and_keeps_running(pair, vm)
        await delete(pair, vm)
        assert not (pair.config.paths.disks / vm).exists()


@pytest.mark.ceph
async def test_a_running_vm_on_rbd_moves_to_the_other_host(
    config: Config, tmp_path: Path, ceph: CephCluster
) -> None:
    async with two_hosts(config, tmp_path, rbd_pool=ceph.pool, ceph_conf=str(ceph.conf)) as pair:
        image = await tiny_image(pair, ceph)
        vm = await create(pair, "rbd-mover")
        await moves_and_keeps_running(pair, vm)
        await delete(pair, vm)
        store = RbdStore(ceph.pool, str(ceph.conf))
        assert await asyncio.to_thread(store.clones, image) == []
        await asyncio.to_thread(store.delete_image, image)


async def test_a_migration_whose_destination_dies_midway_rolls_back(
    config: Config, tmp_path: Path
) -> None:
    slow = {"migration_max_bandwidth_mib_s": 1}  # slow enough to be caught in the act
    async with two_hosts(config, tmp_path, host=slow) as pair:
        await tiny_image(pair)
        vm = await create(pair, "stayer")
        source = (await pair.running(vm))["host"]
        (target,) = set(pair.hosts) - {source}
        await pair.booted(source, vm)
        before = await pair.uptime_ticks(source, vm)
        await migrate(pair, vm)

        async def sending() -> bool:
            events = [s.event for s in (await pair.gw.log.load("host", source))[0]]
            return any(isinstance(e, ev.HostVmMigrateOut) and e.vm == vm for e in events)

        await pair.until("the source sending", sending)
        await asyncio.sleep(1.0)
        await pair.stop(target)  # the destination dies: its hostd, then its QEMU
        receiving = pair.runtime(target, vm)
        assert QemuProcess().pid(receiving) is not None
        QemuProcess().kill(receiving)

        async def failed() -> dict[str, Any] | None:
            seen = await pair.view(vm)
            return seen if seen["status"] == "running" and seen["reason"] else None

        view = await pair.until("the migration failed", failed, timeout=60)
        assert view["host"] == source and view["reason"].startswith(f"migration to {target}")
        assert isinstance((await pair.events(vm))[-1], ev.VmMigrationFailed)
        await pair.until("the destination's reservation released",
                         lambda: _holds(pair, source, target, vm))
        status = await pair.hostd(source).machines[vm].session.execute(  # type: ignore[union-attr]
            "query-status")
        assert status["status"] == "running"
        assert await pair.uptime_ticks(source, vm) > before

        pair.start(target, run_hostd, pair.hosts[target])  # it comes back: nothing of it stays

        async def cleaned() -> bool:
            return not receiving.path.exists()

        await pair.until("the destination's leftovers removed", cleaned, timeout=60)
        assert not any(isinstance(e, ev.VmStarted | ev.VmCrashed) and e.host == target
                       for e in await pair.events(vm))
        await delete(pair, vm)


async def sending(pair: Pair, source: str, vm: str) -> bool:
    events = [s.event for s in (await pair.gw.log.load("host", source))[0]]
    return any(isinstance(e, ev.HostVmMigrateOut) and e.vm == vm for e in events)


async def test_a_vm_deleted_while_it_migrates_is_deleted_where_it_is(
    config: Config, tmp_path: Path
) -> None:
    async with two_hosts(config, tmp_path, host={"migration_max_bandwidth_mib_s": 1}) as pair:
        await tiny_image(pair)
        vm = await create(pair, "doomed")
        source = (await pair.running(vm))["host"]
        (target,) = set(pair.hosts) - {source}
        await migrate(pair, vm)
        await pair.until("the source sending", lambda: sending(pair, source, vm))
        await asyncio.sleep(0.5)
        await delete(pair, vm)  # the source cancels the migration, then deletes the VM
        kinds = [e.tag() for e in await pair.events(vm)]
        assert kinds[-2:] == ["vm.migration_failed", "vm.deleted"] and "vm.migrated" not in kinds
        failed = next(e for e in await pair.events(vm) if isinstance(e, ev.VmMigrationFailed))
        assert "cancelled" in failed.reason
        for host in pair.hosts:
            await pair.until(f"{host} holds nothing of it",
                             lambda h=host: _none_on(pair, h, vm))
        assert not (pair.config.paths.disks / vm).exists()


async def _none_on(pair: Pair, host: str, vm: str) -> bool:
    runtime = pair.runtime(host, vm)
    return vm not in await held_by(pair, host) and not runtime.path.exists()


async def test_a_migration_goes_on_when_the_sending_hostd_restarts(
    config: Config, tmp_path: Path
) -> None:
    async with two_hosts(config, tmp_path, host={"migration_max_bandwidth_mib_s": 8}) as pair:
        await tiny_image(pair)
        vm = await create(pair, "patient")
        source = (await pair.running(vm))["host"]
        (target,) = set(pair.hosts) - {source}
        await pair.booted(source, vm)
        before = await pair.uptime_ticks(source, vm)
        await migrate(pair, vm)
        await pair.until("the source sending", lambda: sending(pair, source, vm))
        await asyncio.sleep(1.0)
        await pair.stop(source)  # QEMU goes on migrating without it
        assert QemuProcess().pid(pair.runtime(source, vm)) is not None
        await asyncio.sleep(1.0)
        pair.start(source, run_hostd, pair.hosts[source])  # it picks the migration up
        moved = await pair.running(vm, away_from=source)
        assert moved["host"] == target and moved["reason"] == ""
        assert await pair.uptime_ticks(target, vm) > before
        kinds = [type(e) for e in await pair.events(vm)]
        assert ev.VmMigrationFailed not in kinds and kinds.count(ev.VmMigrated) == 1
        await pair.until("the ledger moved", lambda: _holds(pair, target, source, vm))
        assert not pair.runtime(source, vm).path.exists()
        await delete(pair, vm)


async def test_a_vm_on_local_disks_is_refused_and_nothing_is_appended(
    config: Config, tmp_path: Path
) -> None:
    async with two_hosts(config, tmp_path, shared=False) as pair:
        image = await tiny_image(pair)
        vm = await create(pair, "local")
        await pair.running(vm)
        before = await pair.gw.last_seq()
        answer = await pair.gw.client(pair.user).post(f"/v1/vms/{vm}/migrate")
        assert answer.status_code == 409 and answer.json()["field"] == "disk"
        assert "local storage" in answer.json()["error"]
        assert await pair.gw.last_seq() == before
        assert image
        await delete(pair, vm)



class Pinger:
    """``ping`` every 20 ms from a namespace, for as long as it runs; then its counts."""

    def __init__(self, space: Namespace, target: str) -> None:
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", space.name, "ping", "-6", "-n", "-i", "0.02", "-W", "1",
             target],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip

    def stop(self) -> tuple[int, int, str]:
        """(sent, answered, ping's summary)."""
        self.process.send_signal(signal.SIGINT)
        out, _ = self.process.communicate(timeout=10)
        found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert found, out[-2000:]
        return int(found[1]), int(found[2]), out.strip().splitlines()[-2]


def cli(url: str, token: str, home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The real ``ucloud`` command, as a client of the gateway at ``url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCLOUD_")}
    env |= {"UCLOUD_URL": url, "UCLOUD_TOKEN": token, "UCLOUD_CONFIG_DIR": str(home)}
    return subprocess.run([ucloud_binary(), *argv], env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.root
@pytest.mark.netns
async def test_a_vm_moves_between_namespace_hosts_while_pinged(tmp_path: Path) -> None:
    async with namespace_cloud(tmp_path) as cluster:
        router, h2, h3 = cluster.hosts
        alice = await cluster.gw.new_user("alice")
        await shared_tiny(cluster)
        net = await lan(cluster, alice, "lan")
        client = cluster.gw.client(alice)
        answer = await client.post("/v1/vms", json={
            "name": "pinged", "image": "tiny", "cpu": 1, "ram": "128M", "ssd": 1,
            "networks": ["lan"]})  # fmt: skip
        assert answer.status_code == 202, answer.text
        vm = answer.json()["id"]

        async def running() -> dict[str, Any] | None:
            view: dict[str, Any] = (await client.get(f"/v1/vms/{vm}")).json()
            return view if view["status"] == "running" else None

        before = await eventually(cluster, "the VM running", running)
        source = cluster.host(before["host"])
        target = h3 if source is h2 else h2
        nic = before["nics"][0]
        assert nic["address"] == eui64(net["prefix"], nic["mac"])

        async def answers() -> bool:
            return await asyncio.to_thread(ping, router.space, nic["address"])

        await eventually(cluster, f"{nic['address']} answering", answers)
        pinger = Pinger(router.space, nic["address"])
        await asyncio.sleep(2)
        moved = await asyncio.to_thread(
            cli, cluster.gw.url, cluster.gw.admin.token, tmp_path / "cli", "vm", "migrate", vm,
            "--wait", "--timeout", "120",
        )
        assert moved.returncode == 0, moved.stderr + moved.stdout
        await asyncio.sleep(2)
        sent, answered, summary = pinger.stop()
        print(f"ping every 20 ms across the migration: {summary}")
        assert sent > 150 and sent - answered <= 10, summary  # a few packets at most

        shown = await asyncio.to_thread(cli, cluster.gw.url, cluster.gw.admin.token,
                                        tmp_path / "cli", "vm", "show", vm)
        assert shown.returncode == 0, shown.stderr
        assert re.search(rf"host:\s+{target.id}", shown.stdout), shown.stdout
        after = (await client.get(f"/v1/vms/{vm}")).json()
        assert after["status"] == "running" and after["host"] == target.id
        assert after["nics"] == before["nics"]  # same MAC, same address
        assert await asyncio.to_thread(ping, router.space, nic["address"], tries=3)
        serial = RuntimeDir(Path(target.config.host.runtime_dir), vm).serial
        assert UP_LINE not in serial.read_text(errors="replace")  # it did not boot there
        left = RuntimeDir(Path(source.config.host.runtime_dir), vm)
        assert QemuProcess().pid(left) is None and not left.path.exists()
        assert (await client.delete(f"/v1/vms/{vm}")).status_code == 202

        async def gone() -> bool:
            return (await client.get(f"/v1/vms/{vm}")).status_code == 404

        await eventually(cluster, "the VM deleted", gone, 60)
