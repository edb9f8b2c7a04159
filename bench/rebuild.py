"""Projection throughput and lag: a rebuild from sequence 1, then a projector under load.

On embedded nats-server and etcd in a temporary directory (removed at the end):

1. append ``--events`` mixed events (hosts, networks, users with keys, and VM lifecycles
   interleaved in waves, each VM through request, placement, start, a stop and start, and
   for most of them deletion and release);
2. ``rebuild``: clear the projection and replay the whole log (what ``ucloud replay
   rebuild`` runs), events per second;
3. ``lag``: run ``ucloud serve projector`` as its own process, append at ``--rate`` events
   per second for ``--seconds``, and measure for every event the time from its append
   acknowledgement to the checkpoint passing its sequence (seen through an etcd watch).

``--max-txn-ops`` (default 4096, what the embedded etcd accepts) sizes the projector's
transactions. Run from the repository root: ``python -m bench.rebuild``. The last line is
one JSON object of metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from bench.common import Stopwatch, embedded_servers, rate, report
from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.events import Event, Nic, Resources
from ucloud.ids import new_id
from ucloud.projections.projector import wait_for_checkpoint
from ucloud.projections.rebuild import rebuild, verify
from ucloud.projections.views import checkpoint_key
from ucloud.store import Store

SMALL = Resources(cpu=1, ram_mib=1024, ssd_mib=10240)
BIG = Resources(cpu=256, ram_mib=1 << 20, ssd_mib=1 << 24)
HOSTS = [f"h{i:03d}" for i in range(50)]
NETS = [f"n{i:04d}" for i in range(200)]
USERS = [f"u{i:04d}" for i in range(500)]


def _env() -> dict[str, Any]:
    return {"id": new_id(), "at": datetime.now(UTC), "actor": "system:bench"}


def setup_events() -> list[Event]:
    out: list[Event] = [ev.HostRegistered(**_env(), host=h, capacity=BIG) for h in HOSTS]
    for i, user in enumerate(USERS):
        out.append(ev.UserCreated(**_env(), user=user, realm="users"))
        out.append(ev.UserKeyAdded(**_env(), user=user, key=f"k{i}", name="laptop",
                                   public_key=f"ssh-ed25519 AAAAC3Nza{i:08d}"))
    for i, net in enumerate(NETS):
        owner = USERS[i % len(USERS)]
        out.append(ev.NetRequested(**_env(), net=net, owner=owner, name=net, ipam="auto"))
        out.append(ev.NetCreated(**_env(), net=net, vni=1000 + i, ipam="auto",
                                 prefix=f"2001:db8:{i:x}::/64"))
    return out


def vm_lifecycle(n: int) -> list[Event]:
    """One VM's events in order (9 or 12 of them)."""
    vm, host = new_id(), HOSTS[n % len(HOSTS)]
    owner, net = USERS[n % len(USERS)], NETS[n % len(NETS)]
    mac = f"02:{(n >> 24) & 255:02x}:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}:01"
    out: list[Event] = [
        ev.VmRequested(**_env(), vm=vm, owner=owner, name=f"vm{n}", spec=SMALL, image="debian",
                       nics=(Nic(network=net, mac=mac),), keys=(f"k{n % len(USERS)}",)),
        ev.HostVmPlaced(**_env(), host=host, vm=vm, resources=SMALL),
        ev.VmScheduled(**_env(), vm=vm, host=host),
        ev.HostVmStart(**_env(), host=host, vm=vm, owner=owner, name=f"vm{n}", spec=SMALL,
                       image="debian"),
        ev.VmStarted(**_env(), vm=vm, host=host),
        ev.VmStopRequested(**_env(), vm=vm),
        ev.VmStopped(**_env(), vm=vm, host=host),
        ev.VmStartRequested(**_env(), vm=vm),
        ev.VmStarted(**_env(), vm=vm, host=host),
    ]
    if n % 4:
        out += [
            ev.VmDeleteRequested(**_env(), vm=vm),
            ev.VmDeleted(**_env(), vm=vm, host=host),
            ev.HostVmReleased(**_env(), host=host, vm=vm),
        ]
    return out


def waves(total: int, width: int, first: int = 0) -> Iterator[list[Event]]:
    """Chunks of events of distinct VMs: step k of every VM of a wave, then step k + 1."""
    made = 0
    n = first
    while made < total:
        lanes = [vm_lifecycle(n + i) for i in range(width)]
        n += width
        for step in range(max(len(lane) for lane in lanes)):
            chunk = [lane[step] for lane in lanes if step < len(lane)]
            made += len(chunk)
            yield chunk


async def append_mixed(event_log: EventLog, total: int) -> int:
    """Append the setup and then VM lifecycles until ``total`` events; the last sequence."""
    last = 0
    for event in setup_events():
        last = await event_log.append(event)
    count = len(setup_events())
    for chunk in waves(total - count, 1000):
        last = max(await asyncio.gather(*(event_log.append(e) for e in chunk)))
        count += len(chunk)
    return last


async def measure_lag(
    config: Config, event_log: EventLog, store: Store, per_second: int, seconds: float
) -> list[float]:
    """Seconds from each append's acknowledgement to the checkpoint passing it."""
    key = config.etcd.prefix + checkpoint_key()
    seen: list[tuple[int, float]] = []  # (checkpoint, when)
    revision = await store.revision()

    async def watch() -> None:
        async for change in store.watch_prefix(key, revision + 1):
            if change.kind == "put":
                seen.append((int(change.value), time.perf_counter()))

    watcher = asyncio.create_task(watch())
    acked: list[tuple[int, float]] = []

    async def append(event: Event) -> None:
        seq = await event_log.append(event)
        acked.append((seq, time.perf_counter()))

    tick = 0.01
    per_tick = max(1, round(per_second * tick))
    stream = (e for chunk in waves(10**9, 200, first=10**6) for e in chunk)
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for k in range(int(seconds / tick)):
        delay = start + k * tick - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for _ in range(per_tick):
            task = asyncio.create_task(append(next(stream)))
            pending.add(task)
            task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    last = max(seq for seq, _ in acked)
    await wait_for_checkpoint(store, config.etcd.prefix, last, timeout=30)
    await asyncio.sleep(0.05)  # let the watch deliver the final checkpoint
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    lags = []
    cursor = 0
    for seq, at in sorted(acked):
        while seen[cursor][0] < seq:
            cursor += 1
        lags.append(max(0.0, seen[cursor][1] - at))
    return lags


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def config_file(config: Config, directory: Path) -> Path:
    path = directory / "bench.toml"
    raw = msgspec.to_builtins(config)
    nats, etcd = raw["nats"], raw["etcd"]
    path.write_text(
        f'[nats]\nurl = "{nats["url"]}"\nstream = "{nats["stream"]}"\n'
        f'subject_root = "{nats["subject_root"]}"\n'
        f'[etcd]\nendpoints = ["{etcd["endpoints"][0]}"]\nprefix = "{etcd["prefix"]}"\n'
        f'max_txn_ops = {etcd["max_txn_ops"]}\n'
    )
    return path


async def main(args: argparse.Namespace) -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    with embedded_servers() as servers:
        base = servers.config()
        config = msgspec.structs.replace(  # the production subject root: its own servers
            base,
            nats=msgspec.structs.replace(base.nats, subject_root="ucloud.evt"),
            etcd=msgspec.structs.replace(base.etcd, max_txn_ops=args.max_txn_ops),
        )
        event_log = await EventLog.connect(config.nats, name="bench-rebuild")
        await event_log.ensure_stream()
        store = await Store.connect(config.etcd.endpoints)
        try:
            clock = Stopwatch()
            last = await append_mixed(event_log, args.events)
            append_s = clock.seconds
            print(f"appended {last} events in {append_s:.1f}s ({rate(last, append_s)}/s)")

            cpu = time.process_time()
            done = await rebuild(store, event_log, config.etcd.prefix,
                                 max_txn_ops=args.max_txn_ops)
            cpu = time.process_time() - cpu
            keys = len(await store.get_prefix(config.etcd.prefix, keys_only=True))
            print(f"rebuild: {done.events} events to sequence {done.checkpoint} in "
                  f"{done.seconds:.2f}s = {done.rate:,.0f} events/s ({keys} keys; "
                  f"{cpu:.2f}s of this process's CPU)")
            assert done.checkpoint == last

            projector = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ucloud.cli.main", "--config",
                str(config_file(config, servers.directory)), "serve", "projector",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                env={**os.environ, "UCLOUD_CONFIG": ""},
            )
            try:  # the projector is up once it has applied an event appended now
                marker = await event_log.append(ev.HostUp(**_env(), host=HOSTS[0]))
                await wait_for_checkpoint(store, config.etcd.prefix, marker, timeout=60)
                lags = await measure_lag(config, event_log, store, args.rate, args.seconds)
            finally:
                projector.terminate()
                try:
                    await asyncio.wait_for(projector.wait(), 30)
                except TimeoutError:
                    print("the projector did not stop within 30s of SIGTERM: killed")
                    projector.kill()
                    await projector.wait()
            p50, p99 = percentile(lags, 0.50), percentile(lags, 0.99)
            print(f"lag at {args.rate} events/s for {args.seconds:.0f}s ({len(lags)} events): "
                  f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
                  f"max {max(lags) * 1000:.1f} ms, mean {statistics.mean(lags) * 1000:.1f} ms")
            checkpoint, differences = await verify(
                store, event_log, config.etcd.prefix, max_txn_ops=args.max_txn_ops
            )
            print(f"verify after the live run: {len(differences)} differences up to {checkpoint}")
        finally:
            await store.close()
            await event_log.close()
    report({
        "events": last,
        "append_per_s": rate(last, append_s),
        "rebuild_events_per_s": round(done.rate, 1),
        "rebuild_s": round(done.seconds, 2),
        "rebuild_cpu_s": round(cpu, 2),
        "lag_rate_per_s": args.rate,
        "lag_events": len(lags),
        "lag_p50_ms": round(p50 * 1000, 2),
        "lag_p99_ms": round(p99 * 1000, 2),
        "lag_max_ms": round(max(lags) * 1000, 2),
        "verify_differences": len(differences),
        "max_txn_ops": args.max_txn_ops,
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1000, help="events/s in the lag phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the lag phase")
    parser.add_argument("--max-txn-ops", type=int, default=4096)
    asyncio.run(main(parser.parse_args()))
