"""The durable consumer runner against the real nats-server and etcd.

Each test has its own stream, subject root and etcd prefix (the ``config`` fixture) and its
own durable name. Timings stay short through small ack waits and backoffs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec
import pytest

from ucloud import events as ev
from ucloud.config import Config, ConsumerConfig, NatsConfig
from ucloud.consumer import (
    Handler,
    counters,
    reacting,
    run_consumer,
)
from ucloud.errors import LogError
from ucloud.eventlog import EventLog
from ucloud.ids import new_id
from ucloud.projections.views import PoisonView
from ucloud.servers import EmbeddedNats
from ucloud.store import Store, wait_for

pytestmark = pytest.mark.servers

REQUESTED = "ucloud.evt.vm.*.requested"
QUICK = ConsumerConfig(batch=64, ack_wait_s=5.0, max_deliver=5, backoff_s=[0.1, 0.2])


def requested(vm: str) -> ev.VmRequested:
    return ev.VmRequested(
        id=new_id(), at=datetime.now(UTC), actor="alice", vm=vm, owner="alice", name="web",
        spec=ev.Resources(cpu=1, ram_mib=512, ssd_mib=1024), image="tiny",
    )


def schedule(event: ev.Event) -> list[ev.Event]:
    """A pure reaction: every request is scheduled on h1, with an id derived from it."""
    assert isinstance(event, ev.VmRequested)
    cause = ev.Cause.of(event, "system:test", event.at)
    return [ev.VmScheduled(**cause.envelope("scheduled"), vm=event.vm, host="h1")]


class Seen:
    """What a handler saw; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    async def until(self, predicate: Callable[[list[Any]], bool], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()


class Start(Protocol):
    def __call__(
        self, handle: Handler, *, durable: str, subjects: Sequence[str] = ...,
        log: EventLog | None = ..., settings: ConsumerConfig = ...,
    ) -> asyncio.Task[None]: ...


@pytest.fixture
async def start(
    config: Config, event_log: EventLog, store: Store
) -> AsyncIterator[Start]:
    """Start runners on the test's stream; they are cancelled at the end of the test."""
    tasks: list[asyncio.Task[None]] = []

    def starter(
        handle: Handler, *, durable: str, subjects: Sequence[str] = (REQUESTED,),
        log: EventLog | None = None, settings: ConsumerConfig = QUICK,
    ) -> asyncio.Task[None]:
        task = asyncio.create_task(
            run_consumer(
                log or event_log, store, durable=durable, subjects=subjects, handle=handle,
                settings=settings, poison_prefix=poison_prefix(config), name=f"test-{durable}",
            )
        )
        tasks.append(task)
        return task

    yield starter
    for task in tasks:
        await stop(task)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, LogError):
        await task


def poison_prefix(config: Config) -> str:
    return f"{config.etcd.prefix}_poison/"


def durable_name() -> str:
    return "d" + new_id().replace("-", "")[-12:]


async def test_a_handler_sees_each_event_once_in_order(
    event_log: EventLog, start: Start
) -> None:
    seen = Seen()

    async def handle(event: ev.Event, seq: int, delivered: int) -> None:
        seen.add((seq, event.id))

    durable = durable_name()
    start(handle, durable=durable, subjects=[REQUESTED, "ucloud.evt.vm.*.scheduled"])
    wanted = []
    for _ in range(6):
        vm = new_id()
        first = requested(vm)
        wanted.append((await event_log.append(first, expected=0), first.id))
        await event_log.append(  # not among the subjects: never handled
            ev.VmStartRequested(id=new_id(), at=first.at, actor="alice", vm=vm)
        )
        then = ev.VmScheduled(id=new_id(), at=first.at, actor="system:test", vm=vm, host="h1")
        wanted.append((await event_log.append(then), then.id))
    await seen.until(lambda items: len(items) >= len(wanted))
    sentinel = requested(new_id())
    wanted.append((await event_log.append(sentinel), sentinel.id))
    await seen.until(lambda items: len(items) >= len(wanted))

    assert seen.items == wanted
    assert (counters(durable).processed, counters(durable).failed) == (len(wanted), 0)


@pytest.mark.parametrize("how", ["connection_lost", "cancelled"])
async def test_a_runner_stopped_mid_batch_leaves_the_rest_to_the_next(
    how: str, config: Config, event_log: EventLog, start: Start
) -> None:
    n, k = 12, 5
    vms = [new_id() for _ in range(n)]
    seqs = [await event_log.append(requested(vm), expected=0) for vm in vms]
    # Lost connection: only ack_wait brings the rest back. Cancelled: the runner naks them.
    settings = ConsumerConfig(
        batch=64, ack_wait_s=1.0 if how == "connection_lost" else 60.0, backoff_s=[0.1]
    )
    durable = durable_name()

    first_log = await EventLog.connect(config.nats)
    first_seen = Seen()
    first_react = reacting(first_log, schedule)

    async def hangs_at_k(event: ev.Event, seq: int, delivered: int) -> None:
        # the k-th reaction is appended, its cause not acked
        await first_react(event, seq, delivered)
        first_seen.add(seq)
        if len(first_seen.items) == k:
            await asyncio.Event().wait()

    first = start(hangs_at_k, durable=durable, log=first_log, settings=settings)
    await first_seen.until(lambda items: len(items) == k)
    if how == "connection_lost":
        await first_log.nc.close()
    await stop(first)
    await first_log.close()

    second_seen = Seen()
    second_react = reacting(event_log, schedule)

    async def records(event: ev.Event, seq: int, delivered: int) -> None:
        await second_react(event, seq, delivered)
        second_seen.add((seq, delivered))

    start(records, durable=durable, settings=settings)
    await second_seen.until(lambda items: {s for s, _ in items} >= set(seqs[k - 1 :]), 15)

    deliveries = dict(second_seen.items)
    assert sorted(deliveries) == seqs[k - 1 :]  # the first k-1 were acked
    assert deliveries[seqs[k - 1]] >= 2  # the one in progress came again
    stored = await event_log.records(ev.subject("vm", "*", "scheduled"))
    assert sorted(r.event().aggregate_id for r in stored) == sorted(vms)  # each stored once


async def test_a_failing_handler_is_retried_with_backoff(
    event_log: EventLog, start: Start
) -> None:
    attempts: list[tuple[float, int]] = []
    done = Seen()
    loop = asyncio.get_running_loop()

    async def flaky(event: ev.Event, seq: int, delivered: int) -> None:
        attempts.append((loop.time(), delivered))
        if delivered < 3:
            raise RuntimeError("the host is busy")
        done.add(seq)

    durable = durable_name()
    settings = ConsumerConfig(batch=8, ack_wait_s=5.0, max_deliver=5, backoff_s=[0.3, 0.6])
    start(flaky, durable=durable, settings=settings)
    seq = await event_log.append(requested(new_id()))
    await done.until(lambda items: items == [seq])

    assert [d for _, d in attempts] == [1, 2, 3]
    gaps = [b[0] - a[0] for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.55, gaps
    c = counters(durable)
    assert (c.processed, c.failed, c.poison) == (1, 2, 0)


async def test_undecodable_messages_are_poison_and_later_events_still_handled(
    config: Config, event_log: EventLog, store: Store, start: Start
) -> None:
    vm = new_id()
    good_fields = msgspec.to_builtins(requested(vm))
    bad = [
        b"{not json",
        msgspec.json.encode({**good_fields, "type": "vm.exploded"}),
        msgspec.json.encode({**good_fields, "spec": "large"}),
    ]
    wire_subject = ev.subject("vm", vm, "requested")
    bad_seqs = [
        await event_log.append_raw(wire_subject, data, {"Nats-Msg-Id": new_id()}) for data in bad
    ]
    good = await event_log.append(requested(new_id()))
    handled = Seen()

    async def handle(event: ev.Event, seq: int, delivered: int) -> None:
        handled.add(seq)

    durable = durable_name()
    start(handle, durable=durable)
    await handled.until(lambda items: good in items)

    stored = await store.get_prefix(poison_prefix(config))
    views = [msgspec.json.decode(value, type=PoisonView) for _, value in stored]
    assert [key for key, _ in stored] == [f"{poison_prefix(config)}{s}" for s in bad_seqs]
    assert [v.seq for v in views] == bad_seqs
    assert {v.subject for v in views} == {wire_subject}
    assert {v.seen_by for v in views} == {f"test-{durable}"}
    assert all(v.error.startswith("does not decode") for v in views)
    assert handled.items == [good]
    c = counters(durable)
    assert (c.processed, c.poison) == (1, 3)
    info = await event_log.js.consumer_info(config.nats.stream, durable)
    assert info.num_redelivered == 0  # acked, not held for another try


async def test_a_handler_that_always_fails_ends_as_poison_without_blocking(
    config: Config, event_log: EventLog, store: Store, start: Start
) -> None:
    doomed_vm = new_id()
    attempts: list[int] = []
    handled = Seen()

    async def picky(event: ev.Event, seq: int, delivered: int) -> None:
        if isinstance(event, ev.VmRequested) and event.vm == doomed_vm:
            attempts.append(delivered)
            raise RuntimeError("no host can take this vm")
        handled.add(seq)

    durable = durable_name()
    settings = ConsumerConfig(batch=16, ack_wait_s=5.0, max_deliver=3, backoff_s=[0.5])
    start(picky, durable=durable, settings=settings)
    doomed = await event_log.append(requested(doomed_vm))
    before = await event_log.append(requested(new_id()))
    await handled.until(lambda items: before in items)
    assert attempts and len(attempts) < 3  # handled while the doomed one waits for its retry

    key = f"{poison_prefix(config)}{doomed}"
    value = await wait_for(store, key, lambda v: v is not None, timeout=10)
    assert value is not None
    view = msgspec.json.decode(value, type=PoisonView)
    assert (view.seq, view.seen_by) == (doomed, f"test-{durable}")
    assert view.subject == ev.subject("vm", doomed_vm, "requested")
    assert "no host can take this vm" in view.error
    after = await event_log.append(requested(new_id()))
    await handled.until(lambda items: after in items)

    assert attempts == [1, 2, 3]
    assert handled.items == [before, after]
    c = counters(durable)
    assert (c.processed, c.failed, c.poison) == (2, 3, 1)


@pytest.mark.slow
async def test_a_runner_carries_on_after_nats_restarts(tmp_path: Path, store: Store) -> None:
    server = EmbeddedNats(tmp_path / "nats").start()
    settings = NatsConfig(url=server.url, stream="RESTART", subject_root="restart.evt")
    log = await EventLog.connect(settings)
    task: asyncio.Task[None] | None = None
    try:
        await log.ensure_stream()
        handled = Seen()

        async def handle(event: ev.Event, seq: int, delivered: int) -> None:
            handled.add(seq)

        durable = durable_name()
        task = asyncio.create_task(
            run_consumer(
                log, store, durable=durable, subjects=[REQUESTED], handle=handle,
                settings=QUICK, poison_prefix=f"/t/{durable}/_poison/", name="restart",
            )
        )
        first = await log.append(requested(new_id()))
        await handled.until(lambda items: items == [first])
        server.stop()
        server.start()
        # A publish racing the runner's reconnect may be lost; appending is the caller's
        # concern, here through a connection made after the restart.
        writer = await EventLog.connect(settings)
        try:
            second = await writer.append(requested(new_id()))
        finally:
            await writer.close()
        await handled.until(lambda items: second in items, timeout=20)
        # An ack in flight when the server went down is lost: ``first`` may come again.
        assert set(handled.items) == {first, second}
        assert handled.items[-1] == second
    finally:
        if task is not None:
            await stop(task)
        await log.close()
        server.stop()
