"""Live migration: how long moving a running guest takes, and how long it is paused.

Embedded nats-server and etcd; the projector, gateway, scheduler (with the migration
handler), dispatcher and two hostd services in this process, the hosts sharing the
filesystem store (``[images] shared``) and receiving on ``[::1]``. One ``tiny`` guest of
``--ram-mib`` (256) under TCG is booted, then moved back and forth ``--rounds`` (5) times
over the API. Per move, from the sender's last ``query-migrate``: total time, downtime
(the guest paused), RAM sent; and the whole chain, ``vm.migration_requested`` to
``vm.migrated`` (control plane, the destination's QEMU start and the transfer).

    python -m bench.migrate [--rounds 5] [--ram-mib 256] [--bandwidth-mib-s 1024]
                            [--downtime-ms 100]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

from bench.boot import image_cache, kill_leftovers, percentile
from bench.common import embedded_servers, post_once, report
from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.gateway import login
from ucloud.hostd.daemon import Hostd
from ucloud.hostd.plumbing import NoPlumbing
from ucloud.ids import new_id
from ucloud.imagebuild import build
from ucloud.images.store import FsStore
from ucloud.services import ServiceContext, Shared, resolve
from ucloud.store import Store

SERVICES = ("projector", "gateway", "scheduler", "dispatcher")
BOOTED = "ucloud-tiny: up"


class Pair:
    """The cloud with two hosts, ``a`` and ``b``."""

    def __init__(self, config: Config, hosts: dict[str, Config], log: EventLog, store: Store):
        self.config = config
        self.hosts = hosts
        self.log = log
        self.store = store
        self.contexts: dict[str, ServiceContext] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.http: httpx.AsyncClient | None = None

    def hostd(self, host: str) -> Hostd:
        found = self.contexts[host].shared.hostd
        assert isinstance(found, Hostd)
        return found

    async def start(self) -> None:
        runs = [(name, self.config, name) for name in SERVICES]
        runs += [(host, mine, "hostd") for host, mine in self.hosts.items()]
        for name, config, service in runs:
            ctx = ServiceContext(
                config=config, log=self.log, store=self.store, name=name,
                shared=Shared(plumbing=NoPlumbing()),
            )
            self.contexts[name] = ctx
            self.tasks.append(asyncio.create_task(resolve(service)(ctx), name=f"bench:{name}"))
        deadline = time.monotonic() + 30
        while not self.contexts["gateway"].shared.gateway_url or any(
            not self.contexts[h].shared.hostd for h in self.hosts
        ):
            for task in self.tasks:
                if task.done():
                    task.result()
            assert time.monotonic() < deadline, "the services did not start"
            await asyncio.sleep(0.05)
        url = str(self.contexts["gateway"].shared.gateway_url)
        secret = Path(self.config.gateway.bootstrap_admin_file).read_text().strip()
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(100):
                answer = await client.post("/v1/auth/token", json={
                    "name": "admin", "realm": "admin", "otp": login.otp_at(secret, time.time()),
                })  # fmt: skip
                if answer.status_code == 200:
                    break
                await asyncio.sleep(0.1)
        answer.raise_for_status()
        self.http = httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {answer.json()['token']}"},
            timeout=60,
        )

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        for task in self.tasks:
            while not task.done():  # a cancel can be swallowed on 3.11: until it ends
                task.cancel()
                await asyncio.wait([task], timeout=0.5)

    async def view(self, vm: str) -> dict[str, Any]:
        assert self.http is not None
        answer = await self.http.get(f"/v1/vms/{vm}")
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found

    async def until(self, vm: str, done: Any, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            seen = await self.view(vm)
            if done(seen):
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"vm {vm}: still {seen['status']} on {seen['host']}")
            await asyncio.sleep(0.05)


async def import_tiny(pair: Pair) -> None:
    qcow2 = await asyncio.to_thread(build, "tiny", image_cache(), progress=lambda _: None)
    image = new_id()
    raw = Path(pair.config.data_dir) / "tiny.raw"
    raw.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True)
    size = FsStore(pair.config.paths.images, pair.config.paths.disks).import_raw(image, raw)
    raw.unlink()
    envelope = {"at": datetime.now(UTC), "actor": "bench"}
    await pair.log.append(ev.ImageRequested(
        id=new_id(), **envelope, image=image, owner="admin", name="tiny", file=new_id(),
        public=True,
    ))  # fmt: skip
    seq = await pair.log.append(
        ev.ImageCreated(id=new_id(), **envelope, image=image, size=size, checksum="0")
    )
    gateway = pair.contexts["gateway"].shared.gateway
    assert gateway is not None
    await gateway.settled(seq)


async def chain_s(pair: Pair, vm: str) -> float:
    """Seconds from the last migration request to its vm.migrated."""
    stored, _ = await pair.log.load("vm", vm)
    asked = [s.event for s in stored if isinstance(s.event, ev.VmMigrationRequested)][-1]
    moved = [s.event for s in stored if isinstance(s.event, ev.VmMigrated)][-1]
    return (moved.at - asked.at).total_seconds()


async def rounds(pair: Pair, count: int, ram_mib: int) -> dict[str, Any]:
    assert pair.http is not None
    answer = await post_once(pair.http, "/v1/vms", {
        "name": "mover", "image": "tiny", "cpu": 1, "ram": f"{ram_mib}M", "ssd": 1,
    })  # fmt: skip
    answer.raise_for_status()
    vm = str(answer.json()["id"])
    host = (await pair.until(vm, lambda v: v["status"] == "running"))["host"]
    serial = Path(pair.hosts[host].host.runtime_dir) / vm / "serial.log"
    deadline = time.monotonic() + 120
    while BOOTED not in (serial.read_text(errors="replace") if serial.exists() else ""):
        assert time.monotonic() < deadline, "the guest did not boot"
        await asyncio.sleep(0.2)
    totals, downtimes, sent, chains = [], [], [], []
    for number in range(count):
        (await pair.http.post(f"/v1/vms/{vm}/migrate")).raise_for_status()
        moved = await pair.until(vm, lambda v, h=host: v["status"] == "running" and v["host"] != h)
        if moved["reason"]:
            raise RuntimeError(f"the migration failed: {moved['reason']}")
        seen = pair.hostd(host).migrations[vm]
        chain = await chain_s(pair, vm)
        print(f"  move {number + 1}: {host} -> {moved['host']}: {seen.total_ms} ms, downtime "
              f"{seen.downtime_ms} ms, {seen.transferred_bytes / (1 << 20):.0f} MiB sent "
              f"({seen.mbps:.0f} Mbit/s); request to vm.migrated {chain * 1000:.0f} ms")
        totals.append(seen.total_ms)
        downtimes.append(seen.downtime_ms)
        sent.append(seen.transferred_bytes / (1 << 20))
        chains.append(chain * 1000)
        host = moved["host"]
        await asyncio.sleep(1)  # the guest runs a moment where it landed
    (await pair.http.delete(f"/v1/vms/{vm}")).raise_for_status()
    return {
        "migration_p50_ms": percentile(totals, 0.5), "migration_max_ms": max(totals),
        "downtime_p50_ms": percentile(downtimes, 0.5), "downtime_max_ms": max(downtimes),
        "sent_mib_mean": round(statistics.mean(sent), 1),
        "request_to_migrated_p50_ms": round(percentile(chains, 0.5), 1),
    }  # fmt: skip


@contextlib.asynccontextmanager
async def running(config: Config, hosts: dict[str, Config]) -> AsyncIterator[Pair]:
    log = await EventLog.connect(config.nats, name="bench")
    await log.ensure_stream()
    store = await Store.connect(config.etcd.endpoints)
    pair = Pair(config, hosts, log, store)
    try:
        await pair.start()
        yield pair
    finally:
        await pair.stop()
        await store.close()
        await log.close()


async def bench(config: Config, hosts: dict[str, Config], args: argparse.Namespace
                ) -> dict[str, Any]:
    async with running(config, hosts) as pair:
        await import_tiny(pair)
        print(f"a {args.ram_mib} MiB tiny guest (TCG) moved {args.rounds} times between two "
              f"hosts (cap {args.bandwidth_mib_s} MiB/s, downtime limit {args.downtime_ms} ms):")
        metrics = await rounds(pair, args.rounds, args.ram_mib)
    return {
        "bench": "migrate", "ram_mib": args.ram_mib, "rounds": args.rounds,
        "bandwidth_mib_s": args.bandwidth_mib_s, "downtime_limit_ms": args.downtime_ms,
        **metrics,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ram-mib", type=int, default=256)
    parser.add_argument("--bandwidth-mib-s", type=int, default=1024)
    parser.add_argument("--downtime-ms", type=int, default=100)
    args = parser.parse_args()
    runtimes = [Path(tempfile.mkdtemp(prefix="ucb", dir="/tmp")) for _ in range(2)]
    try:
        with embedded_servers() as servers:
            base = servers.config()
            gateway = msgspec.structs.replace(
                base.gateway, listen="127.0.0.1:0",
                bootstrap_admin_file=str(servers.directory / "admin.otp"),
            )
            images = msgspec.structs.replace(base.images, shared=True)
            config = msgspec.structs.replace(base, gateway=gateway, images=images)
            hosts = {}
            for name, runtime in zip(("a", "b"), runtimes, strict=True):
                hosts[name] = msgspec.structs.replace(config, host=msgspec.structs.replace(
                    config.host, id=name, accel="tcg", runtime_dir=str(runtime), cpu=4,
                    ram_mib=8192, ssd_mib=100_000, stop_timeout_s=5.0,
                    migration_max_bandwidth_mib_s=args.bandwidth_mib_s,
                    migration_downtime_ms=args.downtime_ms,
                ))  # fmt: skip
            metrics = asyncio.run(bench(config, hosts, args))
    finally:
        for runtime in runtimes:
            kill_leftovers(runtime)
            shutil.rmtree(runtime, ignore_errors=True)
    report(metrics)


if __name__ == "__main__":
    main()
