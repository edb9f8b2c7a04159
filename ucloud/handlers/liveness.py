"""Host liveness: a lease key per host in etcd, and the monitor that turns it into events.

Theory of operation
-------------------
Liveness is state, not history. Each hostd keeps ``<prefix>alive/<host>`` alive under an
etcd lease (``keep_alive``); when the host dies the lease expires and etcd deletes the
key. Heartbeats never reach the log.

The monitor (service ``monitor``) compares two things: the set of alive keys (read once,
then watched) and each registered host's state as the log says (the capacity ledger,
followed like the scheduler does). A registered host the log has up whose key is gone
gets ``host.<h>.down``; a host the log has down whose key is back gets ``host.<h>.up``.
Only transitions are appended, and only after a fresh read of the key confirms them.

Several monitors may run. Each transition is appended expecting the host's last
sequence, and its id derives from the event that set the host's current state, so two
monitors that see the same transition append one event; a monitor whose view was stale
gets a conflict, waits for its ledger to move on and looks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime

from ucloud.eventlog import EventLog
from ucloud.events import Cause, HostDown, HostEvent, HostUp
from ucloud.handlers.ledger import LedgerFollower, append_to_host
from ucloud.handlers.placement import CapacityLedger
from ucloud.hostd.lease import alive_prefix
from ucloud.services import ServiceContext
from ucloud.store import Store

log = logging.getLogger(__name__)

ACTOR = "system:monitor"
SETTLE_S = 0.1  # the monitor looks at most this often: transitions matter in seconds


def transitions(ledger: CapacityLedger, alive: Collection[str], at: datetime) -> list[HostEvent]:
    """The liveness events that make the log agree with the alive keys (pure)."""
    out: list[HostEvent] = []
    for host in ledger.hosts.values():
        if not host.registered or host.up == (host.id in alive):
            continue
        cause = Cause(actor=ACTOR, at=at, causation=host.since, correlation=host.since)
        kind = HostDown if host.up else HostUp
        out.append(kind(**cause.envelope(kind.tag()), host=host.id))
    return out


class Monitor:
    """Watches the alive keys and appends the transitions."""

    def __init__(
        self,
        log_: EventLog,
        store: Store,
        prefix: str,
        follower: LedgerFollower,
        *,
        catch_up_s: float = 5.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = log_
        self.store = store
        self.prefix = alive_prefix(prefix)
        self.follower = follower
        self.catch_up_s = catch_up_s
        self.clock = clock
        self.alive: set[str] = set()
        self._poke = asyncio.Event()

    async def run(self) -> None:
        revision = await self.store.revision()
        keys = await self.store.get_prefix(self.prefix, keys_only=True)
        self.alive = {key[len(self.prefix) :] for key, _ in keys}
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch(revision + 1), name="monitor:watch")
            group.create_task(self._decide(), name="monitor:decide")

    async def _watch(self, revision: int) -> None:
        async for change in self.store.watch_prefix(self.prefix, revision):
            host = change.key[len(self.prefix) :]
            if change.kind == "put":
                self.alive.add(host)
            else:
                self.alive.discard(host)
            self._poke.set()

    async def _decide(self) -> None:
        await self.follower.ready.wait()
        while True:
            changed = self.follower.changed()
            self._poke.clear()
            for event in transitions(self.follower.ledger, self.alive, self.clock()):
                if self.follower.fresh(event.host):
                    await self._append(event)
            poke = asyncio.ensure_future(self._poke.wait())
            moved = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait((poke, moved), return_when=asyncio.FIRST_COMPLETED)
            finally:
                poke.cancel()
                moved.cancel()
            await asyncio.sleep(SETTLE_S)

    async def _append(self, event: HostEvent) -> None:
        present = await self.store.get(f"{self.prefix}{event.host}") is not None
        if present != isinstance(event, HostUp):
            return  # the key changed again meanwhile; the watch will say so
        if await append_to_host(self.follower, event):
            log.info("host %s is %s", event.host, event.event_name)
        # else the host moved on: look again once the ledger shows how


async def run_monitor(ctx: ServiceContext) -> None:
    """The ``monitor`` service."""
    follower = LedgerFollower(ctx.log)
    monitor = Monitor(
        ctx.log, ctx.store, ctx.config.etcd.prefix, follower,
        catch_up_s=ctx.config.scheduler.catch_up_s,
    )
    async with asyncio.TaskGroup() as group:
        group.create_task(follower.run(), name="monitor:ledger")
        group.create_task(monitor.run(), name="monitor:alive")

