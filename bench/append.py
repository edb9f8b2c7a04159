"""Append throughput: EventLog.append with OCC and Nats-Msg-Id against raw ``js.publish``.

On embedded nats-servers in temporary directories (removed at the end), one per JetStream
``sync_interval`` of ``--sync``: ``always`` (what ucloud runs: each write on disk before it
is acknowledged) first, then by default nats-server's own (``default``, every two
minutes), and any interval named (``10ms``, group commit). Each server gets the same
phases; its figures carry the prefix ``sync_<label>_`` (the first server's none) and
``sync_<label>_over_always_occ`` is how many times faster than ``always`` it appends.
What each server runs with is read back from its ``/varz``; put the stores with ``--dir``
on the disk to measure (a tmpfs makes fsync free). The phases:

- ``occ_first``: ``append(event, expected=0)`` on fresh aggregates;
- ``occ_next``: a second event on each of those aggregates with the right expected sequence;
- ``no_occ``: ``append(event)`` without an expectation (only the de-duplication id);
- ``raw``: nats-py's ``js.publish`` of the same kind of payloads with the same headers,
  so the cost of the event log over the client is a ratio.

Besides events/s it reports this process's CPU time per event: on a shared machine the
wall-clock rate swings with the neighbours, the CPU cost per append much less.

Every phase keeps ``--concurrency`` appends in flight. Phases (and servers) run
interleaved for ``--rounds`` rounds and the best rate of each is reported (the machine may
be shared). Run from the repository root:
``python -m bench.append [--count N] [--concurrency C] [--sync always,default,10ms]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import statistics
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.common import Stopwatch, embedded_servers, filesystem, rate, report
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


async def first_append(log: EventLog, _: int, event: ev.VmRequested) -> int:
    return await log.append(event, expected=0)


def sync_mode(label: str) -> str | None:
    """A ``--sync`` label as ``EmbeddedNats`` takes it: ``default`` is nats-server's own."""
    return None if label == "default" else label


def server_sync(monitor_url: str) -> str:
    """What the server says it runs with: ``always`` or its interval in milliseconds."""
    with urllib.request.urlopen(f"{monitor_url}/varz", timeout=5) as resp:
        config = json.loads(resp.read())["jetstream"]["config"]
    return "always" if config.get("sync_always") else f"{config['sync_interval'] // 10**6}ms"


def summary(results: list[dict[str, Phase]]) -> dict[str, Any]:
    """The figures of one server's rounds: best rates, median OCC, least CPU per event."""
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
    }


async def run(
    configs: dict[str, NatsConfig], count: int, concurrency: int, rounds: int
) -> dict[str, dict[str, Any]]:
    """The same workload on every server, interleaved round by round; figures by label."""
    logs = {label: await EventLog.connect(c, name="bench") for label, c in configs.items()}
    results: dict[str, list[dict[str, Phase]]] = {label: [] for label in logs}
    try:
        for log in logs.values():
            await log.ensure_stream()
            warm = [requested(new_id()) for _ in range(min(2000, count))]
            await bounded(warm, concurrency, functools.partial(first_append, log))
        for number in range(1, rounds + 1):
            for label, log in logs.items():
                print(f"round {number}/{rounds}, sync {label}", flush=True)
                results[label].append(await one_round(log, count, concurrency))
    finally:
        for log in logs.values():
            await log.close()
    return {label: summary(r) for label, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="events per phase")
    parser.add_argument("--concurrency", type=int, default=512, help="appends in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is reported")
    parser.add_argument(
        "--sync", default="always,default",
        help="one nats-server per JetStream sync_interval, comma-separated; the first is the "
        "one ucloud runs (always), 'default' is nats-server's own (2m); e.g. always,default,10ms",
    )
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the servers' stores go: the disk whose fsyncs are measured")
    args = parser.parse_args()
    labels = [label.strip() for label in args.sync.split(",") if label.strip()]
    if args.count < 2 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--count must be at least 2, --concurrency and --rounds at least 1")
    if len(labels) < 1 or len(set(labels)) != len(labels):
        parser.error("--sync names each sync_interval once")
    with contextlib.ExitStack() as stack:
        servers = {
            label: stack.enter_context(
                embedded_servers(etcd=False, sync=sync_mode(label), parent=args.dir))
            for label in labels
        }
        ran = {label: server_sync(s.nats.monitor_url) for label, s in servers.items()}
        store = filesystem(next(iter(servers.values())).directory)
        print(f"nats-servers with sync_interval {ran}, stores on {store}", flush=True)
        figures = asyncio.run(run({label: s.config().nats for label, s in servers.items()},
                                  args.count, args.concurrency, args.rounds))
    first = labels[0]
    metrics: dict[str, Any] = dict(figures[first])
    metrics.update(sync=first, server_sync=ran, store_filesystem=store, count=args.count,
                   concurrency=args.concurrency, rounds=args.rounds)
    for label in labels[1:]:
        for key, value in figures[label].items():
            metrics[f"sync_{label}_{key}"] = value
        other = figures[label]["append_occ_per_s"]
        metrics[f"sync_{label}_over_{first}_occ"] = (
            round(other / metrics["append_occ_per_s"], 2) if metrics["append_occ_per_s"] else 0.0
        )
    for label in labels:
        f = figures[label]
        print(
            f"sync {label:>8}: OCC appends {f['append_occ_per_s']}/s (slower of first/next, best "
            f"of {args.rounds}), {f['occ_over_raw']:.2f}x raw js.publish "
            f"({f['raw_publish_per_s']}/s); {f['append_occ_cpu_us']} µs CPU per append",
            flush=True,
        )
    for label in labels[1:]:
        print(f"sync {label} appends {metrics[f'sync_{label}_over_{first}_occ']}x as fast as "
              f"sync {first}", flush=True)
    report(metrics)


if __name__ == "__main__":
    main()
