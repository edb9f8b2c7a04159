"""The capacity ledger on a real nats-server: a reservation expects the host's sequence,
a stale ledger conflicts instead of overbooking, and the follower passes the host over
until it has caught up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ucloud import events as ev
from ucloud.eventlog import EventLog
from ucloud.events import Resources
from ucloud.handlers.ledger import LedgerFollower, Taken, append_to_host, reserve
from ucloud.ids import new_id

pytestmark = [pytest.mark.servers, pytest.mark.timeout(60)]

SPEC = Resources(cpu=1, ram_mib=512, ssd_mib=1000)


def placed(host: str, vm: str) -> ev.HostVmPlaced:
    return ev.HostVmPlaced(
        id=new_id(), at=datetime.now(UTC), actor="t", host=host, vm=vm, resources=SPEC
    )


async def test_a_stale_ledger_conflicts_and_passes_the_host_over(event_log: EventLog) -> None:
    host = f"h-{new_id()}"
    await event_log.append(ev.HostRegistered(
        id=new_id(), at=datetime.now(UTC), actor="admin", host=host,
        capacity=Resources(cpu=4, ram_mib=4096, ssd_mib=10_000),
    ))  # fmt: skip
    follower = LedgerFollower(event_log)  # not following: it moves only by catch_up
    await follower.catch_up()
    assert follower.ledger.hosts[host].registered and not follower.stale()

    first, second = placed(host, new_id()), placed(host, new_id())
    assert await reserve(follower, first) == host
    assert follower.stale() == {host}  # the log holds more of the host than the ledger
    assert await reserve(follower, second) == Taken(host)  # decided on the stale ledger
    assert not follower.fresh(host)

    await follower.catch_up()
    assert not follower.stale() and follower.fresh(host)
    assert follower.ledger.hosts_of(first.vm) == (host,)
    assert follower.ledger.hosts_of(second.vm) == ()
    assert await reserve(follower, second) == host  # on the fresh ledger it goes through

    down = ev.HostDown(id=new_id(), at=datetime.now(UTC), actor="t", host=host)
    assert not await append_to_host(follower, down)  # still behind on the second placement
    await follower.catch_up()
    assert await append_to_host(follower, down)
    await follower.catch_up()
    assert not follower.ledger.hosts[host].up
