"""Faults, mid-burst: N VMs requested through both gateways while processes and servers die.

``python -m bench.chaos [--vms N] [--rate R] [--deadline S]`` (root: network namespaces)
starts the cluster harness (``tests.cluster.Cluster``: three control nodes, every service
its own process) with two real hosts and hollow hosts (``bench/hollow_qemu.py``: VMs
without guests, for load tests only). It boots ``--real`` tiny guests on the real hosts
(the hollow ones drained meanwhile), drains the real hosts, and requests N hollow VMs at a
steady rate, alternating between the two gateways, one ``Idempotency-Key`` per VM, each
retried (on the other gateway) through connection errors, 502/503/504 and 409 in progress
until a 2xx: that is "acknowledged". Meanwhile the fault schedule runs: kill -9 of every
service kind, restarted a second later as systemd would; one nats-server and one etcd
member killed for 10 s; one control node partitioned (nftables) for 10 s; the hostd of the
real guests and one hollow hostd killed and restarted.

Then everything is healed and the benchmark waits until every acknowledged VM is running
or failed with a reason, and checks, from the whole stream and the projection:

- ``lost``: acknowledged VMs not in the log, or neither running nor failed with a reason;
- ``duplicated``: event ids seen twice, VMs placed twice, requests that made two VMs
  (``bench.invariants``);
- ``overbooked``: host events after which a host's reservations exceed its capacity;
- ``projection_equal``: the live projection equals a rebuild from the log, byte for byte
  (``ucloud replay rebuild --verify``);
- ``acked_missing``: acknowledged creates whose ``vm.requested`` is not in the stream.

It also counts, in every process's log, tracebacks and lines repeated more than
``STORM_PER_S`` times in one second. The last line is one JSON object. The run is bounded
(``--deadline``) and, interrupted or not, leaves no namespace or process behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import report
from bench.invariants import audit
from tests.cluster import Cluster
from tests.integration.hostd_harness import built
from tests.multihost import ucloud_binary
from ucloud.eventlog import EventLog
from ucloud.projections.rebuild import verify
from ucloud.store import Store

VM_RAM_MIB, VM_SSD_GIB = 128, 1
STORM_PER_S = 20  # one line more often than this in one second is a storm
REQUEST_TIMEOUT_S = 30.0
RETRY_S = (0.5, 1.0, 2.0, 3.0)
SETTLED = ("running",)


@dataclass
class Burst:
    """What the clients saw: VM ids acknowledged, by request name; retries, rejections."""

    acked: dict[str, str] = field(default_factory=dict)
    retries: Counter[str] = field(default_factory=Counter)
    rejected: dict[str, str] = field(default_factory=dict)
    began: float = 0.0
    ended: float = 0.0


class Faults:
    """The schedule, run in a thread beside the burst (the harness's helpers block)."""

    def __init__(self, cluster: Cluster, gap_s: float, outage_s: float) -> None:
        self.cluster = cluster
        self.gap_s = gap_s
        self.outage_s = outage_s
        self.injected: list[str] = []
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, name="faults", daemon=True)

    def schedule(self) -> list[tuple[str, Callable[[], None]]]:
        c = self.cluster
        real = c.hosts[0].name
        hollow = next(h.name for h in c.hosts if c.is_hollow(h))

        def crash(name: str) -> Callable[[], None]:
            def run() -> None:
                c.kill(name)
                time.sleep(1.0)  # systemd's RestartSec
                c.restart(name)

            return run

        def outage(kill: Callable[[str], None], start: Callable[[str], None],
                   node: str) -> Callable[[], None]:  # fmt: skip
            def run() -> None:
                kill(node)
                self.stopping.wait(self.outage_s)
                start(node)

            return run

        return [
            ("kill -9 gateway2", crash("gateway2")),
            ("kill -9 scheduler1", crash("scheduler1")),
            ("kill nats-server c2 10s", outage(c.kill_nats, c.restart_nats, "c2")),
            ("kill -9 projector1", crash("projector1")),
            ("kill -9 dispatcher1", crash("dispatcher1")),
            ("kill etcd c3 10s", outage(c.kill_etcd, c.restart_etcd, "c3")),
            (f"kill -9 hostd-{real}", crash(f"hostd-{real}")),
            ("kill -9 netalloc1", crash("netalloc1")),
            ("partition c2 10s", outage(c.partition, c.heal, "c2")),
            ("kill -9 filescan1", crash("filescan1")),
            ("kill -9 imagescan1", crash("imagescan1")),
            (f"kill -9 hostd-{hollow}", crash(f"hostd-{hollow}")),
            (f"kill -9 metadata-{real}", crash(f"metadata-{real}")),
            ("kill -9 gateway1", crash("gateway1")),
            ("kill -9 scheduler2", crash("scheduler2")),
            ("kill -9 projector2", crash("projector2")),
        ]

    def _run(self) -> None:
        for name, fault in self.schedule():
            if self.stopping.wait(self.gap_s):
                return
            began = time.monotonic()
            self.injected.append(name)
            try:
                fault()
            except AssertionError as exc:  # a restart that failed: said, healed later
                self.errors.append(f"{name}: {str(exc).splitlines()[0]}")
                print(f"fault {name}: {exc}"[:3000], flush=True)
            print(f"fault: {name} ({time.monotonic() - began:.1f}s)", flush=True)


class Client:
    """The admin's HTTP client to both gateways."""

    def __init__(self, urls: list[str], token: str) -> None:
        limits = httpx.Limits(max_connections=64)
        self.http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT_S,
            limits=limits,
        )  # fmt: skip
        self.urls = urls

    async def create(self, index: int, body: dict[str, Any], burst: Burst, deadline: float,
                     ) -> None:  # fmt: skip
        """POST /v1/vms with one key until a 2xx, moving to the other gateway on failure."""
        key = f"chaos-{os.getpid()}-{index}"
        name = body["name"]
        attempt = 0
        while time.monotonic() < deadline:
            url = self.urls[(index + attempt) % len(self.urls)]
            try:
                answer = await self.http.post(f"{url}/v1/vms", json=body,
                                              headers={"Idempotency-Key": key})  # fmt: skip
            except httpx.TransportError as exc:
                reason = type(exc).__name__
            else:
                if answer.is_success:
                    burst.acked[name] = answer.json()["id"]
                    return
                busy = answer.status_code == 409 and "Retry-After" in answer.headers
                if not (answer.status_code in (502, 503, 504) or busy):
                    burst.rejected[name] = f"HTTP {answer.status_code}: {answer.text[:200]}"
                    return
                reason = f"HTTP {answer.status_code}"
            burst.retries[reason] += 1
            await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            attempt += 1
        burst.rejected[name] = "deadline"

    async def vms(self) -> dict[str, dict[str, Any]]:
        """Every VM by id, from whichever gateway answers."""
        for url in self.urls * 3:
            try:
                answer = await self.http.get(f"{url}/v1/vms")
                if answer.is_success:
                    return {vm["id"]: vm for vm in answer.json()}
            except httpx.TransportError:
                pass
            await asyncio.sleep(1)
        raise RuntimeError("no gateway lists the VMs")

    async def host_action(self, host: str, action: str) -> None:
        for url in self.urls:
            answer = await self.http.post(f"{url}/v1/hosts/{host}/{action}")
            if answer.is_success or answer.status_code == 409:
                return
        raise RuntimeError(f"cannot {action} {host}: {answer.text}")


def cli(cluster: Cluster, home: Path, *argv: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCLOUD_")}
    env |= {"UCLOUD_CONFIG_DIR": str(home), "UCLOUD_URL": cluster.gateway_url("gateway1")}
    done = subprocess.run([ucloud_binary(), *argv], env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"ucloud {' '.join(argv)}: {done.stderr}{done.stdout}")
    return done.stdout


async def wait_settled(client: Client, ids: set[str], deadline: float) -> dict[str, Any]:
    """Every VM of ``ids`` running or failed with a reason, or the deadline; the VMs."""
    while True:
        vms = await client.vms()
        pending = [i for i in ids if not _settled(vms.get(i))]
        if not pending or time.monotonic() > deadline:
            return vms
        await asyncio.sleep(2)


def _settled(vm: dict[str, Any] | None) -> bool:
    return vm is not None and (
        vm["status"] in SETTLED or (vm["status"] == "failed" and bool(vm.get("reason")))
    )


async def burst(client: Client, count: int, rate: float, deadline: float) -> Burst:
    seen = Burst(began=time.monotonic())
    body = {"cpu": 1, "ram": f"{VM_RAM_MIB}M", "ssd": VM_SSD_GIB, "image": "tiny"}
    tasks = []
    for index in range(count):
        due = seen.began + index / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(
            client.create(index, {**body, "name": f"c{index:05d}"}, seen, deadline)))
    await asyncio.gather(*tasks)
    seen.ended = time.monotonic()
    return seen


def log_findings(run: Path) -> tuple[int, int, list[str]]:
    """Tracebacks and storm lines (a line repeated over STORM_PER_S times in a second)."""
    tracebacks, storms, worst = 0, 0, []
    stamp = re.compile(r"^(\S+ \d\d:\d\d:\d\d)[.,]\d+\s+(.*)$")
    for log in sorted(run.glob("*.log")):
        per_second: Counter[tuple[str, str]] = Counter()
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("Traceback"):
                tracebacks += 1
            matched = stamp.match(line)
            if matched:
                second, rest = matched.groups()
                per_second[(second, re.sub(r"\d+", "#", rest)[:120])] += 1
        for (second, text), n in per_second.items():
            if n > STORM_PER_S:
                storms += n
                worst.append(f"{log.stem} {second} x{n}: {text}")
    return tracebacks, storms, worst


async def check(cluster: Cluster, acked: dict[str, str]) -> dict[str, Any]:
    config = cluster.control[1].config  # the harness's base config lists no servers
    assert config is not None
    event_log = await EventLog.connect(config.nats, name="chaos-check")
    store = await Store.connect(config.etcd.endpoints)
    try:
        stored = []
        async for batch in event_log.read():
            stored += [(record.seq, record.event()) for record in batch]
        found = audit(stored)
        in_log = {vm for ids in found.requested.values() for vm in ids}
        _, differences = await verify(store, event_log, config.etcd.prefix,
                                      max_txn_ops=config.etcd.max_txn_ops)  # fmt: skip
    finally:
        await event_log.close()
        await store.close()
    for difference in differences[:5]:
        print(f"projection differs: {difference}", flush=True)
    return {
        "events": found.events, "duplicated": found.duplicated,
        "duplicated_ids": found.duplicated_ids, "placed_twice": found.placed_twice,
        "overbooked": found.overbooked, "projection_equal": not differences,
        "acked_missing": sum(1 for vm in acked.values() if vm not in in_log),
    }  # fmt: skip


async def run(cluster: Cluster, args: argparse.Namespace, home: Path) -> dict[str, Any]:
    hard_deadline = time.monotonic() + args.deadline - 60  # leave time for the checks
    tiny = built("tiny")
    cli(cluster, home, "login", "--name", "admin", "--realm", "admin",
        "--secret-file", str(cluster.admin_secret_file))  # fmt: skip
    token = json.loads((home / "credentials.json").read_text())["token"]
    cli(cluster, home, "file", "upload", str(tiny), "--name", "tiny.qcow2")
    cli(cluster, home, "image", "create", "--file", "tiny.qcow2", "--name", "tiny", "--public",
        "--wait")  # fmt: skip
    client = Client([cluster.gateway_url("gateway1"), cluster.gateway_url("gateway2")], token)
    real = [h.config.host.id for h in cluster.hosts if h.config and not cluster.is_hollow(h)]
    hollow = [h.config.host.id for h in cluster.hosts if h.config and cluster.is_hollow(h)]
    for host in hollow:
        await client.host_action(host, "drain")
    guests = Burst()
    body = {"cpu": 1, "ram": f"{VM_RAM_MIB}M", "ssd": VM_SSD_GIB, "image": "tiny"}
    await asyncio.gather(*(client.create(-1 - i, {**body, "name": f"real{i}"}, guests,
                                         hard_deadline) for i in range(args.real)))  # fmt: skip
    await wait_settled(client, set(guests.acked.values()), time.monotonic() + 120)
    for host in real:
        await client.host_action(host, "drain")
    for host in hollow:
        await client.host_action(host, "undrain")
    print(f"{len(guests.acked)} real guests up; burst of {args.vms} at {args.rate:g}/s",
          flush=True)  # fmt: skip

    faults = Faults(cluster, gap_s=args.gap, outage_s=args.outage)
    faults.thread.start()
    seen = await burst(client, args.vms, args.rate, hard_deadline)
    print(f"burst: {len(seen.acked)} acknowledged in {seen.ended - seen.began:.1f}s, "
          f"retries {dict(seen.retries)}, rejected {len(seen.rejected)}", flush=True)
    while faults.thread.is_alive() and time.monotonic() < hard_deadline:
        await asyncio.sleep(0.5)
    faults.stopping.set()
    await asyncio.to_thread(faults.thread.join, 60)
    await asyncio.to_thread(heal, cluster)
    healed = time.monotonic()
    acked = {**seen.acked, **guests.acked}
    vms = await wait_settled(client, set(acked.values()),
                             min(hard_deadline, healed + args.settle))  # fmt: skip
    settle_s = time.monotonic() - healed
    await client.http.aclose()
    lost = sum(1 for vm in acked.values() if not _settled(vms.get(vm)))
    for name, vm in list(acked.items())[:]:
        if not _settled(vms.get(vm)) and lost < 20:
            print(f"not settled: {name} {vm} {vms.get(vm, {}).get('status')}", flush=True)
    checked = await check(cluster, acked)
    tracebacks, storms, worst = log_findings(cluster.directory / "run")
    for line in worst[:10]:
        print(f"log storm: {line}", flush=True)
    running = sum(1 for vm in seen.acked.values() if vms.get(vm, {}).get("status") == "running")
    real_running = sum(1 for vm in guests.acked.values()
                       if vms.get(vm, {}).get("status") == "running")  # fmt: skip
    return {
        "requested": args.vms, "acknowledged": len(seen.acked), "running": running,
        "rejected": len(seen.rejected), "lost": lost + len(seen.rejected),
        "real_guests": args.real, "real_running": real_running,
        "faults": len(faults.injected), "fault_errors": len(faults.errors),
        "settle_s": round(settle_s, 1),
        "vms_per_s": round(len(seen.acked) / max(seen.ended - seen.began, 1e-9), 2),
        "retries": sum(seen.retries.values()), "log_tracebacks": tracebacks,
        "log_storm_lines": storms, **checked,
    }  # fmt: skip


def heal(cluster: Cluster) -> None:
    """Everything back: partitions healed, servers and processes running."""
    for node in cluster.control.values():
        cluster._node(node.name).space.sh("nft", "delete", "table", "inet", "ucloud_partition",
                                          check=False)  # fmt: skip
        for server in (node.nats, node.etcd):
            if server is not None and not server.running:
                server.start()
    for name, process in cluster.processes.items():
        if not process.alive() or not process.ready():
            try:
                cluster.restart(name)
            except AssertionError as exc:
                print(f"heal: {name} does not come back: {exc}"[:3000], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000, help="hollow VMs to request")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="requests per second (default: the burst lasts ~ the faults)")
    parser.add_argument("--real", type=int, default=3, help="real tiny guests (default 3)")
    parser.add_argument("--hollow-hosts", type=int, default=3)
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between faults")
    parser.add_argument("--outage", type=float, default=10.0, help="seconds a server is out")
    parser.add_argument("--settle", type=float, default=300.0,
                        help="seconds the VMs may take to settle after the heal (default 300)")
    parser.add_argument("--deadline", type=float, default=0.0,
                        help="seconds the whole run may take (default: from --vms)")
    args = parser.parse_args()
    if args.rate <= 0:
        args.rate = max(2.0, args.vms / 120)
    if args.deadline <= 0:
        args.deadline = 600 + args.vms / args.rate + args.vms * 0.3
    per_host = math.ceil(args.vms / args.hollow_hosts * 1.25) + 4
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # leave through the cleanup
    began = time.monotonic()
    with Cluster(hosts=2, hollow=args.hollow_hosts, hollow_capacity=(
            per_host, per_host * VM_RAM_MIB, per_host * VM_SSD_GIB * 1024)) as cluster:
        print(f"cluster up in {cluster.started_in_s:.1f}s", flush=True)
        signal.signal(signal.SIGALRM, lambda *_: sys.exit("chaos: deadline passed"))
        signal.alarm(int(args.deadline))
        try:
            home = cluster.directory / "admin"
            metrics = asyncio.run(run(cluster, args, home))
        finally:
            signal.alarm(0)
    metrics["total_s"] = round(time.monotonic() - began, 1)
    report(metrics)


if __name__ == "__main__":
    main()
