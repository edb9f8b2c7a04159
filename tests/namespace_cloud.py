"""A cloud of namespace hosts for the multi-host tests (evacuation, migration).

``namespace_cloud`` starts nats-server and etcd on the test namespace's underlay address,
the control services in this process and one ``ucloud serve hostd`` per host in its
network namespace, the hosts sharing one filesystem image store; ``eventually``,
``shared_tiny`` and ``lan`` are the steps the tests take on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from tests.integration.gateway_harness import User, running_gateway, system
from tests.integration.hostd_harness import built
from tests.multihost import Cluster, Host, Underlay, cluster_config, host_config, namespaces
from ucloud import events as ev
from ucloud.handlers.dispatcher import run as run_dispatcher
from ucloud.handlers.liveness import run_monitor
from ucloud.handlers.netalloc import run as run_netalloc
from ucloud.handlers.scheduler import run as run_scheduler
from ucloud.ids import new_id
from ucloud.images.store import FsStore
from ucloud.servers import EmbeddedEtcd, EmbeddedNats
from ucloud.services import ServiceContext


async def cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it ends (on Python 3.11 a cancel that arrives as an inner
    wait completes can be swallowed)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


# --- hosts in network namespaces ---------------------------------------------------------


@contextlib.asynccontextmanager
async def namespace_cloud(
    directory: Path, *, grace_s: float = 60.0, lease_ttl_s: int = 10
) -> AsyncIterator[Cluster]:
    """Three hosts in namespaces on an IPv6 underlay, each running ``ucloud serve hostd``
    (host 1 routes the VM networks and is drained), one filesystem store that all of them
    share (``[images] shared``), and the gateway, projector, netalloc, scheduler,
    dispatcher and liveness monitor in this event loop."""
    with namespaces() as made:
        underlay = Underlay(made)
        nats = EmbeddedNats(directory / "nats", host=underlay.server_address).start()
        etcd = EmbeddedEtcd(directory / "etcd", host=underlay.server_address, fsync=False)
        members: list[Host] = []
        try:
            etcd.start()
            config = cluster_config(directory, underlay, nats.url, etcd.endpoint)
            config = msgspec.structs.replace(
                config,
                images=msgspec.structs.replace(
                    config.images, shared=True, disks_dir=str(directory / "disks")),
                scheduler=msgspec.structs.replace(config.scheduler, evacuate_after_s=grace_s),
            )
            for n in (1, 2, 3):
                space, address = underlay.host(n)
                folder = directory / f"h{n}"
                folder.mkdir(parents=True, exist_ok=True)
                mine = host_config(config, directory, n, address, n == 1)
                mine = msgspec.structs.replace(
                    mine, host=msgspec.structs.replace(mine.host, lease_ttl_s=lease_ttl_s))
                members.append(Host(space, mine, folder))
            async with running_gateway(config) as gw:
                cluster = Cluster(made, underlay, config, gw, members)
                for name, service in (("netalloc", run_netalloc), ("scheduler", run_scheduler),
                                      ("dispatcher", run_dispatcher), ("monitor", run_monitor)):
                    ctx = ServiceContext(config=config, log=gw.log, store=gw.store, name=name)
                    cluster.tasks.append(asyncio.create_task(service(ctx), name=name))
                try:
                    for host in members:
                        host.start()
                    await _all_up(cluster)
                    admin = gw.client(gw.admin)
                    drained = await admin.post(f"/v1/hosts/{members[0].id}/drain")
                    assert drained.status_code == 202, drained.text
                    yield cluster
                finally:
                    for task in cluster.tasks:
                        await cancelled(task)
        finally:
            for host in members:
                await asyncio.to_thread(host.stop)
                shutil.rmtree(host.config.host.runtime_dir, ignore_errors=True)
            nats.stop()
            etcd.stop()


async def _all_up(cluster: Cluster, timeout: float = 90) -> None:
    admin = cluster.gw.client(cluster.gw.admin)
    wanted = {host.id for host in cluster.hosts}
    deadline = time.monotonic() + timeout
    while True:
        hosts = (await admin.get("/v1/hosts")).json()
        if {h["id"] for h in hosts if h["state"] == "up"} >= wanted:
            return
        cluster.check()
        assert time.monotonic() < deadline, "the hosts did not come up"
        await asyncio.sleep(0.3)


async def eventually(
    cluster: Cluster, what: str, check: Any, timeout: float = 120, *, hosts_alive: bool = True
) -> Any:
    """Poll the (async) ``check`` until it is true (and the services and hosts keep running,
    or only the services when ``hosts_alive`` is false)."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        if hosts_alive:
            cluster.check()
        for task in cluster.tasks:
            if task.done() and not task.cancelled():
                raise AssertionError(f"{task.get_name()} ended: {task.exception()!r}")
        assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
        await asyncio.sleep(0.3)
    return value


async def shared_tiny(cluster: Cluster) -> str:
    """The tiny guest, public, in the filesystem store every host reads."""
    qcow2 = await asyncio.to_thread(built, "tiny")
    image = new_id()
    raw = Path(cluster.config.data_dir) / f"{image}.raw.tmp"
    raw.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(
        subprocess.run, ["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True
    )
    store = FsStore(cluster.config.paths.images, cluster.config.paths.disks)
    size = await asyncio.to_thread(store.import_raw, image, raw)
    raw.unlink(missing_ok=True)
    await cluster.gw.append(
        ev.ImageRequested(**system(), image=image, owner="admin", name="tiny", file=new_id(),
                          public=True),
        ev.ImageCreated(**system(), image=image, size=size, checksum="0"),
    )  # fmt: skip
    return image


async def lan(cluster: Cluster, user: User, name: str) -> dict[str, Any]:
    client = cluster.gw.client(user)
    answer = await client.post("/v1/networks", json={"name": name, "ipam": "auto"})
    assert answer.status_code == 202, answer.text

    async def created() -> dict[str, Any] | None:
        view: dict[str, Any] = (await client.get(f"/v1/networks/{name}")).json()
        return view if view["status"] == "created" else None

    found: dict[str, Any] = await eventually(cluster, f"network {name}", created, 30)
    return found
