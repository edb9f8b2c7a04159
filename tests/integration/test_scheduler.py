"""The scheduler on a real nats-server and etcd: fits, failures, drained hosts, concurrency."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.events import Cause, Resources
from ucloud.handlers import scheduler
from ucloud.handlers.ledger import LedgerFollower
from ucloud.handlers.scheduler import Scheduler
from ucloud.ids import new_id
from ucloud.services import ServiceContext
from ucloud.store import Store

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]


def now() -> datetime:
    return datetime.now(UTC)


def size(cpu: int, ram: int, ssd: int = 1000) -> Resources:
    return Resources(cpu=cpu, ram_mib=ram, ssd_mib=ssd)


def registered(host: str, capacity: Resources) -> ev.HostRegistered:
    return ev.HostRegistered(id=new_id(), at=now(), actor="admin", host=host, capacity=capacity)


def requested(spec: Resources, vm: str | None = None) -> ev.VmRequested:
    return ev.VmRequested(
        id=new_id(), at=now(), actor="alice", vm=vm or new_id(), owner="alice", name="web",
        spec=spec, image="tiny",
    )


async def wait_events(
    log: EventLog, filter_subject: str, done: Callable[[list[ev.Event]], bool], timeout: float = 20
) -> list[ev.Event]:
    """Follow the log until the events matching ``filter_subject`` satisfy ``done``."""
    seen: list[ev.Event] = []

    async def follow() -> list[ev.Event]:
        async for batch in log.read(1, filter_subject=filter_subject, follow=True):
            seen.extend(r.event() for r in batch)
            if done(seen):
                return seen
        return seen

    async with asyncio.timeout(timeout):
        return await follow()


def context(config: Config, log: EventLog, store: Store, name: str = "scheduler") -> ServiceContext:
    return ServiceContext(config=config, log=log, store=store, name=name)


async def running(config: Config, log: EventLog, store: Store) -> asyncio.Task[None]:
    return asyncio.create_task(scheduler.run(context(config, log, store)))


async def stop(*tasks: asyncio.Task[None]) -> None:
    """Cancel until they end: Python 3.11's asyncio.wait_for, which the event log's reads
    use, can swallow a cancel that arrives as its inner future completes."""
    for task in tasks:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)


@pytest.fixture
async def service(config: Config, event_log: EventLog, store: Store) -> AsyncIterator[None]:
    task = await running(config, event_log, store)
    yield
    await stop(task)


async def outcome_of(log: EventLog, vm: str) -> list[ev.Event]:
    def decided(events: list[ev.Event]) -> bool:
        return any(isinstance(e, ev.VmScheduled | ev.VmSchedulingFailed) for e in events)

    return await wait_events(log, ev.subject("vm", vm), decided)


async def test_a_request_is_scheduled_on_a_host_that_fits(
    event_log: EventLog, service: None
) -> None:
    await event_log.append(registered("small", size(1, 2048)))
    await event_log.append(registered("big", size(8, 16384)))
    request = requested(size(4, 4096))
    await event_log.append(request)
    events = await outcome_of(event_log, request.vm)
    assert isinstance(events[-1], ev.VmScheduled) and events[-1].host == "big"
    cause = Cause.of(request, "system:scheduler", now())
    assert events[-1].id == cause.envelope("scheduled/big")["id"]
    host_events, _ = await event_log.load("host", "big")
    placed = [s.event for s in host_events if isinstance(s.event, ev.HostVmPlaced)]
    assert [(p.vm, p.resources, p.causation) for p in placed] == [
        (request.vm, size(4, 4096), request.id)
    ]


async def test_no_fit_fails_naming_the_resource(event_log: EventLog, service: None) -> None:
    await event_log.append(registered("h1", size(8, 2048)))
    request = requested(size(2, 4096))
    await event_log.append(request)
    events = await outcome_of(event_log, request.vm)
    failed = events[-1]
    assert isinstance(failed, ev.VmSchedulingFailed)
    assert failed.resource == "ram"
    assert failed.reason == "ram: needs 4096 MiB, most free on an eligible host is 2048 MiB"
    host_events, _ = await event_log.load("host", "h1")
    assert not any(isinstance(s.event, ev.HostVmPlaced) for s in host_events)


async def test_a_drained_host_gets_nothing(event_log: EventLog, service: None) -> None:
    await event_log.append(registered("roomy", size(32, 65536)))
    await event_log.append(registered("tight", size(2, 4096)))
    await event_log.append(ev.HostDrained(id=new_id(), at=now(), actor="admin", host="roomy"))
    first, second = requested(size(1, 1024)), requested(size(4, 1024))
    await event_log.append(first)
    await event_log.append(second)
    events = await outcome_of(event_log, first.vm)
    assert isinstance(events[-1], ev.VmScheduled) and events[-1].host == "tight"
    events = await outcome_of(event_log, second.vm)
    assert isinstance(events[-1], ev.VmSchedulingFailed) and events[-1].resource == "cpu"


async def test_a_redelivered_request_schedules_nothing_twice(
    config: Config, event_log: EventLog
) -> None:
    await event_log.append(registered("h1", size(8, 8192)))
    await event_log.append(registered("h2", size(8, 8192)))
    follower = LedgerFollower(event_log)
    following = asyncio.create_task(follower.run())
    try:
        handler = Scheduler(event_log, follower, config.scheduler)
        request = requested(size(1, 1024))
        seq = await event_log.append(request)
        await asyncio.gather(*(handler.handle(request, seq, 1) for _ in range(3)))
        await handler.handle(request, seq, 1)
        # a delivery that died between the reservation and the scheduling: the VM then
        # got deleted; the next delivery gives the reservation back
        lost = requested(size(2, 1024))
        await event_log.append(lost)
        await event_log.append(
            ev.HostVmPlaced(id=new_id(), at=now(), actor="x", host="h2", vm=lost.vm,
                            resources=lost.spec)
        )
        await event_log.append(ev.VmDeleted(id=new_id(), at=now(), actor="x", vm=lost.vm))
        assert await follower.until(lambda ledger: ledger.hosts_of(lost.vm) == ("h2",), 10)
        await handler.handle(lost, seq, 1)
        assert await follower.until(lambda ledger: ledger.hosts_of(lost.vm) == (), 10)
    finally:
        await stop(following)
    vm_events, _ = await event_log.load("vm", request.vm)
    assert [type(s.event) for s in vm_events] == [ev.VmRequested, ev.VmScheduled]
    scheduled = vm_events[1].event
    assert isinstance(scheduled, ev.VmScheduled)
    # concurrent deliveries may each reserve; every reservation but the used one is freed
    held: dict[str, int] = {"h1": 0, "h2": 0}
    for h in held:
        for s in (await event_log.load("host", h))[0]:
            if isinstance(s.event, ev.HostVmPlaced) and s.event.vm == request.vm:
                held[h] += 1
            elif isinstance(s.event, ev.HostVmReleased) and s.event.vm == request.vm:
                held[h] -= 1
    assert held == {h: int(h == scheduled.host) for h in held}


async def test_three_schedulers_never_overbook_a_host(
    config: Config, event_log: EventLog, store: Store
) -> None:
    rng = random.Random(5)
    capacities = {f"h{n:02d}": size(8, 16384, 100_000) for n in range(20)}
    for host, capacity in capacities.items():
        await event_log.append(registered(host, capacity))
    logs = [await EventLog.connect(config.nats, name=f"scheduler{n}") for n in range(3)]
    tasks = [await running(config, log, store) for log in logs]
    try:
        requests = [
            requested(size(rng.choice([1, 1, 2]), rng.choice([512, 1024, 2048]), 2000))
            for _ in range(500)
        ]
        for chunk in range(0, len(requests), 50):
            await asyncio.gather(*(event_log.append(r) for r in requests[chunk : chunk + 50]))
        wanted = {r.vm for r in requests}
        outcomes = await _decisions(event_log, wanted)
    finally:
        await stop(*tasks)
        for log in logs:
            await log.close()
    per_vm: dict[str, list[ev.Event]] = defaultdict(list)
    for event in outcomes:
        per_vm[event.vm].append(event)  # type: ignore[attr-defined]
    assert set(per_vm) == wanted
    for vm, decided in per_vm.items():
        assert len(decided) == 1, (vm, decided)  # scheduled exactly once, or failed
        if isinstance(decided[0], ev.VmSchedulingFailed):
            assert decided[0].reason and decided[0].resource
    # fold the capacity ledger from the log: no host overbooked, no reservation leaked
    held: dict[str, dict[str, Resources]] = defaultdict(dict)
    for record in await event_log.records(ev.subject("host", "*", "*")):
        event = record.event()
        if isinstance(event, ev.HostVmPlaced):
            held[event.host][event.vm] = event.resources
        elif isinstance(event, ev.HostVmReleased):
            held[event.host].pop(event.vm, None)
    for host, vms in held.items():
        used = sum(vms.values(), ev.NOTHING)
        capacity = capacities[host]
        assert used.cpu <= capacity.cpu and used.ram_mib <= capacity.ram_mib, host
        assert used.ssd_mib <= capacity.ssd_mib, host
    scheduled = {
        e.vm: e.host for events in per_vm.values() for e in events if isinstance(e, ev.VmScheduled)
    }
    reservations = {(vm, host) for host, vms in held.items() for vm in vms}
    assert reservations == set(scheduled.items())
    # CPUs run out first (20 hosts x 8); every CPU ends up used, and failures say so
    assert sum(used.cpu for used in (sum(v.values(), ev.NOTHING) for v in held.values())) == 160
    failures = [e[0] for e in per_vm.values() if isinstance(e[0], ev.VmSchedulingFailed)]
    assert failures and {f.resource for f in failures} == {"cpu"}
    assert len(failures) + len(scheduled) == 500


async def _decisions(log: EventLog, wanted: set[str]) -> list[ev.Event]:
    """The scheduling decisions of the VMs ``wanted``, once every one has one."""

    def decisions(events: list[ev.Event]) -> list[ev.Event]:
        return [e for e in events if isinstance(e, ev.VmScheduled | ev.VmSchedulingFailed)]

    def done(events: list[ev.Event]) -> bool:
        return {e.vm for e in decisions(events)} >= wanted  # type: ignore[attr-defined]

    return decisions(await wait_events(log, ev.subject("vm", "*", "*"), done, timeout=90))
