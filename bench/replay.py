"""Replay throughput: audit and billing over a log of a million events.

On an embedded nats-server in a temporary directory (removed at the end) it writes a
month of history: VMs of a few hundred owners, each requested (some through an order),
scheduled and placed, started, and then crashed and restarted, stopped and started
again, migrated or deleted, interleaved by time. The events are published on several
connections at once (each VM's events on one of them, so its order holds), thousands
of acknowledgements outstanding on each; the stream's count is checked before anything
is read.

Then, best of ``--rounds``, read and folded:

- ``billing``: the lifecycle, order and image events (several patterns, matched by the
  reader) into an invoice of the last 30 days; the rate counts the events of the whole
  log it covers;
- ``audit``: every event into an audit line; ``audit_owner``: every event folded, the
  lines of one owner kept;
- ``eventlog_read``: ``EventLog.read`` (the same reader, making record objects) with
  decoding, over the first ``--baseline`` events, for comparison.
- ``read_ours``, ``read_natspy_pull``, ``read_natspy_ordered``: the whole stream read and
  each record decoded (msgspec) with its stream sequence, by our reader (``scan_events``)
  and by plain nats-py: a pull consumer drained with ``fetch(--fetch-batch)``, and an
  ordered push consumer with a callback (a read that stops delivering is reported as
  stalled and counts as incomplete). ``ours_over_natspy_*`` is how many times faster ours
  reads by the wall clock, ``..._cpu`` per CPU second of this process (what a busy
  machine changes least); the three alternate within each round.

Run from the repository root: ``python -m bench.replay [--count N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bench.common import Stopwatch, embedded_servers, rate, report
from ucloud import events as ev
from ucloud.cli.replay_billing import BILLED_SUBJECTS
from ucloud.config import NatsConfig
from ucloud.eventlog import EVERYTHING, TYPE_HEADER, EventLog
from ucloud.events import decode
from ucloud.events.order import OrderPlaced, PriceLine
from ucloud.ids import new_id
from ucloud.replay.audit import AuditFold
from ucloud.replay.billing import UsageFold
from ucloud.replay.prices import PriceTable, parse_prices, quote
from ucloud.replay.reader import scan_events

TARGET_PER_S = 50_000
STALL_S = 15.0  # a nats-py read that delivers nothing for this long has stalled
PUBLISHERS = 4
SPECS = (
    ev.Resources(cpu=1, ram_mib=1024, ssd_mib=10240),
    ev.Resources(cpu=2, ram_mib=4096, ssd_mib=40960),
    ev.Resources(cpu=8, ram_mib=16384, ssd_mib=102400, hdd_mib=1024000),
)
PRICES = parse_prices({
    "currency": "CHF",
    "per_minute": {"cpu": "0.00007", "ram_gib": "0.00009", "ssd_gib": "0.0000008",
                   "hdd_gib": "0.0000002", "nic": "0.00001"},
})


def vm_history(rng: random.Random, n: int, start: datetime, span_s: int) -> list[ev.Event]:
    """One VM's events in order, envelopes chained by cause as the services chain them."""
    vm, owner = new_id(), f"user{n % 300}"
    at = start + timedelta(seconds=rng.randrange(span_s))
    spec = SPECS[n % len(SPECS)]
    out: list[ev.Event] = []
    order = ""
    if n % 10 == 0:
        order = new_id()
        quoted = quote(spec, PRICES, nics=1)
        out.append(OrderPlaced(
            id=new_id(), at=at, actor=owner, order=order, owner=owner, vm=vm, spec=spec,
            nics=1, currency=quoted.currency,
            lines=tuple(PriceLine(item=x.item, quantity=x.quantity, unit_price=x.unit_price)
                        for x in quoted.lines),
        ))
    first = ev.VmRequested(
        id=new_id(), at=at, actor=owner, vm=vm, owner=owner, name=f"vm{n}", spec=spec,
        image="debian-12", nics=(ev.Nic(network="lan", mac="02:00:00:00:00:01"),), order=order,
    )
    host = f"h{n % 40}"

    def step(cause: ev.Event, actor: str, seconds: float) -> ev.Cause:
        nonlocal at
        at += timedelta(seconds=seconds)
        return ev.Cause.of(cause, actor, at)

    scheduled = ev.VmScheduled(**step(first, "system:scheduler", 0.2).envelope("s"), vm=vm,
                               host=host)
    placed = ev.HostVmPlaced(**step(first, "system:scheduler", 0).envelope("p"), host=host,
                             vm=vm, resources=spec)
    started: ev.Event = ev.VmStarted(**step(scheduled, "system:hostd", 3).envelope("a"),
                                     vm=vm, host=host)
    out += [first, scheduled, placed, started]
    for turn in range(rng.randrange(3)):
        gap = rng.randrange(60, 86_400)
        kind = rng.random()
        if kind < 0.4:
            crashed = ev.VmCrashed(**step(started, "system:hostd", gap).envelope(f"c{turn}"),
                                   vm=vm, host=host, reason="exit 137")
            started = ev.VmStarted(**step(crashed, "system:hostd", 2).envelope(f"r{turn}"),
                                   vm=vm, host=host)
            out += [crashed, started]
        elif kind < 0.8:
            stop = ev.VmStopRequested(**step(started, owner, gap).envelope(f"q{turn}"), vm=vm)
            stopped = ev.VmStopped(**step(stop, "system:hostd", 5).envelope(f"x{turn}"), vm=vm,
                                   host=host)
            again = ev.VmStartRequested(**step(stopped, owner, 600).envelope(f"y{turn}"), vm=vm)
            started = ev.VmStarted(**step(again, "system:hostd", 3).envelope(f"z{turn}"), vm=vm,
                                   host=host)
            out += [stop, stopped, again, started]
        else:
            to = f"h{(n + turn + 1) % 40}"
            out.append(ev.VmMigrated(**step(started, "system:hostd", gap).envelope(f"m{turn}"),
                                     vm=vm, from_host=host, to_host=to))
            host = to
    if rng.random() < 0.5:
        delete = ev.VmDeleteRequested(**step(started, owner, rng.randrange(60, 86_400))
                                      .envelope("dq"), vm=vm)
        out += [delete, ev.VmDeleted(**step(delete, "system:hostd", 4).envelope("d"), vm=vm,
                                     host=host)]
    return out


def history(count: int, now: datetime) -> list[list[tuple[str, bytes, dict[str, str]]]]:
    """At least ``count`` events of a month, as wire messages split over the publishers."""
    rng = random.Random(7)
    start = now - timedelta(days=31)
    span = 28 * 86_400
    vms: list[list[ev.Event]] = []
    total = n = 0
    while total < count:
        vms.append(vm_history(rng, n, start, span))
        total += len(vms[-1])
        n += 1
    lanes: list[list[tuple[datetime, int, ev.Event]]] = [[] for _ in range(PUBLISHERS)]
    for i, events in enumerate(vms):
        lanes[i % PUBLISHERS] += [(e.at, i, e) for e in events]
    out = []
    for lane in lanes:
        lane.sort(key=lambda item: (item[0], item[1]))  # by time, each VM's order kept
        out.append([(e.subject, ev.encode(e), {"Nats-Msg-Id": e.id, TYPE_HEADER: e.tag()})
                    for _, _, e in lane])
    return out


async def fill(config: NatsConfig, lanes: list[list[tuple[str, bytes, dict[str, str]]]]) -> int:
    """Publish every lane on its own connection at once; returns what the stream stored."""
    logs = [await EventLog.connect(config, name=f"bench-fill-{i}") for i in range(len(lanes))]
    try:
        await logs[0].ensure_stream()
        await asyncio.gather(*(publish(log, lane) for log, lane in zip(logs, lanes, strict=True)))
        return await logs[0].last_sequence()
    finally:
        for log in logs:
            await log.close()


async def publish(
    log: EventLog, lane: list[tuple[str, bytes, dict[str, str]]], window: int = 4000
) -> None:
    """Publish in order with acknowledgements, at most ``window`` unacknowledged.

    Unacknowledged publishes are dropped by the server once its ingest queue is full.
    """
    inbox = log.nc.new_inbox()
    acked, errors = 0, []
    moved = asyncio.Event()

    async def on_ack(msg: Msg) -> None:
        nonlocal acked
        acked += 1
        if b'"error"' in msg.data or not msg.data:
            errors.append(msg.data or str(msg.headers).encode())
        moved.set()

    sub = await log.nc.subscribe(f"{inbox}.*", cb=on_ack)
    try:
        for i, (subject, data, headers) in enumerate(lane):
            await log.nc.publish(log.physical(subject), data, reply=f"{inbox}.{i}",
                                 headers=headers)
            while i + 1 - acked > window:
                moved.clear()
                await asyncio.wait_for(moved.wait(), 30)
        while acked < len(lane):
            moved.clear()
            await asyncio.wait_for(moved.wait(), 30)
    finally:
        await sub.unsubscribe()
    if errors:
        raise SystemExit(f"{len(errors)} publishes failed, the first: {errors[0]!r}")


async def billing(log: EventLog, prices: PriceTable, end: datetime) -> tuple[int, int]:
    fold = UsageFold(end - timedelta(days=30), end)
    records = 0
    async for batch in scan_events(log, subjects=BILLED_SUBJECTS):
        records += len(batch)
        for _, event in batch:
            fold.apply(event)
    invoice = fold.invoice(prices)
    assert invoice.owners and sum(invoice.totals.values()) > 0
    return records, sum(len(o.vms) for o in invoice.owners)


async def audit(log: EventLog, owner: str | None) -> tuple[int, int]:
    fold = AuditFold(owner=owner)
    records = 0
    async for batch in scan_events(log):
        records += len(batch)
        for seq, event in batch:
            fold.apply(seq, event)
    assert fold.lines and all(line.correlation for line in fold.lines[:1000])
    return records, len(fold.lines)


async def eventlog_read(log: EventLog, stop: int) -> tuple[int, int]:
    records = 0
    async for batch in log.read(1, stop=stop):
        for record in batch:
            record.event()
        records += len(batch)
    return records, records


def consumer_config() -> ConsumerConfig:
    """What our reader's consumer is: from the first event, no acks, in memory, one replica."""
    return ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, mem_storage=True,
        num_replicas=1, inactive_threshold=30.0,
    )


async def read_ours(log: EventLog) -> tuple[int, int]:
    """The whole stream through our reader, each record decoded: what a replay reads."""
    records = last = 0
    async for batch in scan_events(log):
        records += len(batch)
        last = batch[-1][0]
    return records, last


async def read_natspy_pull(log: EventLog, total: int, batch: int) -> tuple[int, int]:
    """The same read through nats-py: a pull consumer, ``fetch(batch)`` until all is in.

    Each message's stream sequence (``msg.metadata``) and event decoded, as ours yields.
    """
    sub = await log.js.pull_subscribe(
        log.physical(EVERYTHING), stream=log.stream, config=consumer_config())
    records = last = 0
    try:
        while records < total:
            for msg in await sub.fetch(batch, timeout=10):
                last = msg.metadata.sequence.stream
                decode(msg.data)
                records += 1
    finally:
        name = (await sub.consumer_info()).name
        await sub.unsubscribe()
        await log.js.delete_consumer(log.stream, name)
    return records, last


async def read_natspy_ordered(log: EventLog, total: int) -> tuple[int, int]:
    """The same read through nats-py's ordered (push) consumer with a callback.

    A read that makes no progress for ``STALL_S`` is reported as stalled (it ends there).
    """
    records = last = 0
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        nonlocal records, last
        last = msg.metadata.sequence.stream
        decode(msg.data)
        records += 1
        if records >= total:
            done.set()

    sub = await log.js.subscribe(
        log.physical(EVERYTHING), stream=log.stream, cb=on_msg, ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL)
    try:
        seen = -1
        while not done.is_set() and records > seen:
            seen = records
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), STALL_S)
    finally:
        await sub.unsubscribe()
    if not done.is_set():
        print(f"nats-py ordered consumer stalled after {records} of {total} records",
              flush=True)
    return records, last


@dataclass
class Timing:
    per_s: float  # events per wall-clock second, best run
    cpu_per_s: float  # events per CPU second of this process, best run
    seconds: float  # wall-clock seconds of the best run
    records: int  # records the best run read
    out: int  # lines or VMs it produced


async def timed(name: str, rounds: int, total: int, work: Callable[[], Any]) -> Timing:
    """The best of ``rounds`` runs, counting ``total`` events (the log the run covers).

    The CPU rate leaves out what nats-server and other processes take from the machine.
    """
    best = Timing(0.0, 0.0, 0.0, 0, 0)
    for _ in range(rounds):
        watch, cpu = Stopwatch(), time.process_time()
        records, out = await work()
        seconds, cpu_seconds = watch.seconds, time.process_time() - cpu
        per_s = rate(total or records, seconds)
        print(f"{name:>14}: {records:>8} records read, {out:>8} out, {seconds:6.2f}s, "
              f"{per_s:>10.1f} events/s ({rate(total or records, cpu_seconds)}/s of CPU)",
              flush=True)
        if per_s > best.per_s:
            best = Timing(per_s, rate(total or records, cpu_seconds), seconds, records, out)
    return best


async def compare_reads(
    log: EventLog, total: int, rounds: int, fetch_batch: int
) -> dict[str, Any]:
    """The whole stream read by ours and by nats-py (pull, ordered), interleaved by round."""
    best: dict[str, Timing] = {}
    works: dict[str, Callable[[], Any]] = {
        "read_ours": lambda: read_ours(log),
        "read_natspy_pull": lambda: read_natspy_pull(log, total, fetch_batch),
        "read_natspy_ordered": lambda: read_natspy_ordered(log, total),
    }
    for _ in range(rounds):
        for name, work in works.items():
            timing = await timed(name, 1, 0, work)
            if timing.records != total or timing.out != total:
                print(f"{name} read {timing.records} records, the last {timing.out}, of "
                      f"{total}", flush=True)
            if name not in best or timing.per_s > best[name].per_s:
                best[name] = timing
    ours, ours_cpu = best["read_ours"].per_s, best["read_ours"].cpu_per_s
    out: dict[str, Any] = {"read_events": total, "read_fetch_batch": fetch_batch}
    for name, timing in best.items():
        out[f"{name}_per_s"] = timing.per_s
        out[f"{name}_cpu_per_s"] = timing.cpu_per_s
        out[f"{name}_records"] = timing.records
        if name != "read_ours":
            whole = timing.records == total
            out[f"{name}_complete"] = whole
            out[f"ours_over_{name.removeprefix('read_')}"] = (
                round(ours / timing.per_s, 2) if timing.per_s and whole else None)
            out[f"ours_over_{name.removeprefix('read_')}_cpu"] = (
                round(ours_cpu / timing.cpu_per_s, 2) if timing.cpu_per_s and whole else None)
    return out


async def run(
    config: NatsConfig, count: int, rounds: int, baseline: int, fetch_batch: int
) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    watch = Stopwatch()
    lanes = history(count, now)
    print(f"generated {sum(map(len, lanes))} events in {watch.seconds:.1f}s", flush=True)
    watch.restart()
    total = await fill(config, lanes)
    publish_per_s = rate(total, watch.seconds)
    if total != sum(map(len, lanes)):
        raise SystemExit(f"the stream stored {total} of {sum(map(len, lanes))} events")
    print(f"stored {total} events at {publish_per_s}/s", flush=True)
    del lanes
    log = await EventLog.connect(config, name="bench")
    try:
        bills = await timed("billing", rounds, total, lambda: billing(log, PRICES, now))
        lines = await timed("audit", rounds, total, lambda: audit(log, None))
        owner = await timed("audit_owner", rounds, total, lambda: audit(log, "user7"))
        baseline_read = await timed("eventlog_read", 1, 0, lambda: eventlog_read(log, baseline))
        reads = await compare_reads(log, total, rounds, fetch_batch)
    finally:
        await log.close()
    return {
        "events": total,
        "publish_per_s": publish_per_s,
        "billing_events_per_s": bills.per_s,
        "billing_cpu_events_per_s": bills.cpu_per_s,
        "billing_records": bills.records,
        "billing_records_per_s": rate(bills.records, bills.seconds),
        "billed_vms": bills.out,
        "audit_events_per_s": lines.per_s,
        "audit_cpu_events_per_s": lines.cpu_per_s,
        "audit_lines": lines.out,
        "audit_owner_events_per_s": owner.per_s,
        "audit_owner_cpu_events_per_s": owner.cpu_per_s,
        "audit_owner_lines": owner.out,
        "eventlog_read_per_s": baseline_read.per_s,
        "eventlog_read_cpu_per_s": baseline_read.cpu_per_s,
        "eventlog_read_events": baseline_read.records,
        **reads,
        "target_per_s": TARGET_PER_S,
        "meets_target": min(bills.per_s, lines.per_s, owner.per_s) >= TARGET_PER_S,
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the best is reported")
    parser.add_argument("--baseline", type=int, default=200_000,
                        help="events EventLog.read reads for comparison")
    parser.add_argument("--fetch-batch", type=int, default=5000,
                        help="messages per nats-py fetch in the read comparison")
    args = parser.parse_args()
    if args.count < 1000 or args.rounds < 1 or args.baseline < 1:
        parser.error("--count must be at least 1000, --rounds and --baseline at least 1")
    # Reads do not depend on the server's sync_interval; a million publishes each waiting
    # for an fsync would make the fill take many minutes, so nats-server's default here.
    with embedded_servers(etcd=False, sync=None) as servers:
        metrics = asyncio.run(
            run(servers.config().nats, args.count, args.rounds, min(args.baseline, args.count),
                args.fetch_batch))
    print(f"replay of {metrics['events']} events: billing {metrics['billing_events_per_s']}/s, "
          f"audit {metrics['audit_events_per_s']}/s (target {TARGET_PER_S}/s)", flush=True)
    print(f"whole-stream read of {metrics['read_events']} records, decoded: ours "
          f"{metrics['read_ours_per_s']}/s, nats-py pull (fetch {args.fetch_batch}) "
          f"{metrics['read_natspy_pull_per_s']}/s ({metrics['ours_over_natspy_pull']}x), "
          f"nats-py ordered {metrics['read_natspy_ordered_per_s']}/s "
          f"({metrics['ours_over_natspy_ordered']}x); per CPU second ours is "
          f"{metrics['ours_over_natspy_pull_cpu']}x pull, "
          f"{metrics['ours_over_natspy_ordered_cpu']}x ordered", flush=True)
    report(metrics)


if __name__ == "__main__":
    main()
