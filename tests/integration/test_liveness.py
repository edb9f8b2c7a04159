"""Liveness on a real etcd and nats-server: lease keys, the monitor, hostd's registration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from ucloud import events as ev
from ucloud.config import Config, HostConfig, decode, default_host_id
from ucloud.errors import ConfigError
from ucloud.eventlog import EventLog
from ucloud.events import Resources
from ucloud.events.base import valid_token
from ucloud.handlers import liveness
from ucloud.handlers.liveness import transitions
from ucloud.handlers.placement import CapacityLedger, HostCapacity
from ucloud.hostd import service
from ucloud.hostd.lease import HostLease, alive_prefix
from ucloud.hostd.registry import capacity, detect, last_registration, parse_meminfo
from ucloud.ids import new_id
from ucloud.services import ServiceContext
from ucloud.store import Store, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.timeout(60)]

TTL = 2  # the shortest lease etcd grants


def now() -> datetime:
    return datetime.now(UTC)


def registered(host: str) -> ev.HostRegistered:
    return ev.HostRegistered(
        id=new_id(), at=now(), actor="hostd", host=host,
        capacity=Resources(cpu=4, ram_mib=4096, ssd_mib=10_000),
    )


async def cancelled(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` until it ends: Python 3.11's asyncio.wait_for, which the event log's
    reads use, can swallow a cancel that arrives as its inner future completes."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)


def test_transitions_only_where_the_log_and_the_keys_disagree() -> None:
    ledger = CapacityLedger.of(
        [
            HostCapacity(id="up-alive", since="a"),
            HostCapacity(id="up-gone", since="b"),
            HostCapacity(id="down-back", up=False, since="c"),
            HostCapacity(id="down-gone", up=False, since="d"),
            HostCapacity(id="unregistered", registered=False, up=False, since="e"),
        ]
    )
    alive = {"up-alive", "down-back", "unregistered", "stranger"}
    events = transitions(ledger, alive, now())
    assert [(type(e), e.host, e.causation) for e in events] == [
        (ev.HostDown, "up-gone", "b"),
        (ev.HostUp, "down-back", "c"),
    ]
    assert events == transitions(ledger, alive, events[0].at)  # same ids: monitors agree


async def test_the_lease_is_renewed_and_taken_again_when_lost(
    config: Config, store: Store
) -> None:
    lease = HostLease(store, config.etcd.prefix, "h1", TTL)
    await lease.acquire()
    keeper = asyncio.create_task(lease.run())
    try:
        await asyncio.sleep(TTL * 1.5)  # past the ttl: renewed, still there
        assert await store.get(lease.key) == b"h1"
        first = lease.lease
        await store.revoke(first)  # lost (e.g. etcd forgot it): run takes a new one
        assert await wait_for(store, lease.key, lambda v: v is not None, TTL * 2) == b"h1"
        assert lease.lease != first
    finally:
        await cancelled(keeper)
        await store.revoke(lease.lease)


@pytest.fixture
async def monitors(config: Config, store: Store) -> AsyncIterator[None]:
    """Two monitors, each with its own connection to the log."""
    logs = [await EventLog.connect(config.nats, name=f"monitor{n}") for n in range(2)]
    tasks = [
        asyncio.create_task(
            liveness.run_monitor(
                ServiceContext(config=config, log=log, store=store, name="monitor")
            )
        )
        for log in logs
    ]
    yield
    for task in tasks:
        await cancelled(task)
    for log in logs:
        await log.close()


async def host_events(
    log: EventLog, host: str, done: Callable[[list[ev.Event]], bool], timeout: float = 15
) -> list[ev.Event]:
    async def follow() -> list[ev.Event]:
        seen: list[ev.Event] = []
        async for batch in log.read(1, filter_subject=ev.subject("host", host), follow=True):
            seen.extend(r.event() for r in batch)
            if done(seen):
                return seen
        return seen

    async with asyncio.timeout(timeout):
        return await follow()


def kinds(events: list[ev.Event]) -> list[str]:
    return [e.event_name for e in events]


async def test_a_revoked_lease_gives_one_down_and_a_returning_key_one_up(
    config: Config, event_log: EventLog, store: Store, monitors: None
) -> None:
    lease = HostLease(store, config.etcd.prefix, "h1", TTL)
    await lease.acquire()
    keeper = asyncio.create_task(lease.run())
    await event_log.append(registered("h1"))
    # alive past several renewals: no event at all (heartbeats are not events)
    await asyncio.sleep(TTL * 1.5)
    events, _ = await event_log.load("host", "h1")
    assert kinds([s.event for s in events]) == ["registered"]

    await cancelled(keeper)
    await store.revoke(lease.lease)
    seen = await host_events(event_log, "h1", lambda e: "down" in kinds(e))
    assert kinds(seen) == ["registered", "down"]

    keeper = asyncio.create_task(lease.run())  # run takes a new lease: the key returns
    try:
        seen = await host_events(event_log, "h1", lambda e: "up" in kinds(e))
        await asyncio.sleep(0.5)  # time for a second monitor to append a copy, if it would
    finally:
        await cancelled(keeper)
    events, _ = await event_log.load("host", "h1")
    assert kinds([s.event for s in events]) == ["registered", "down", "up"]
    down, up = events[1].event, events[2].event
    assert up.causation == down.id and up.actor == "system:monitor"
    await store.revoke(lease.lease)


async def test_a_registered_host_without_a_key_is_down_and_a_stranger_key_is_ignored(
    config: Config, event_log: EventLog, store: Store, monitors: None
) -> None:
    stranger = await store.grant(TTL)
    await store.put(f"{alive_prefix(config.etcd.prefix)}stranger", b"", lease=stranger)
    await event_log.append(registered("silent"))
    seen = await host_events(event_log, "silent", lambda e: "down" in kinds(e))
    assert kinds(seen) == ["registered", "down"]
    assert (await event_log.load("host", "stranger"))[0] == []
    await store.revoke(stranger)


# -- hostd: registration and its lease ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("MemTotal:       24589428 kB\nMemFree:  1 kB\n", 24013),
        ("MemFree: 5 kB\n", 0),
    ],
)
def test_memtotal_is_read_in_mib(text: str, mib: int) -> None:
    assert parse_meminfo(text) == mib


def test_capacity_takes_the_configured_amounts_over_the_detected(tmp_path: Path) -> None:
    detected = detect(tmp_path / "not" / "yet")
    assert detected.cpu >= 1 and detected.ram_mib > 0 and detected.ssd_mib > 0
    assert detected.hdd_mib == 0
    host = HostConfig(id="h", ram_mib=1024, hdd_mib=5)
    assert capacity(host, detected) == Resources(
        cpu=detected.cpu, ram_mib=1024, ssd_mib=detected.ssd_mib, hdd_mib=5
    )


async def test_hostd_registers_once_per_set_of_facts_and_keeps_its_key(
    config: Config, event_log: EventLog, store: Store, tmp_path: Path
) -> None:
    host = HostConfig(id=f"h{new_id()[-12:]}", cpu=4, ram_mib=8192, ssd_mib=100_000)

    async def registered_as(host: HostConfig) -> bool:
        last = await last_registration(event_log, host.id)
        return last is not None and (last.address, last.router) == (host.address, host.router)

    async def hostd(host: HostConfig) -> None:
        ctx = ServiceContext(
            config=msgspec.structs.replace(config, host=host), log=event_log, store=store,
            name="hostd",
        )
        task = asyncio.create_task(service.run(ctx))
        key = f"{alive_prefix(config.etcd.prefix)}{host.id}"
        try:
            assert await wait_for(store, key, lambda v: v is not None, 10) == host.id.encode()
            while not await registered_as(host):
                await asyncio.sleep(0.05)
        finally:
            await cancelled(task)

    await hostd(host)
    await hostd(host)  # a restart with the same facts
    moved = msgspec.structs.replace(host, address="2001:db8::7", router=True)
    await hostd(moved)
    await hostd(moved)
    events, _ = await event_log.load("host", host.id)
    registrations = [s.event for s in events]
    assert [type(e) for e in registrations] == [ev.HostRegistered, ev.HostRegistered]
    first, second = registrations
    assert isinstance(first, ev.HostRegistered) and isinstance(second, ev.HostRegistered)
    assert first.capacity == Resources(cpu=4, ram_mib=8192, ssd_mib=100_000)
    assert (second.address, second.router) == ("2001:db8::7", True)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"id": "node1.example.org"}, "host.id"),
        ({"address": "192.0.2.1"}, "address"),
        ({"cpu": 0}, "host.cpu"),
        ({"ram_mib": -1}, "host.ram_mib"),
        ({"lease_ttl_s": 1}, "host.lease_ttl_s"),
        ({"disk": 5}, "host.disk"),
    ],
)
def test_a_wrong_host_setting_is_named(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode({"host": raw})
    assert key in str(info.value)


def test_the_default_host_id_is_the_hostname_as_a_subject_token() -> None:
    assert valid_token(default_host_id())
    assert decode({}).host.id == default_host_id()
    assert decode({"host": {"address": "2001:db8::1"}}).host.address == "2001:db8::1"
