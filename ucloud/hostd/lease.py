"""A host's liveness key: ``<prefix>alive/<host>`` in etcd under a lease hostd renews.

Liveness is state, not history: when the host dies the lease expires and etcd deletes
the key; the monitor (``handlers/liveness.py``) turns that into ``host.<h>.down``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ucloud.store import Store

log = logging.getLogger(__name__)

SAY_EVERY_S = 60.0  # while etcd stays away: one line a minute, with how many were held back


def alive_prefix(prefix: str) -> str:
    return f"{prefix}alive/"


class HostLease:
    """The liveness key of one host, under a lease that ``run`` keeps renewing."""

    def __init__(self, store: Store, prefix: str, host: str, ttl: int) -> None:
        self.store = store
        self.key = f"{alive_prefix(prefix)}{host}"
        self.host = host
        self.ttl = ttl
        self.lease = 0

    async def acquire(self) -> None:
        """Take a fresh lease and put the key under it."""
        self.lease = await self.store.grant(self.ttl)
        await self.store.put(self.key, self.host.encode(), lease=self.lease)

    async def run(self) -> None:
        """Renew the lease every third of its ttl; take a new one if it expired. Until
        cancelled; the lease is left to expire, so a quick restart does not look like a
        death."""
        if not self.lease:
            await self.acquire()
        said, held = float("-inf"), 0
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await self.store.refresh(self.lease):
                    log.warning("liveness lease of %s had expired; taking a new one", self.host)
                    await self.acquire()
                if said != float("-inf"):
                    log.info("liveness of %s: renewed again", self.host)
                said, held = float("-inf"), 0
            except Exception as exc:  # etcd away: keep trying, the lease may still hold
                now = time.monotonic()
                if now - said < SAY_EVERY_S:
                    held += 1
                    continue
                more = f" ({held} more since)" if held else ""
                log.warning("liveness of %s: cannot renew (%s); retrying every %gs%s",
                            self.host, exc, self.ttl / 3, more)  # fmt: skip
                said, held = now, 0


async def keep_alive(store: Store, prefix: str, host_id: str, ttl: int) -> None:
    """Keep ``<prefix>alive/<host_id>`` alive until cancelled."""
    await HostLease(store, prefix, host_id, ttl).run()
