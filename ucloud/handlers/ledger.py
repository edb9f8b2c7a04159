"""The capacity ledger of the log, followed, and the one way to reserve on it.

Theory of operation
-------------------
The capacity ledger is the host aggregate: ``vm_placed`` reserves, ``vm_released``
frees (``placement.py`` folds it, purely, into a ``CapacityLedger``). A
``LedgerFollower`` reads every host event of the log from sequence 1 and keeps that fold
current; the scheduler, the migration handler, the evacuator and the liveness monitor
decide on it.

An append to a host (``append_to_host``; ``reserve`` for a ``vm_placed``) expects the
host's last sequence as the ledger knows it, so a decision on a stale ledger conflicts
instead of overbooking, and two writers can never both win. Either way the ledger is
then behind on that host: the follower is told (``expect``), and until the ledger shows
that sequence, ``stale()`` names the host so that decisions pass it over instead of
waiting for the follower.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ucloud.errors import ConflictError, DecodeError
from ucloud.eventlog import EventLog, Record
from ucloud.events import Event, HostEvent, HostVmPlaced, subject
from ucloud.handlers.placement import CapacityLedger, advanced, evolve
from ucloud.metrics import SCHEDULER_CONFLICTS

log = logging.getLogger(__name__)

HOST_EVENTS = subject("host", "*", "*")


class LedgerFollower:
    """The capacity ledger of the log, kept current by following every host event."""

    def __init__(self, log_: EventLog) -> None:
        self.log = log_
        self.ledger = CapacityLedger()
        self.ready = asyncio.Event()  # set once the history up to the start is folded
        self.behind: dict[str, int] = {}  # host -> a sequence the ledger has yet to show
        self._changed = asyncio.Event()

    async def run(self) -> None:
        """Fold the history, then follow; runs until cancelled."""
        last = await self.log.last_sequence()
        if last:
            async for batch in self.log.read(1, filter_subject=HOST_EVENTS, stop=last):
                self._fold(batch)
        self._publish(advanced(self.ledger, last))
        self.ready.set()
        async for batch in self.log.read(last + 1, filter_subject=HOST_EVENTS, follow=True):
            self._fold(batch)

    async def catch_up(self) -> None:
        """Fold the host events the log holds beyond the ledger right now (one direct read),
        for a decision that must not miss a host the follower has not delivered yet."""
        records = await self.log.records(HOST_EVENTS, start=self.ledger.position + 1)
        if records:
            self._fold(records)

    def _fold(self, records: list[Record]) -> None:
        stored: list[tuple[int, Event]] = []
        for record in records:
            try:
                stored.append((record.seq, record.event()))
            except DecodeError:
                log.warning("ledger: skipping undecodable event %d", record.seq)
        self._publish(evolve(self.ledger, stored))

    def _publish(self, ledger: CapacityLedger) -> None:
        self.ledger = ledger
        self._changed.set()
        self._changed = asyncio.Event()

    def expect(self, host: str, seq: int) -> None:
        """The log holds ``seq`` for ``host``: the ledger is behind on it until it shows it."""
        if seq > self.behind.get(host, 0):
            self.behind[host] = seq

    def stale(self) -> frozenset[str]:
        """The hosts the ledger is behind on."""
        ledger = self.ledger
        for host in [h for h, seq in self.behind.items() if ledger.seq_of(h) >= seq]:
            del self.behind[host]
        return frozenset(self.behind)

    def fresh(self, host: str) -> bool:
        return self.ledger.seq_of(host) >= self.behind.get(host, 0)

    async def until(self, predicate: Callable[[CapacityLedger], bool], timeout: float) -> bool:
        """Wait until ``predicate(ledger)`` holds; False after ``timeout`` seconds."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel.
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.ledger):
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def changed(self) -> asyncio.Event:
        """An event set at the next change of the ledger."""
        return self._changed


@dataclass(frozen=True, slots=True)
class Taken:
    """The host moved on before the append (another writer came first): decide again."""

    host: str


async def append_to_host(follower: LedgerFollower, event: HostEvent) -> bool:
    """Append ``event`` expecting its host's sequence as the ledger knows it; False when
    the host moved on meanwhile. The follower knows the ledger is behind on it either way."""
    expected = follower.ledger.seq_of(event.host)
    try:
        seq = await follower.log.append(event, expected=expected)
    except ConflictError:
        follower.expect(event.host, expected + 1)
        return False
    follower.expect(event.host, seq)
    return True


async def reserve(follower: LedgerFollower, placed: HostVmPlaced) -> str | Taken:
    """Reserve ``placed.resources`` on ``placed.host``: the host, or Taken on a conflict."""
    if await append_to_host(follower, placed):
        return placed.host
    SCHEDULER_CONFLICTS.labels("host").inc()
    return Taken(placed.host)
