"""The dispatcher: its decisions as a table, and its commands on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from ucloud import events as ev
from ucloud import lifecycle
from ucloud.config import Config
from ucloud.consumer import run_consumer
from ucloud.eventlog import EventLog
from ucloud.events import Cause, Nic, Resources, Stored
from ucloud.handlers import dispatcher
from ucloud.handlers.dispatcher import Dispatcher, dispatch
from ucloud.ids import new_id
from ucloud.services import ServiceContext
from ucloud.store import Store

AT = datetime(2026, 1, 1, tzinfo=UTC)
VM = "01a1fcc3-df5b-78ac-9eef-cf1afcf47f42"
SPEC = Resources(cpu=2, ram_mib=2048, ssd_mib=10_240)


def fold(events: Iterable[ev.Event]) -> lifecycle.VmLife:
    return lifecycle.fold(Stored(seq, event) for seq, event in enumerate(events, start=1))


def e(cls: type[ev.VmEvent], **fields: object) -> ev.VmEvent:
    return cls(id=new_id(), at=AT, actor="alice", vm=VM, **fields)


REQUESTED = e(
    ev.VmRequested, owner="alice", name="web", spec=SPEC, image="tiny",
    nics=(Nic(network="n1", mac="02:00:00:00:00:01"),), restart="never",
)
SCHEDULED = e(ev.VmScheduled, host="h1")


def states(*events: ev.Event) -> list[ev.Event]:
    return [REQUESTED, *events]


@pytest.mark.parametrize(
    ("history", "intent", "expected"),
    [
        (states(SCHEDULED), SCHEDULED, ev.HostVmStart),
        (states(SCHEDULED, e(ev.VmStarted, host="h1")), SCHEDULED, "the VM is running on h1"),
        (states(SCHEDULED), e(ev.VmScheduled, host="h9"), "the VM is scheduled on h1"),
        (states(SCHEDULED, e(ev.VmStarted, host="h1")), e(ev.VmStopRequested), ev.HostVmStop),
        (states(SCHEDULED), e(ev.VmStopRequested), ev.HostVmStop),
        (states(), e(ev.VmStopRequested), "a stop needs a VM on a host; it is requested"),
        (states(SCHEDULED, e(ev.VmStopped, host="h1")), e(ev.VmStartRequested), ev.HostVmStart),
        (states(SCHEDULED, e(ev.VmCrashed, host="h1", reason="x")), e(ev.VmStartRequested),
         ev.HostVmStart),
        (states(SCHEDULED, e(ev.VmStarted, host="h1")), e(ev.VmStartRequested),
         "a start needs a stopped VM; it is running"),
        (states(SCHEDULED, e(ev.VmStopped, host="h1")), e(ev.VmDeleteRequested), ev.HostVmDelete),
        (states(), e(ev.VmDeleteRequested), ev.VmDeleted),
        (states(e(ev.VmSchedulingFailed, reason="r")), e(ev.VmDeleteRequested), ev.VmDeleted),
        (states(SCHEDULED, e(ev.VmLost, host="h1", reason="r")), e(ev.VmDeleteRequested),
         ev.VmDeleted),
        (states(e(ev.VmDeleted)), e(ev.VmDeleteRequested), "the VM is deleted"),
        (states(SCHEDULED, e(ev.VmDeleteRequested)), SCHEDULED, "the VM is being deleted"),
        ([], e(ev.VmStartRequested), "no such VM"),
        (states(SCHEDULED, e(ev.VmMigrated, from_host="h1", to_host="h2"),
                e(ev.VmStopped, host="h2")), e(ev.VmDeleteRequested), ev.HostVmDelete),
    ],
)
def test_dispatch_table(
    history: list[ev.Event], intent: ev.VmEvent, expected: type[ev.Event] | str
) -> None:
    cause = Cause.of(intent, "system:dispatcher", AT)
    outcome = dispatch(fold(history), intent, cause)
    if isinstance(expected, str):
        assert outcome == expected
        return
    assert type(outcome) is expected
    assert isinstance(outcome, ev.Event) and outcome.causation == intent.id
    assert outcome == dispatch(fold(history), intent, cause)  # same intent, same id


def test_a_start_command_carries_everything_hostd_needs() -> None:
    outcome = dispatch(fold(states(SCHEDULED)), SCHEDULED, Cause.of(SCHEDULED, "d", AT))
    assert outcome == ev.HostVmStart(
        **Cause.of(SCHEDULED, "d", AT).envelope("vm_start"), host="h1", vm=VM, owner="alice",
        name="web", spec=SPEC, image="tiny", nics=REQUESTED.nics, restart="never",  # type: ignore[attr-defined]
    )


# -- on a real nats-server ---------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def requested(vm: str) -> ev.VmRequested:
    return ev.VmRequested(
        id=new_id(), at=now(), actor="alice", vm=vm, owner="alice", name="db", spec=SPEC,
        image="tiny",
    )


def fact(cls: type[ev.VmEvent], vm: str, **fields: object) -> ev.VmEvent:
    return cls(id=new_id(), at=now(), actor="system:test", vm=vm, **fields)


async def cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it ends: Python 3.11's asyncio.wait_for, which the event log's
    reads use, can swallow a cancel that arrives as its inner future completes."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)


async def running(config: Config, log: EventLog, store: Store) -> asyncio.Task[None]:
    ctx = ServiceContext(config=config, log=log, store=store, name="dispatcher")
    return asyncio.create_task(dispatcher.run(ctx))


@pytest.fixture
async def service(config: Config, event_log: EventLog, store: Store) -> AsyncIterator[None]:
    task = await running(config, event_log, store)
    yield
    await cancelled(task)


async def until(
    log: EventLog, aggregate: str, ident: str, done: Callable[[list[ev.Event]], bool]
) -> list[ev.Event]:
    async with asyncio.timeout(15):
        while True:
            events = [s.event for s in (await log.load(aggregate, ident))[0]]
            if done(events):
                return events
            await asyncio.sleep(0.02)


def commands(events: list[ev.Event], vm: str) -> list[str]:
    return [x.event_name for x in events if getattr(x, "vm", None) == vm]


@pytest.mark.servers
@pytest.mark.timeout(60)
async def test_each_intent_becomes_one_command_to_the_vm_host(
    event_log: EventLog, service: None
) -> None:
    vm, host = new_id(), f"h{new_id()[-8:]}"
    scheduled = fact(ev.VmScheduled, vm, host=host)
    await event_log.append(requested(vm))
    await event_log.append(scheduled)
    events = await until(event_log, "host", host, lambda x: commands(x, vm) == ["vm_start"])
    start = events[0]
    assert isinstance(start, ev.HostVmStart)
    assert (start.owner, start.name, start.spec, start.image) == ("alice", "db", SPEC, "tiny")
    assert start.id == Cause.of(scheduled, "x", now()).envelope("vm_start")["id"]
    await event_log.append(fact(ev.VmStarted, vm, host=host))
    await event_log.append(fact(ev.VmStopRequested, vm))
    await until(event_log, "host", host, lambda x: commands(x, vm) == ["vm_start", "vm_stop"])
    await event_log.append(fact(ev.VmStopped, vm, host=host))
    await event_log.append(fact(ev.VmStartRequested, vm))
    again = ["vm_start", "vm_stop", "vm_start"]
    await until(event_log, "host", host, lambda x: commands(x, vm) == again)
    await event_log.append(fact(ev.VmStarted, vm, host=host))
    await event_log.append(fact(ev.VmStartRequested, vm))  # makes no sense: it runs
    await event_log.append(fact(ev.VmDeleteRequested, vm))
    await event_log.append(fact(ev.VmStopRequested, vm))  # too late: it is being deleted
    done = [*again, "vm_delete"]
    await until(event_log, "host", host, lambda x: commands(x, vm) == done)
    # a VM that never got a host is deleted at once
    other = new_id()
    await event_log.append(requested(other))
    await event_log.append(fact(ev.VmDeleteRequested, other))
    history = await until(event_log, "vm", other, lambda x: isinstance(x[-1], ev.VmDeleted))
    assert [x.event_name for x in history] == ["requested", "delete_requested", "deleted"]
    await asyncio.sleep(0.3)  # nothing more comes
    final = [s.event for s in (await event_log.load("host", host))[0]]
    assert commands(final, vm) == done


@pytest.mark.servers
@pytest.mark.timeout(60)
async def test_a_redelivered_intent_appends_its_command_once(
    config: Config, event_log: EventLog, store: Store
) -> None:
    # A duplicate window shorter than the redelivery delay: the log's de-duplication no
    # longer helps, the dispatcher must find its earlier command itself.
    quick = msgspec.structs.replace(
        config,
        nats=msgspec.structs.replace(config.nats, duplicate_window_s=0.2),
        consumer=msgspec.structs.replace(config.consumer, backoff_s=[0.5]),
    )
    await EventLog(event_log.nc, quick.nats).ensure_stream()
    failures: dict[str, int] = {}
    real = Dispatcher(event_log)

    async def flaky(intent: ev.Event, seq: int, delivered: int) -> None:
        await real.handle(intent, seq, delivered)
        if failures.setdefault(intent.id, 0) < 2:  # fails after appending, twice
            failures[intent.id] += 1
            raise RuntimeError("lost the ack")

    consumer = asyncio.create_task(
        run_consumer(
            event_log, store, durable="dispatcher", subjects=dispatcher.SUBJECTS, handle=flaky,
            settings=quick.consumer, poison_prefix=f"{quick.etcd.prefix}_poison/",
            name="dispatcher",
        )
    )
    try:
        vm, host = new_id(), f"h{new_id()[-8:]}"
        await event_log.append(requested(vm))
        scheduled = fact(ev.VmScheduled, vm, host=host)
        await event_log.append(scheduled)
        await until(event_log, "host", host, lambda x: bool(x))
        async with asyncio.timeout(20):
            while failures.get(scheduled.id, 0) < 2:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # the third delivery, which succeeds, has come and gone
    finally:
        await cancelled(consumer)
    events = [s.event for s in (await event_log.load("host", host))[0]]
    assert commands(events, vm) == ["vm_start"]


@pytest.mark.servers
@pytest.mark.timeout(60)
async def test_a_start_carries_what_the_spec_names_as_the_log_has_it(
    event_log: EventLog, service: None
) -> None:
    image, net, vm, host = new_id(), new_id(), new_id(), f"h{new_id()[-8:]}"
    system: dict[str, Any] = {"at": now(), "actor": "system:test"}
    await event_log.append(ev.ImageRequested(id=new_id(), **system, image=image, owner="alice",
                                             name="i", file=new_id(), store="rbd"))  # fmt: skip
    await event_log.append(ev.ImageCreated(id=new_id(), **system, image=image, size=1,
                                           checksum="0"))  # fmt: skip
    await event_log.append(ev.NetCreated(id=new_id(), **system, net=net, vni=4242,
                                         prefix="2001:db8:1::/64", ipam="auto"))  # fmt: skip
    nic = Nic(network=net, mac="02:00:00:00:42:42")
    request = msgspec.structs.replace(requested(vm), image=image, nics=(nic,))
    await event_log.append(request)
    await event_log.append(fact(ev.VmScheduled, vm, host=host))
    events = await until(event_log, "host", host, lambda x: commands(x, vm) == ["vm_start"])
    start = events[0]
    assert isinstance(start, ev.HostVmStart) and start.vm_spec() == request.vm_spec()
    assert start.resolved == ev.Resolved(store="rbd", networks=(
        ev.NicNetwork(network=net, vni=4242, prefix="2001:db8:1::/64", ipam="auto"),
    ))  # fmt: skip
    # a spec naming what is not there yet goes as it is: hostd reads the log and says why
    other = new_id()
    await event_log.append(requested(other))
    await event_log.append(fact(ev.VmScheduled, other, host=host))
    events = await until(event_log, "host", host, lambda x: len(commands(x, other)) == 1)
    late = next(x for x in events if isinstance(x, ev.HostVmStart) and x.vm == other)
    assert late.resolved is None
