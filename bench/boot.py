"""VM boots end to end: from the gateway accepting a create to ``vm.<id>.started``.

Embedded nats-server and etcd; the projector, gateway, scheduler, dispatcher and hostd
running in this process; the built-in ``tiny`` image (from the image cache, built when
missing) imported into a temporary image store. hostd runs QEMU under TCG (``--accel``).

1. ``--sequential`` (10) VMs one after the other: each is created over HTTP, timed from
   ``vm.requested`` (the gateway's accept) to ``vm.started`` (QMP reports it running),
   then deleted. The time splits into QEMU's own start (hostd's launch of QEMU until
   QMP says running) and the control plane (everything else: gateway, log, scheduler,
   dispatcher, hostd's disk clone and bookkeeping). Target: control plane p50 <= 250 ms.
2. ``--burst`` (20) VMs requested at once on the one host: wall time until all run.

Every VM is deleted at the end, and any QEMU left is killed by its pid file.

    python -m bench.boot [--sequential 10] [--burst 20] [--ram-mib 128] [--accel tcg]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench.common import embedded_servers, post_once, report
from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.gateway import login
from ucloud.hostd.daemon import Hostd
from ucloud.hostd.qemu import QemuProcess, RuntimeDir
from ucloud.ids import new_id
from ucloud.imagebuild import build
from ucloud.images.store import FsStore
from ucloud.services import ServiceContext, resolve
from ucloud.store import Store

SERVICES = ("projector", "gateway", "scheduler", "dispatcher", "hostd")
TARGET_CONTROL_MS = 250


def image_cache() -> Path:
    explicit = os.environ.get("UCLOUD_IMAGE_CACHE")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(explicit) if explicit else Path(base) / "ucloud" / "images"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


class Cloud:
    def __init__(self, config: Config, log: EventLog, store: Store) -> None:
        self.config = config
        self.log = log
        self.store = store
        self.contexts: dict[str, ServiceContext] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.http: httpx.AsyncClient | None = None

    @property
    def hostd(self) -> Hostd:
        found = self.contexts["hostd"].shared.hostd
        assert isinstance(found, Hostd)
        return found

    async def start(self) -> None:
        for name in SERVICES:
            ctx = ServiceContext(
                config=self.config, log=self.log, store=self.store, name=name,
            )
            self.contexts[name] = ctx
            self.tasks.append(asyncio.create_task(resolve(name)(ctx), name=f"bench:{name}"))
        deadline = time.monotonic() + 30
        while not self.contexts["gateway"].shared.gateway_url or (
            not self.contexts["hostd"].shared.hostd
        ):
            for task in self.tasks:
                if task.done():
                    task.result()
            assert time.monotonic() < deadline, "the services did not start"
            await asyncio.sleep(0.05)
        url = str(self.contexts["gateway"].shared.gateway_url)
        secret = Path(self.config.gateway.bootstrap_admin_file).read_text().strip()
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(100):  # the bootstrap user reaches the projection shortly
                answer = await client.post("/v1/auth/token", json={
                    "name": "admin", "realm": "admin", "otp": login.otp_at(secret, time.time()),
                })  # fmt: skip
                if answer.status_code == 200:
                    break
                await asyncio.sleep(0.1)
        answer.raise_for_status()
        token = answer.json()["token"]
        self.http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def create(self, name: str, image: str, ram_mib: int) -> str:
        assert self.http is not None
        answer = await post_once(self.http, "/v1/vms", {
            "name": name, "image": image, "cpu": 1, "ram": f"{ram_mib}M", "ssd": 1,
        })  # fmt: skip
        answer.raise_for_status()
        return str(answer.json()["id"])

    async def delete(self, vm: str) -> None:
        assert self.http is not None
        (await self.http.delete(f"/v1/vms/{vm}")).raise_for_status()

    async def wait_for(self, vm: str, kind: type[ev.Event], timeout: float = 120) -> ev.Event:
        deadline = time.monotonic() + timeout
        while True:
            stored, _ = await self.log.load("vm", vm)
            for item in stored:
                if isinstance(item.event, kind):
                    return item.event
                if isinstance(item.event, ev.VmCrashed | ev.VmSchedulingFailed):
                    raise RuntimeError(f"vm {vm}: {item.event}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"vm {vm}: no {kind.tag()} within {timeout}s")
            await asyncio.sleep(0.01)


async def import_tiny(cloud: Cloud) -> str:
    qcow2 = await asyncio.to_thread(build, "tiny", image_cache(), progress=lambda _: None)
    image = new_id()
    raw = Path(cloud.config.data_dir) / "tiny.raw"
    raw.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True)
    store = FsStore(cloud.config.paths.images, cloud.config.paths.disks)
    size = store.import_raw(image, raw)
    raw.unlink()
    envelope = {"at": datetime.now(UTC), "actor": "bench"}
    await cloud.log.append(ev.ImageRequested(
        id=new_id(), **envelope, image=image, owner="admin", name="tiny", file=new_id(),
        public=True,
    ))  # fmt: skip
    seq = await cloud.log.append(
        ev.ImageCreated(id=new_id(), **envelope, image=image, size=size, checksum="0")
    )
    gateway = cloud.contexts["gateway"].shared.gateway
    assert gateway is not None
    await gateway.settled(seq)
    return image


async def sequential(cloud: Cloud, image: str, count: int, ram_mib: int) -> dict[str, Any]:
    totals, qemus, controls = [], [], []
    for number in range(count):
        vm = await cloud.create(f"seq{number}", image, ram_mib)
        started = await cloud.wait_for(vm, ev.VmStarted)
        requested = await cloud.wait_for(vm, ev.VmRequested)
        total = (started.at - requested.at).total_seconds()
        qemu = cloud.hostd.timings[vm].qemu_s
        totals.append(total)
        qemus.append(qemu)
        controls.append(total - qemu)
        print(f"  vm {number}: started {total * 1000:6.0f} ms after accept "
              f"(QEMU {qemu * 1000:5.0f} ms, control plane {(total - qemu) * 1000:5.0f} ms)")
        await cloud.delete(vm)
        await cloud.wait_for(vm, ev.VmDeleted)

    def ms(values: list[float], share: float) -> float:
        return round(percentile(values, share) * 1000, 1)

    return {
        "boot_p50_ms": ms(totals, 0.5), "boot_p95_ms": ms(totals, 0.95),
        "qemu_p50_ms": ms(qemus, 0.5), "qemu_p95_ms": ms(qemus, 0.95),
        "control_p50_ms": ms(controls, 0.5), "control_p95_ms": ms(controls, 0.95),
        "control_mean_ms": round(statistics.mean(controls) * 1000, 1),
    }  # fmt: skip


async def burst(cloud: Cloud, image: str, count: int, ram_mib: int) -> dict[str, Any]:
    began = time.monotonic()
    vms = await asyncio.gather(
        *(cloud.create(f"burst{n}", image, ram_mib) for n in range(count))
    )
    await asyncio.gather(*(cloud.wait_for(vm, ev.VmStarted, timeout=600) for vm in vms))
    wall = time.monotonic() - began
    runs = sum(QemuProcess().pid(RuntimeDir(cloud.hostd.root, vm)) is not None for vm in vms)
    print(f"  {count} VMs requested at once: all running after {wall:.2f}s ({runs} QEMUs)")
    for vm in vms:
        await cloud.delete(vm)
    await asyncio.gather(*(cloud.wait_for(vm, ev.VmDeleted, timeout=300) for vm in vms))
    return {"burst_vms": count, "burst_running": runs, "burst_wall_s": round(wall, 2)}


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Cloud]:
    log = await EventLog.connect(config.nats, name="bench")
    await log.ensure_stream()
    store = await Store.connect(config.etcd.endpoints)
    cloud = Cloud(config, log, store)
    try:
        await cloud.start()
        yield cloud
    finally:
        await cloud.stop()
        await store.close()
        await log.close()


def kill_leftovers(runtime: Path) -> None:
    qemu = QemuProcess()
    if runtime.is_dir():
        for directory in runtime.iterdir():
            qemu.kill(RuntimeDir(runtime, directory.name))


async def bench(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    async with running(config) as cloud:
        image = await import_tiny(cloud)
        print(f"{args.sequential} tiny VMs one after the other ({args.accel}, "
              f"{args.ram_mib} MiB):")
        metrics = await sequential(cloud, image, args.sequential, args.ram_mib)
        print(f"  control plane p50 {metrics['control_p50_ms']} ms, p95 "
              f"{metrics['control_p95_ms']} ms; QEMU p50 {metrics['qemu_p50_ms']} ms")
        if args.burst:
            metrics |= await burst(cloud, image, args.burst, args.ram_mib)
    return {
        "bench": "boot", "sequential": args.sequential, "accel": args.accel,
        "ram_mib": args.ram_mib, **metrics, "target_control_p50_ms": TARGET_CONTROL_MS,
        "ok": metrics["control_p50_ms"] <= TARGET_CONTROL_MS,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=10)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--ram-mib", type=int, default=128)
    parser.add_argument("--accel", choices=["tcg", "kvm", "auto"], default="tcg")
    args = parser.parse_args()
    runtime = Path(tempfile.mkdtemp(prefix="ucb", dir="/tmp"))
    try:
        with embedded_servers() as servers:
            base = servers.config()
            host = msgspec.structs.replace(
                base.host, id="bench", accel=args.accel, runtime_dir=str(runtime),
                cpu=max(64, args.burst), ram_mib=max(65536, args.burst * args.ram_mib * 2),
                ssd_mib=1 << 20, stop_timeout_s=5.0,
            )  # fmt: skip
            gateway = msgspec.structs.replace(
                base.gateway, listen="127.0.0.1:0",
                bootstrap_admin_file=str(servers.directory / "admin.otp"),
            )
            config = msgspec.structs.replace(base, host=host, gateway=gateway)
            metrics = asyncio.run(bench(config, args))
    finally:
        kill_leftovers(runtime)
        shutil.rmtree(runtime, ignore_errors=True)
    report(metrics)


if __name__ == "__main__":
    main()
