"""Scheduling end to end: VMs per second from ``vm.requested`` to ``vm.scheduled``.

Embedded nats-server and etcd; 1,000 hosts registered; the scheduler service(s) running
(each with its own connection, sharing the durable consumer); N requests appended. The
clock runs from the first append until the last VM is decided. Each scheduler's log
calls are timed, to show where the time goes. Target: >= 1,000 VMs/s.

    python -m bench.schedule [--vms 5000] [--hosts 1000] [--schedulers 1]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import msgspec

from bench.common import Stopwatch, embedded_servers, rate, report
from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.events import Resources, Stored
from ucloud.handlers import scheduler
from ucloud.ids import new_id
from ucloud.services import ServiceContext
from ucloud.store import Store

HOST = Resources(cpu=64, ram_mib=262_144, ssd_mib=4_000_000)
FLAVOURS = [
    Resources(cpu=1, ram_mib=1024, ssd_mib=10_240),
    Resources(cpu=2, ram_mib=4096, ssd_mib=20_480),
    Resources(cpu=4, ram_mib=8192, ssd_mib=40_960),
]


class TimedLog(EventLog):
    """An event log that adds up the time spent in each kind of call."""

    spent: dict[str, float]
    calls: dict[str, int]

    def start_timing(self) -> None:
        self.spent = defaultdict(float)
        self.calls = defaultdict(int)

    async def load(self, aggregate: str, aggregate_id: str) -> tuple[list[Stored], int]:
        start = time.perf_counter()
        try:
            return await super().load(aggregate, aggregate_id)
        finally:
            self._note(f"load {aggregate}", start)

    async def append(self, event: ev.Event, expected: int | None = None) -> int:
        start = time.perf_counter()
        try:
            return await super().append(event, expected)
        finally:
            self._note(f"append {event.tag()}", start)

    def _note(self, what: str, start: float) -> None:
        self.spent[what] += time.perf_counter() - start
        self.calls[what] += 1


async def appended(log: EventLog, events: list[ev.Event], width: int = 64) -> None:
    for chunk in range(0, len(events), width):
        await asyncio.gather(*(log.append(e) for e in events[chunk : chunk + width]))


async def drained(log: EventLog, durable: str) -> None:
    """Wait until the durable consumer has every message handled and acked."""
    while True:
        info = await log.js.consumer_info(log.stream, durable)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(0.02)


async def bench(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    log = await EventLog.connect(config.nats, name="bench")
    await log.ensure_stream()
    store = await Store.connect(config.etcd.endpoints)
    now = datetime.now(UTC)
    hosts = [
        ev.HostRegistered(id=new_id(), at=now, actor="bench", host=f"h{n:04d}", capacity=HOST)
        for n in range(args.hosts)
    ]
    clock = Stopwatch()
    await appended(log, list(hosts))
    print(f"{args.hosts} hosts registered in {clock.seconds:.2f}s")

    logs: list[TimedLog] = []
    tasks = []
    for number in range(args.schedulers):
        own = await TimedLog.connect(config.nats, name=f"scheduler{number}")
        timed = TimedLog(own.nc, config.nats)
        timed.start_timing()
        logs.append(timed)
        ctx = ServiceContext(
            config=config, log=timed, store=store, name="scheduler"
        )
        tasks.append(asyncio.create_task(scheduler.run(ctx)))
    await asyncio.sleep(1.0)  # the followers fold the hosts; the consumer is bound
    await drained(log, scheduler.DURABLE)

    rng = random.Random(3)
    requests: list[ev.Event] = [
        ev.VmRequested(
            id=new_id(), at=now, actor="bench", vm=new_id(), owner="bench", name=f"vm{n}",
            spec=rng.choice(FLAVOURS), image="tiny",
        )
        for n in range(args.vms)
    ]
    clock.restart()
    cpu = time.process_time()
    await appended(log, requests)
    appending = clock.seconds
    await drained(log, scheduler.DURABLE)
    total = clock.seconds
    cpu = time.process_time() - cpu
    for task in tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)

    decided = await log.records(ev.subject("vm", "*", "scheduled"))
    failed = await log.records(ev.subject("vm", "*", "scheduling_failed"))
    conflicts = sum(
        1 for r in await log.records(ev.subject("host", "*", "vm_released"))
    )
    print(f"{args.vms} requests appended in {appending:.2f}s ({rate(args.vms, appending)}/s)")
    print(
        f"{len(decided)} scheduled, {len(failed)} failed in {total:.2f}s: "
        f"{rate(args.vms, total)} VMs/s with {args.schedulers} scheduler(s)"
    )
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for timed in logs:
        for what, seconds in timed.spent.items():
            spent[what] += seconds
            calls[what] += timed.calls[what]
    busy = sum(spent.values())
    print("where the schedulers' time goes (log round trips, summed over schedulers):")
    for what, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        per = seconds / calls[what] * 1e6
        print(f"  {what:32s} {calls[what]:7d} calls {seconds:7.2f}s  {per:6.0f} µs/call")
    other = total * args.schedulers - busy
    print(f"  {'other (runner, placement, acks)':32s} {'':13s} {other:7.2f}s")
    print(f"this process used {cpu:.2f}s of CPU in {total:.2f}s ({cpu / total:.0%} of one core)")
    for timed in logs:
        await timed.close()
    await store.close()
    await log.close()
    return {
        "bench": "schedule",
        "hosts": args.hosts,
        "vms": args.vms,
        "schedulers": args.schedulers,
        "scheduled": len(decided),
        "failed": len(failed),
        "released": conflicts,
        "seconds": round(total, 3),
        "vms_per_s": rate(args.vms, total),
        "append_per_s": rate(args.vms, appending),
        "log_us_per_vm": round(busy / max(args.vms, 1) * 1e6),
        "cpu_us_per_vm": round(cpu / max(args.vms, 1) * 1e6),
        "target_per_s": 1000,
        "ok": rate(args.vms, total) >= 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=5000)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--schedulers", type=int, default=1)
    parser.add_argument("--policy", choices=["pack", "spread"], default="spread")
    args = parser.parse_args()
    with embedded_servers() as servers:
        config = servers.config()
        config = msgspec.structs.replace(
            config, scheduler=msgspec.structs.replace(config.scheduler, policy=args.policy)
        )
        metrics = asyncio.run(bench(config, args))
    report(metrics)


if __name__ == "__main__":
    main()
