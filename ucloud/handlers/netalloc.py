"""netalloc: gives each requested network a VNI and a /64, and takes them back on delete.

Theory of operation. A durable consumer (``netalloc``, shared by every copy) of
``net.*.requested`` and ``net.*.delete_requested``. For each it loads the network's
aggregate, brings its fold of the two pools (``pool.vni``, ``pool.prefix``) up to date
with one read of the pool events it has not seen, and asks ``ipam.decide`` for the next
step; it appends that step expecting the last sequence of the step's aggregate (the
network, or the pool it allocates from) and goes round again until nothing is left. A
conflict means another allocator moved the aggregate first: fold again, decide again.
Ids derive from the triggering event, so a redelivered request appends nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from ucloud.config import NetworkConfig
from ucloud.consumer import run_consumer
from ucloud.errors import ConflictError, DecodeError, LogError
from ucloud.eventlog import EventLog
from ucloud.events import (
    Cause,
    Event,
    NetCreated,
    NetDeleted,
    NetDeleteRequested,
    NetFailed,
    NetRequested,
    subject,
)
from ucloud.handlers.ipam import Limits, Pools, decide, fold_net, fold_pools
from ucloud.services import ServiceContext

log = logging.getLogger(__name__)

ACTOR = "system:netalloc"
DURABLE = "netalloc"
SUBJECTS = (subject("net", "*", "requested"), subject("net", "*", "delete_requested"))
POOL_EVENTS = subject("pool", "*", "*")
RETRIES = 64  # steps of one network, conflicts included


def limits_of(settings: NetworkConfig) -> Limits:
    return Limits.of(settings.vni_min, settings.vni_max, settings.prefix_pool)


class NetAlloc:
    """The handler: ``handle`` is given to the consumer runner."""

    def __init__(
        self, log_: EventLog, limits: Limits,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.log = log_
        self.limits = limits
        self.clock = clock
        self.pools = Pools()
        self.position = 0  # the pool events up to this stream sequence are folded
        self.last: dict[str, int] = {}  # pool id -> its last stream sequence

    async def handle(self, event: Event, seq: int, delivered: int) -> None:
        if isinstance(event, NetRequested | NetDeleteRequested):
            await self.settle(event)

    async def settle(self, trigger: NetRequested | NetDeleteRequested) -> None:
        """Append the steps of ``trigger``'s network until it needs none."""
        net = trigger.net
        cause = Cause.of(trigger, ACTOR, self.clock())
        for _ in range(RETRIES):
            stored, net_last = await self.log.load("net", net)
            facts = fold_net(s.event for s in stored)
            await self.refresh()
            step = decide(net, facts, self.pools, self.limits, cause)
            if step is None:
                return
            expected = net_last if step.aggregate == "net" else self.last.get(step.aggregate_id, 0)
            try:
                await self.log.append(step, expected=expected)
            except ConflictError:
                continue
            _report(net, step)
        raise LogError(f"net {net}: no outcome after {RETRIES} steps")

    async def refresh(self) -> None:
        """Fold the pool events appended since the last refresh (one read)."""
        records = await self.log.records(POOL_EVENTS, start=self.position + 1)
        events: list[Event] = []
        for record in records:
            self.position = record.seq
            self.last[record.subject.split(".")[3]] = record.seq
            try:
                events.append(record.event())
            except DecodeError:
                log.warning("netalloc: skipping undecodable pool event %d", record.seq)
        if events:
            self.pools = fold_pools(self.pools, events)


def _report(net: str, step: Event) -> None:
    if isinstance(step, NetCreated):
        log.info("net %s created: vni %d, prefix %s", net, step.vni, step.prefix or "(none)")
    elif isinstance(step, NetFailed):
        log.warning("net %s failed: %s", net, step.reason)
    elif isinstance(step, NetDeleted):
        log.info("net %s deleted", net)


async def run(ctx: ServiceContext) -> None:
    """The ``netalloc`` service: a consumer of network requests and delete requests."""
    allocator = NetAlloc(ctx.log, limits_of(ctx.config.network))
    await run_consumer(
        ctx.log, ctx.store, durable=DURABLE, subjects=SUBJECTS, handle=allocator.handle,
        settings=ctx.config.consumer, poison_prefix=f"{ctx.config.etcd.prefix}_poison/",
        name=ctx.name,
    )
