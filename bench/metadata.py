"""The metadata service under load: requests per second and p99 latency with 200 VMs.

On embedded servers in a temporary directory (removed at the end), as root:

1. ``--vms`` VMs (one NIC each) of one owner with two SSH keys, on one ``auto`` network,
   are appended to the log and projected; the projector stops once it has caught up.
2. The network's bridge ``br<vni>`` is made on this host, and a namespace on it holds the
   link-local EUI-64 address of every VM's MAC (as if all VMs sat behind one port).
3. The metadata service (``ucloud.metadata.service:run``) runs in this process and
   listens on ``[fe80::a9fe:a9fe%br<vni>]:80``.
4. A load generator in a separate process, inside the namespace, keeps ``--connections``
   keep-alive connections busy for ``--seconds`` (after a warm-up), each from the address
   of another VM, cycling through ``/ucloud/v1/meta``, ``/ssh-keys`` and
   ``/openstack/latest/meta_data.json``, one request in flight per connection; every
   answer must be a 200 for the VM whose address asked. Then it does the same with a new
   connection per request, as cloud-init does.

Targets (keep-alive): >= 5,000 requests/s, p99 <= 5 ms.
Run from the repository root: ``python -m bench.metadata [--vms N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bench.common import embedded_servers, report
from ucloud import events as ev
from ucloud.config import Config, MetadataConfig
from ucloud.eventlog import EventLog
from ucloud.ids import new_id
from ucloud.metadata import METADATA_ADDRESS
from ucloud.metadata.server import MetadataService
from ucloud.metadata.service import run as run_metadata
from ucloud.net_addr import link_local
from ucloud.projections.projector import run as run_projector
from ucloud.projections.projector import wait_for_checkpoint
from ucloud.services import ServiceContext
from ucloud.store import Store

TARGET_REQ_PER_S = 5000.0
TARGET_P99_MS = 5.0
PATHS = ("/ucloud/v1/meta", "/ssh-keys", "/openstack/latest/meta_data.json")
KEYS = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench0000000000000000000000000000000000001 a@bench",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench0000000000000000000000000000000000002 b@bench",
)


# --- the load generator (a separate process, inside the namespace) -----------------------


class Load(msgspec.Struct, kw_only=True):
    requests: int = 0
    failures: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = msgspec.field(default_factory=list)


class Client(asyncio.Protocol):
    """One keep-alive connection: a GET, wait for the whole answer, the next GET."""

    def __init__(self, load: Load, deadline: float, done: asyncio.Future[None],
                 expect: bytes, record: bool) -> None:
        self.load, self.deadline, self.done, self.expect = load, deadline, done, expect
        self.record = record
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent = 0.0
        self.turn = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        path = PATHS[self.turn % len(PATHS)]
        self.turn += 1
        self.sent = time.perf_counter()
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end]
        start = head.lower().index(b"content-length:") + 15
        length = int(head[start : head.index(b"\r\n", start) if b"\r\n" in head[start:]
                          else len(head)])
        if len(self.buffer) < head_end + 4 + length:
            return
        body = self.buffer[head_end + 4 : head_end + 4 + length]
        self.buffer = self.buffer[head_end + 4 + length :]
        now = time.perf_counter()
        if self.record:
            self.load.requests += 1
            self.load.latencies_ms.append((now - self.sent) * 1000)
            if not head.startswith(b"HTTP/1.1 200") or (
                self.turn % len(PATHS) == 1 and self.expect not in body
            ):
                self.load.failures += 1
        if now < self.deadline:
            self.send()
        elif self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _factory(load: Load, deadline: float, done: asyncio.Future[None], vm: str,
             record: bool) -> Callable[[], Client]:
    return lambda: Client(load, deadline, done, vm.encode(), record)


async def _keep_alive(sources: list[tuple[str, str]], scope: int, connections: int,
                      seconds: float, record: bool) -> Load:
    loop = asyncio.get_running_loop()
    load = Load()
    deadline = time.perf_counter() + seconds
    waits: list[asyncio.Future[None]] = []
    for i in range(connections):
        source, vm = sources[i % len(sources)]
        done: asyncio.Future[None] = loop.create_future()
        waits.append(done)
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setblocking(False)
        sock.bind((source, 0, 0, scope))
        await loop.sock_connect(sock, (METADATA_ADDRESS, 80, 0, scope))
        await loop.create_connection(_factory(load, deadline, done, vm, record), sock=sock)
    started = time.perf_counter()
    await asyncio.gather(*waits)
    load.seconds = time.perf_counter() - started
    return load


def _one_shot(source: str, scope: int) -> bytes:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source, 0, 0, scope))
        sock.connect((METADATA_ADDRESS, 80, 0, scope))
        sock.sendall(b"GET /ssh-keys HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def _new_connections(sources: list[tuple[str, str]], scope: int, seconds: float) -> Load:
    load = Load()
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        source, _ = sources[i % len(sources)]
        i += 1
        sent = time.perf_counter()
        answer = _one_shot(source, scope)
        load.latencies_ms.append((time.perf_counter() - sent) * 1000)
        load.requests += 1
        load.failures += not answer.startswith(b"HTTP/1.1 200")
    load.seconds = time.perf_counter() - started
    return load


def client_main(raw: str) -> None:
    """The load generator: prints its measurements as JSON on stdout."""
    job = msgspec.json.decode(raw)
    scope = socket.if_nametoindex("eth0")
    sources = [(s, v) for s, v in job["sources"]]

    async def hammer() -> tuple[Load, Load]:
        await _keep_alive(sources, scope, job["connections"], 1.0, record=False)  # warm-up
        keep = await _keep_alive(sources, scope, job["connections"], job["seconds"], True)
        return keep, _new_connections(sources, scope, job["seconds"])

    keep, fresh = asyncio.run(hammer())
    sys.stdout.write(msgspec.json.encode({"keep_alive": keep, "new": fresh}).decode())


# --- this process: servers, projection, network, service ---------------------------------


def _system() -> dict[str, Any]:
    return {"id": new_id(), "at": datetime.now(UTC), "actor": "system:bench"}


async def project(config: Config, vms: int, vni: int, prefix: str) -> list[tuple[str, str]]:
    """Owner, keys, network and VMs in the projection; (source address, vm id) per VM."""
    log = await EventLog.connect(config.nats, name="bench")
    await log.ensure_stream()
    store = await Store.connect(config.etcd.endpoints)
    owner, net = "bench", new_id()
    events: list[ev.Event] = [ev.UserCreated(**_system(), user=owner, realm="users")]
    keys = []
    for i, key in enumerate(KEYS):
        keys.append(new_id())
        events.append(ev.UserKeyAdded(**_system(), user=owner, key=keys[-1], name=f"k{i}",
                                      public_key=key))
    events += [
        ev.NetRequested(**_system(), net=net, owner=owner, name="lan", ipam="auto"),
        ev.NetCreated(**_system(), net=net, vni=vni, prefix=prefix, ipam="auto"),
    ]
    sources: list[tuple[str, str]] = []
    for i in range(vms):
        vm = new_id()
        mac = "02:be:" + ":".join(f"{b:02x}" for b in (i >> 16 & 255, i >> 8 & 255, i & 255, 1))
        events.append(ev.VmRequested(
            **_system(), vm=vm, owner=owner, name=f"vm{i}", image="img",
            spec=ev.Resources(cpu=1, ram_mib=512, ssd_mib=1024),
            nics=(ev.Nic(network=net, mac=mac),), keys=tuple(keys),
        ))
        sources.append((link_local(mac), vm))
    seq = 0
    for event in events:
        seq = await log.append(event)
    ctx = ServiceContext(config=config, log=log, store=store, name="projector")
    projector = asyncio.create_task(run_projector(ctx))
    await wait_for_checkpoint(store, config.etcd.prefix, seq, 60)
    projector.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await projector
    await store.close()
    await log.close()
    return sources


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


async def bench(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    vni = 0x900000 + int.from_bytes(os.urandom(2), "big")
    prefix = f"2001:db8:{os.urandom(2).hex()}::/64"
    print(f"projecting {args.vms} VMs ...", flush=True)
    sources = await project(config, args.vms, vni, prefix)
    bridge, namespace, port = f"br{vni}", f"umbench{vni}", f"umb{vni}"
    try:
        sh("ip", "link", "add", bridge, "type", "bridge")
        sh("sysctl", "-qw", f"net.ipv6.conf.{bridge}.accept_ra=0")
        sh("ip", "link", "set", bridge, "up")
        sh("ip", "netns", "add", namespace)
        sh("ip", "link", "add", port, "type", "veth", "peer", "name", f"{port}x")
        sh("ip", "link", "set", f"{port}x", "netns", namespace)
        sh("ip", "-n", namespace, "link", "set", f"{port}x", "name", "eth0")
        for source, _ in sources:
            sh("ip", "-n", namespace, "addr", "add", f"{source}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", namespace, "link", "set", "eth0", "up")
        sh("ip", "link", "set", port, "master", bridge)
        sh("ip", "link", "set", port, "up")
        return await measure(config, args, sources, bridge, namespace)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", port], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)


async def measure(config: Config, args: argparse.Namespace, sources: list[tuple[str, str]],
                  bridge: str, namespace: str) -> dict[str, Any]:
    log = await EventLog.connect(config.nats, name="bench-metadata")
    store = await Store.connect(config.etcd.endpoints)
    ctx = ServiceContext(config=config, log=log, store=store, name="metadata")
    task = asyncio.create_task(run_metadata(ctx))
    try:
        while bridge not in getattr(ctx.shared.metadata, "listening", {}):
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        service = ctx.shared.metadata
        assert isinstance(service, MetadataService)
        job = msgspec.json.encode({
            "sources": sources, "connections": args.connections, "seconds": args.seconds,
        }).decode()
        print(f"load: {args.connections} keep-alive connections for {args.seconds:g}s, "
              f"then one connection per request ...", flush=True)
        cpu = time.process_time()  # this process runs the service and nothing else now
        client = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", namespace, sys.executable, "-m", "bench.metadata",
            "--client", job, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parents[1]),
        )
        out, err = await client.communicate()
        if client.returncode != 0:
            raise SystemExit(f"load generator failed: {err.decode()}")
        result = msgspec.json.decode(out)
        result["service_cpu_s"] = time.process_time() - cpu
        refused = service.refused
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()
        await log.close()
    return summarize(result, args, refused)


def _p(values: list[float], q: int) -> float:
    return round(statistics.quantiles(values, n=100)[q - 1], 3) if len(values) > 1 else 0.0


def summarize(result: dict[str, Any], args: argparse.Namespace, refused: int) -> dict[str, Any]:
    keep, new = result["keep_alive"], result["new"]
    req_per_s = round(keep["requests"] / keep["seconds"], 1)
    metrics = {
        "vms": args.vms,
        "connections": args.connections,
        "req_per_s": req_per_s,
        "p50_ms": _p(keep["latencies_ms"], 50),
        "p99_ms": _p(keep["latencies_ms"], 99),
        "failures": keep["failures"] + new["failures"],
        "refused": refused,
        "new_connection_req_per_s": round(new["requests"] / new["seconds"], 1),
        "new_connection_p99_ms": _p(new["latencies_ms"], 99),
        # what a request costs the service, whatever else the machine is doing
        "service_cpu_us_per_request": round(
            result["service_cpu_s"] * 1e6 / max(1, keep["requests"] + new["requests"]), 1
        ),
        "target_req_per_s": TARGET_REQ_PER_S,
        "target_p99_ms": TARGET_P99_MS,
    }
    metrics["met"] = (
        metrics["req_per_s"] >= TARGET_REQ_PER_S and metrics["p99_ms"] <= TARGET_P99_MS
        and metrics["failures"] == 0
    )
    print(f"keep-alive: {req_per_s:.0f} requests/s, p50 {metrics['p50_ms']} ms, "
          f"p99 {metrics['p99_ms']} ms; one connection per request: "
          f"{metrics['new_connection_req_per_s']:.0f} requests/s, "
          f"p99 {metrics['new_connection_p99_ms']} ms; failures {metrics['failures']}; "
          f"service CPU {metrics['service_cpu_us_per_request']} us per request",
          flush=True)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client)
        return
    if os.geteuid() != 0:
        raise SystemExit("bench.metadata needs root (a bridge, a network namespace, port 80)")
    with embedded_servers() as servers:
        config = servers.config(prefix=f"/bench/{new_id()}/v1/")
        config = msgspec.structs.replace(
            config, metadata=MetadataConfig(bridge_poll_s=0.2),
            etcd=msgspec.structs.replace(config.etcd, max_txn_ops=4096),
        )
        report(asyncio.run(bench(config, args)))


if __name__ == "__main__":
    main()
