"""The event log against a real nats-server: append, load, OCC, de-duplication, reads."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from ucloud import events as ev
from ucloud.errors import ConflictError, LogError
from ucloud.eventlog import EventLog
from ucloud.ids import new_id

pytestmark = pytest.mark.servers


def requested(vm: str) -> ev.VmRequested:
    return ev.VmRequested(
        id=new_id(), at=datetime.now(UTC), actor="alice", vm=vm, owner="alice", name="web",
        spec=ev.Resources(cpu=1, ram_mib=512, ssd_mib=1024), image="tiny",
    )


def scheduled(vm: str) -> ev.VmScheduled:
    return ev.VmScheduled(id=new_id(), at=datetime.now(UTC), actor="system:t", vm=vm, host="h")


async def test_append_and_load(event_log: EventLog) -> None:
    vm = new_id()
    first = await event_log.append(requested(vm), expected=0)
    second = await event_log.append(scheduled(vm), expected=first)
    await event_log.append(requested(new_id()))
    events, last = await event_log.load("vm", vm)
    assert [s.seq for s in events] == [first, second]
    assert last == second
    assert isinstance(events[1].event, ev.VmScheduled)
    assert await event_log.load("vm", new_id()) == ([], 0)


async def test_stale_expected_sequence_is_a_conflict(event_log: EventLog) -> None:
    vm = new_id()
    seq = await event_log.append(requested(vm), expected=0)
    await event_log.append(scheduled(vm), expected=seq)
    with pytest.raises(ConflictError):
        await event_log.append(scheduled(vm), expected=seq)


async def test_sixteen_writers_with_the_same_expectation_one_wins(event_log: EventLog) -> None:
    vm = new_id()
    seq = await event_log.append(requested(vm), expected=0)

    async def writer() -> bool:
        try:
            await event_log.append(scheduled(vm), expected=seq)
        except ConflictError:
            return False
        return True

    results = await asyncio.gather(*(writer() for _ in range(16)))
    assert results.count(True) == 1
    events, _ = await event_log.load("vm", vm)
    assert len(events) == 2


async def test_the_same_event_appended_twice_is_stored_once(event_log: EventLog) -> None:
    vm = new_id()
    event = requested(vm)
    a = await event_log.append(event, expected=0)
    b = await event_log.append(event, expected=0)  # retried with a now stale expectation
    c = await event_log.append(event)  # and without OCC: the duplicate window drops it
    assert a == b == c
    events, _ = await event_log.load("vm", vm)
    assert len(events) == 1


async def test_read_in_order_with_filters_and_start_time(event_log: EventLog) -> None:
    before = datetime.now(UTC)
    vms = [new_id() for _ in range(5)]
    seqs = [await event_log.append(requested(vm)) for vm in vms]
    seen = [r.seq async for batch in event_log.read(1) for r in batch]
    assert seen == sorted(seen) and set(seqs) <= set(seen)
    only = [r.seq async for batch in event_log.read(1, filter_subject=ev.subject("vm", vms[2]))
            for r in batch]
    assert only == [seqs[2]]
    since = [r.seq async for batch in event_log.read(start_time=before) for r in batch]
    assert since[-5:] == seqs
    assert [r async for r in event_log.read(start_time=datetime.now(UTC))] == []
    none = [r async for r in event_log.read(1, filter_subject=ev.subject("vm", new_id()))]
    assert none == []
    record = [r async for batch in event_log.read(seqs[0], stop=seqs[0]) for r in batch][0]
    assert record.subject == f"ucloud.evt.vm.{vms[0]}.requested"
    assert record.headers["Ucloud-Type"] == "vm.requested"
    assert record.event().aggregate_id == vms[0]


async def test_follow_sees_new_events(event_log: EventLog) -> None:
    start = await event_log.last_sequence() + 1
    got: list[int] = []

    async def follow() -> None:
        async for batch in event_log.read(start, follow=True):
            got.extend(r.seq for r in batch)
            if len(got) >= 3:
                return

    task = asyncio.create_task(follow())
    seqs = [await event_log.append(requested(new_id())) for _ in range(3)]
    await asyncio.wait_for(task, 10)
    assert got == seqs


async def test_an_unreachable_server_is_an_error_not_a_hang() -> None:
    from ucloud.config import NatsConfig
    from ucloud.errors import LogError
    from ucloud.servers import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(LogError, match="cannot connect"):
        await asyncio.wait_for(EventLog.connect(NatsConfig(url=url)), 30)


async def test_a_subject_outside_the_root_is_refused(event_log: EventLog) -> None:
    from ucloud.errors import InputError

    with pytest.raises(InputError):
        event_log.physical("elsewhere.x")


async def test_a_load_including_an_event_waits_for_a_replica_that_has_it(
    event_log: EventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica behind answers without the event the caller was delivered: asked again
    until one has it, and LogError when none does in time."""
    import ucloud.eventlog

    vm = new_id()
    first = requested(vm)
    await event_log.append(first, expected=0)
    later = scheduled(vm)
    appending = asyncio.create_task(asyncio.sleep(0.3))
    appending.add_done_callback(lambda _: asyncio.ensure_future(event_log.append(later)))
    events, _ = await event_log.load("vm", vm, including=later.id)  # arrives meanwhile
    assert [s.event.id for s in events] == [first.id, later.id]
    monkeypatch.setattr(ucloud.eventlog, "BEHIND_WAIT_S", 0.3)
    with pytest.raises(LogError, match="without event"):
        await event_log.load("vm", vm, including=new_id())


async def test_connection_errors_are_one_line_a_minute(
    event_log: EventLog, caplog: pytest.LogCaptureFixture
) -> None:
    """A server away makes nats-py report every reconnect attempt; the log says it once
    a minute."""
    log = await EventLog.connect(event_log.config)
    try:
        report = log.nc._error_cb
        with caplog.at_level(logging.WARNING, "ucloud.eventlog"):
            for _ in range(100):
                await report(ConnectionRefusedError("refused"))
        assert [r.getMessage().endswith(": refused") for r in caplog.records] == [True]
    finally:
        await log.close()
