"""Append throughput: EventLog.append with OCC and Nats-Msg-Id against raw ``js.publish``.

On an embedded nats-server in a temporary directory (removed at the end):

- ``occ_first``: ``append(event, expected=0)`` on fresh aggregates;
- ``occ_next``: a second event on each of those aggregates with the right expected sequence;
- ``no_occ``: ``append(event)`` without an expectation (only the de-duplication id);
- ``raw``: nats-py's ``js.publish`` of the same kind of payloads with the same headers,
  so the cost of the event log over the client is a ratio.

Besides events/s it reports this process's CPU time per event: on a shared machine the
wall-clock rate swings with the neighbours, the CPU cost per append much less.

Every phase keeps ``--concurrency`` appends in flight. Phases run interleaved for
``--rounds`` rounds and the best rate of each is reported (the machine may be shared).
Run from the repository root: ``python -m bench.append [--count N] [--concurrency C]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bench.common import Stopwatch, embedded_servers, rate, report
from ucloud import events as ev
from ucloud.config import NatsConfig
from ucloud.eventlog import TYPE_HEADER, EventLog
from ucloud.ids import new_id

T = TypeVar("T")
R = TypeVar("R")


def requested(vm: str) -> ev.VmRequested:
    return ev.VmRequested(
        id=new_id(), at=datetime.now(UTC), actor="bench", vm=vm, owner="bench", name="web",
        spec=ev.Resources(cpu=1, ram_mib=512, ssd_mib=1024), image="tiny",
    )


def scheduled(vm: str) -> ev.VmScheduled:
    return ev.VmScheduled(id=new_id(), at=datetime.now(UTC), actor="bench", vm=vm, host="h1")


async def bounded(
    items: Sequence[T], concurrency: int, work: Callable[[int, T], Awaitable[R]]
) -> list[R]:
    """``work(i, item)`` for every item with at most ``concurrency`` in flight, in order."""
    results: list[R | None] = [None] * len(items)
    cursor = iter(range(len(items)))

    async def worker() -> None:
        for i in cursor:
            results[i] = await work(i, items[i])

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)))))
    return results  # type: ignore[return-value]


@dataclass
class Phase:
    per_s: float  # events per second, wall clock
    cpu_us: float  # this process's CPU microseconds per event (robust on a busy machine)


async def measure(
    name: str, items: Sequence[T], concurrency: int, work: Callable[[int, T], Awaitable[R]]
) -> tuple[Phase, list[R]]:
    watch, cpu = Stopwatch(), time.process_time()
    results = await bounded(items, concurrency, work)
    seconds, cpu_us = watch.seconds, (time.process_time() - cpu) * 1e6 / len(items)
    phase = Phase(rate(len(items), seconds), round(cpu_us, 1))
    print(
        f"{name:>10}: {len(items):>7} events in {seconds:6.2f}s = {phase.per_s:>9.1f}/s, "
        f"{phase.cpu_us:5.1f} µs CPU each",
        flush=True,
    )
    return phase, results


def raw_item(log: EventLog, event: ev.VmRequested) -> tuple[str, bytes, dict[str, str]]:
    """What ``append(event, expected=0)`` puts on the wire, prepared in advance."""
    return (
        log.physical(event.subject),
        ev.encode(event),
        {
            "Nats-Msg-Id": event.id,
            TYPE_HEADER: event.tag(),
            "Nats-Expected-Last-Subject-Sequence": "0",
            "Nats-Expected-Last-Subject-Sequence-Subject": log.physical(
                ev.subject("vm", event.vm)
            ),
        },
    )


async def one_round(log: EventLog, count: int, concurrency: int) -> dict[str, Phase]:
    """Each phase once; asserts what was stored."""
    before = await log.last_sequence()
    fresh = [requested(new_id()) for _ in range(count)]
    occ_first, seqs = await measure(
        "occ_first", fresh, concurrency, lambda _, e: log.append(e, expected=0)
    )
    follow = [scheduled(e.vm) for e in fresh]
    occ_next, next_seqs = await measure(
        "occ_next", follow, concurrency, lambda i, e: log.append(e, expected=seqs[i])
    )
    loose = [requested(new_id()) for _ in range(count)]
    no_occ, _ = await measure("no_occ", loose, concurrency, lambda _, e: log.append(e))
    raw_items = [raw_item(log, requested(new_id())) for _ in range(count)]

    async def publish(_: int, item: tuple[str, bytes, dict[str, str]]) -> int:
        ack = await log.js.publish(item[0], item[1], headers=dict(item[2]))
        return int(ack.seq)

    raw, _ = await measure("raw", raw_items, concurrency, publish)

    stored = await log.last_sequence() - before
    assert stored == 4 * count, f"the round stored {stored} events, expected {4 * count}"
    assert len(set(seqs) | set(next_seqs)) == 2 * count
    middle = count // 2
    sample, last = await log.load("vm", fresh[middle].vm)
    assert [s.seq for s in sample] == [seqs[middle], next_seqs[middle]] == [seqs[middle], last]
    return {"occ_first": occ_first, "occ_next": occ_next, "no_occ": no_occ, "raw": raw}


async def run(config: NatsConfig, count: int, concurrency: int, rounds: int) -> dict[str, Any]:
    log = await EventLog.connect(config, name="bench")
    try:
        await log.ensure_stream()
        warm = [requested(new_id()) for _ in range(min(2000, count))]
        await bounded(warm, concurrency, lambda _, e: log.append(e, expected=0))
        results = []
        for number in range(1, rounds + 1):
            print(f"round {number}/{rounds}", flush=True)
            results.append(await one_round(log, count, concurrency))
    finally:
        await log.close()
    phases = list(results[0])
    best = {p: max(r[p].per_s for r in results) for p in phases}
    median = {p: statistics.median(r[p].per_s for r in results) for p in phases}
    cpu = {p: min(r[p].cpu_us for r in results) for p in phases}
    occ = min(best["occ_first"], best["occ_next"])
    occ_cpu = max(cpu["occ_first"], cpu["occ_next"])
    return {
        "append_occ_first_per_s": best["occ_first"],
        "append_occ_next_per_s": best["occ_next"],
        "append_occ_per_s": occ,
        "append_occ_median_per_s": round(min(median["occ_first"], median["occ_next"]), 1),
        "append_no_occ_per_s": best["no_occ"],
        "raw_publish_per_s": best["raw"],
        "occ_over_raw": round(occ / best["raw"], 3) if best["raw"] else 0.0,
        "append_occ_cpu_us": occ_cpu,
        "raw_publish_cpu_us": cpu["raw"],
        "append_occ_cpu_bound_per_s": round(1e6 / occ_cpu, 1) if occ_cpu else 0.0,
        "count": count,
        "concurrency": concurrency,
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="events per phase")
    parser.add_argument("--concurrency", type=int, default=512, help="appends in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is reported")
    args = parser.parse_args()
    if args.count < 2 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--count must be at least 2, --concurrency and --rounds at least 1")
    with embedded_servers(etcd=False) as servers:
        metrics = asyncio.run(run(servers.config().nats, args.count, args.concurrency, args.rounds))
    print(
        f"OCC appends (slower of first/next, best of {args.rounds}): "
        f"{metrics['append_occ_per_s']}/s, {metrics['occ_over_raw']:.2f}x raw js.publish; "
        f"{metrics['append_occ_cpu_us']} µs CPU per append against "
        f"{metrics['raw_publish_cpu_us']} µs per raw publish",
        flush=True,
    )
    report(metrics)


if __name__ == "__main__":
    main()
