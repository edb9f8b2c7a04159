"""Gateway read paths: single-VM GETs per second, and listing 20,000 VMs.

On embedded servers in a temporary directory (removed at the end):

1. The gateway service (``ucloud.gateway.service:run``, one uvicorn worker) runs in a
   process of its own; the projector runs in this one.
2. The bootstrap admin creates user ``bench``, which logs in; ``--vms`` ``vm.requested``
   events owned by ``bench`` are appended straight to the log and projected.
3. A load generator in a separate process keeps ``--connections`` keep-alive HTTP/1.1
   connections busy with ``GET /v1/vms/<id>`` for ``--seconds`` (after a warm-up), and
   then times ``--lists`` sequential ``GET /v1/vms`` (all ``--vms`` VMs in each answer):
   once with the VMs unchanged (the gateway answers from its cached listing), once while
   a VM changes every few milliseconds (each answer is built anew; this is the figure
   held against the target).

Targets: >= 3,000 single-VM GETs/s; ``GET /v1/vms`` with 20,000 VMs p50 <= 250 ms.
Run from the repository root: ``python -m bench.api [--vms N] [--seconds S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec

from bench.common import Stopwatch, embedded_servers, report
from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.gateway import login
from ucloud.ids import new_id
from ucloud.projections.projector import run as run_projector
from ucloud.projections.projector import wait_for_checkpoint
from ucloud.services import ServiceContext
from ucloud.store import Store

TARGET_GET_PER_S = 3000.0
TARGET_LIST_P50_MS = 250.0


# --- the gateway process -----------------------------------------------------------------


def gateway_process(raw_config: bytes, url_out: Connection) -> None:
    """Run the gateway service as ``ucloud serve gateway`` does, and report its URL."""
    config = msgspec.json.decode(raw_config, type=Config)

    async def serve() -> None:
        from ucloud.gateway.service import run

        log = await EventLog.connect(config.nats, name="bench-gateway")
        store = await Store.connect(config.etcd.endpoints)
        ctx = ServiceContext(
            config=config, log=log, store=store, name="gateway"
        )
        task = asyncio.create_task(run(ctx))
        while not ctx.shared.gateway_url:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        url_out.send(ctx.shared.gateway_url)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


# --- the load generator process -----------------------------------------------------------


class Load(msgspec.Struct, kw_only=True):
    requests: int = 0
    failures: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = msgspec.field(default_factory=list)


def _request(host: str, path: str, token: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, int]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    start = lower.index(b"content-length:") + len(b"content-length:")
    length = int(lower[start : lower.index(b"\r\n", start)])
    body = await reader.readexactly(length)
    return status, len(body)


async def _hammer(url: str, path: str, token: str, connections: int, seconds: float) -> Load:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = _request(parts.netloc, path, token)
    load = Load()
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                status, _ = await _exchange(reader, writer, request)
                load.requests += 1
                load.failures += status != 200
        finally:
            writer.close()

    watch = Stopwatch()
    await asyncio.gather(*(connection() for _ in range(connections)))
    load.seconds = watch.seconds
    return load


async def _timed(url: str, path: str, token: str, count: int) -> Load:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
    request = _request(parts.netloc, path, token)
    load = Load()
    try:
        for _ in range(count):
            started = time.perf_counter()
            status, size = await _exchange(reader, writer, request)
            load.latencies_ms.append((time.perf_counter() - started) * 1000)
            load.requests += 1
            load.failures += status != 200 or size < 2
    finally:
        writer.close()
    return load


def load_process(job: bytes, out: Connection) -> None:
    kind, url, path, token, a, b = msgspec.json.decode(job)
    if kind == "hammer":
        result = asyncio.run(_hammer(url, path, token, int(a), float(b)))
    else:
        result = asyncio.run(_timed(url, path, token, int(a)))
    out.send(msgspec.json.encode(result))


async def in_process(target: Any, *args: Any) -> Any:
    """Run ``target(*args, pipe)`` in a fresh process; return what it sends back."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(*args, send), daemon=True)
    process.start()
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, receive.recv)
    finally:
        await loop.run_in_executor(None, process.join, 30)


# --- the benchmark ----------------------------------------------------------------------


def requested(vm: str, index: int) -> ev.VmRequested:
    return ev.VmRequested(
        id=new_id(), at=datetime.now(UTC), actor="bench", vm=vm, owner="bench",
        name=f"vm{index:05d}", spec=ev.Resources(cpu=1, ram_mib=1024, ssd_mib=10240),
        image="bench-image",
    )


async def populate(log: EventLog, count: int, concurrency: int = 256) -> tuple[list[str], int]:
    vms = [new_id() for _ in range(count)]
    queue = iter(enumerate(vms))
    last = 0

    async def worker() -> None:
        nonlocal last
        for index, vm in queue:
            last = max(last, await log.append(requested(vm, index), expected=0))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return vms, last


async def timed_lists(
    url: str, token: str, args: argparse.Namespace,
    churn: tuple[EventLog, list[str]] | None = None,
) -> dict[str, float]:
    """Latency of ``GET /v1/vms``; with ``churn``, VMs change all along (no cached answer)."""
    changing: asyncio.Task[None] | None = None
    if churn is not None:
        log, vms = churn

        async def change() -> None:
            for vm in vms:
                await log.append(ev.VmScheduled(
                    id=new_id(), at=datetime.now(UTC), actor="bench", vm=vm, host="h1"))
                await asyncio.sleep(0.005)

        changing = asyncio.create_task(change())
    try:
        raw = await in_process(load_process, msgspec.json.encode(
            ["timed", url, "/v1/vms", token, args.lists, 0]))
    finally:
        if changing is not None:
            changing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await changing
    listed = msgspec.json.decode(raw, type=Load)
    latencies = sorted(listed.latencies_ms)
    p50 = statistics.median(latencies)
    p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
    kind = "while VMs change" if churn else "unchanged"
    print(f"GET /v1/vms ({args.vms} VMs, {kind}): p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
          f"{listed.failures} failures", flush=True)
    return {"p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "failures": listed.failures}


async def login_as(client: httpx.AsyncClient, name: str, realm: str, secret: str) -> str:
    otp = login.otp_at(secret, time.time())
    answer = await client.post("/v1/auth/token", json={"name": name, "realm": realm, "otp": otp})
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


async def bench(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    log = await EventLog.connect(config.nats, name="bench")
    await log.ensure_stream()
    store = await Store.connect(config.etcd.endpoints)
    projector_ctx = ServiceContext(
        config=config, log=log, store=store, name="projector"
    )
    projector = asyncio.create_task(run_projector(projector_ctx))
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    gateway = context.Process(
        target=gateway_process, args=(msgspec.json.encode(config), send), daemon=True
    )
    gateway.start()
    try:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, receive.poll, 60):
            raise RuntimeError("the gateway did not start within 60 s")
        url: str = receive.recv()
        print(f"gateway at {url}", flush=True)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            admin_secret = Path(config.gateway.bootstrap_admin_file).read_text().strip()
            admin = await login_as(client, "admin", "admin", admin_secret)
            made = await client.post(
                "/v1/users", json={"name": "bench", "realm": "users"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            made.raise_for_status()
            secret = made.json()["otpauth_uri"].split("secret=")[1].split("&")[0]
            token = await login_as(client, "bench", "users", secret)
            watch = Stopwatch()
            vms, last = await populate(log, args.vms)
            appended_s = watch.seconds
            await wait_for_checkpoint(store, config.etcd.prefix, last, 300)
            projected_s = watch.seconds
            auth = {"Authorization": f"Bearer {token}"}
            while True:  # the gateway's mirror follows the projection
                listing = await client.get("/v1/vms", headers=auth)
                if len(listing.json()) == args.vms:
                    break
                await asyncio.sleep(0.2)
            print(f"{args.vms} VMs appended in {appended_s:.1f}s, projected in "
                  f"{projected_s:.1f}s", flush=True)
        one = f"/v1/vms/{vms[len(vms) // 2]}"
        await in_process(load_process, msgspec.json.encode(
            ["hammer", url, one, token, args.connections, 1.0]))  # warm-up
        raw = await in_process(load_process, msgspec.json.encode(
            ["hammer", url, one, token, args.connections, args.seconds]))
        single = msgspec.json.decode(raw, type=Load)
        get_per_s = single.requests / single.seconds
        print(f"GET {one}: {single.requests} in {single.seconds:.2f}s = {get_per_s:.0f}/s "
              f"({single.failures} failures, {args.connections} connections)", flush=True)
        steady = await timed_lists(url, token, args)
        churned = await timed_lists(url, token, args, churn=(log, vms))
        return {
            "get_vm_per_s": round(get_per_s, 1),
            "get_vm_failures": single.failures,
            "list_vms": args.vms,
            "list_p50_ms": churned["p50_ms"],
            "list_p95_ms": churned["p95_ms"],
            "list_unchanged_p50_ms": steady["p50_ms"],
            "list_failures": steady["failures"] + churned["failures"],
            "populate_append_per_s": round(args.vms / appended_s, 1),
            "target_get_vm_per_s": TARGET_GET_PER_S,
            "target_list_p50_ms": TARGET_LIST_P50_MS,
            "ok": get_per_s >= TARGET_GET_PER_S and churned["p50_ms"] <= TARGET_LIST_P50_MS
            and single.failures == 0 and steady["failures"] + churned["failures"] == 0,
        }
    finally:
        gateway.terminate()
        gateway.join(10)
        projector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projector
        await store.close()
        await log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--lists", type=int, default=30)
    args = parser.parse_args(argv)
    with embedded_servers() as servers:
        base = servers.config(stream="BENCHAPI", prefix="/bench-api/v1/")
        config = msgspec.structs.replace(
            base,
            etcd=msgspec.structs.replace(
                base.etcd, secrets_prefix="/bench-api/secret/", max_txn_ops=4096
            ),
            gateway=msgspec.structs.replace(
                base.gateway, listen="127.0.0.1:0",
                bootstrap_admin_file=str(servers.directory / "admin.otp"),
            ),
        )
        metrics = asyncio.run(bench(config, args))
    report(metrics)
    return 0 if metrics["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
