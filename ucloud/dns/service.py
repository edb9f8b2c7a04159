"""The ``dns`` service: keeps the authoritative server's zones equal to the fold of the log.

Theory of operation. It reads the ``vm`` and ``net`` events from the start of the log into
``records.DnsFold`` and, once caught up, transfers each zone from the server (AXFR) and
sends one RFC 2136 update per zone with the difference: what the log says and the zone
lacks is added, what the zone has and the log does not is removed. So a zone that was lost,
edited by hand or left behind by a crash is rebuilt from the log. From then on it follows
the log: after each batch of events it computes the records again and sends what changed.
It holds no state of its own; several copies only send the same updates twice.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ucloud.config import Config
from ucloud.dns.records import DnsFold, Rr, Zones, diff, records
from ucloud.dns.updates import ZoneServer, split_listen, tsig_key
from ucloud.errors import DecodeError
from ucloud.eventlog import EventLog
from ucloud.events import Event, decode, subject
from ucloud.services import ServiceContext

log = logging.getLogger(__name__)

SUBJECTS = (subject("vm", "*", "*"), subject("net", "*", "*"))


def enabled(config: Config) -> bool:
    """Whether ``ucloud up`` runs knotd and this service: as set, else if knotd is here."""
    if config.dns.enabled is not None:
        return config.dns.enabled
    return shutil.which("knotd") is not None


def zones_of(config: Config) -> Zones:
    return Zones.of(config.dns.zones, config.dns.zone, config.network.prefix_pool)


def key_file(config: Config) -> Path:
    return Path(config.dns.tsig_key_file) if config.dns.tsig_key_file else (
        config.paths.dns / "tsig.key"
    )


def nameserver(config: Config) -> str:
    return config.dns.nameserver or f"ns.{config.dns.zone or 'invalid'}"


class ZoneSync:
    """The fold, what the server was last seen to hold, and the step between them."""

    def __init__(self, server: ZoneServer, zones: Zones, ttl: int) -> None:
        self.server = server
        self.zones = zones
        self.ttl = ttl
        self.fold = DnsFold()
        self.published: dict[str, frozenset[Rr]] = {}
        self.position = 0

    def apply(self, seq: int, event: Event) -> None:
        self.fold.apply(event)
        self.position = seq

    async def reconcile(self) -> int:
        """Read every zone from the server and send the difference; returns records changed."""
        self.published = {
            zone: await self.server.records(zone)
            for zone in (*self.zones.forward, *self.zones.reverse)
        }
        return await self.publish()

    async def publish(self) -> int:
        changed = 0
        want = records(self.fold, self.zones)
        for zone, (add, remove) in diff(self.published, want).items():
            await self.server.change(zone, add, remove, self.ttl)
            log.info("dns: zone %s: %d added, %d removed", zone, len(add), len(remove))
            changed += len(add) + len(remove)
            self.published[zone] = want[zone]
        return changed

    async def follow(self, event_log: EventLog) -> None:
        """Catch up, reconcile, then publish after each batch until cancelled."""
        async for batch in event_log.read_as(_decoded, subjects=SUBJECTS, follow=False):
            for seq, event in batch:
                self.apply(seq, event)
        await self.reconcile()
        async for batch in event_log.read_as(
            _decoded, subjects=SUBJECTS, start=self.position + 1, follow=True
        ):
            for seq, event in batch:
                self.apply(seq, event)
            await self.publish()


def _decoded(seq: int, wire: str, ns: int, headers: bytes, data: bytes) -> tuple[int, Event] | None:
    try:
        return seq, decode(data)
    except DecodeError:
        log.warning("dns: skipping undecodable event %d", seq)
        return None


def zone_server(config: Config) -> ZoneServer:
    host, port = split_listen(config.dns.server)
    return ZoneServer(host, port, tsig_key(key_file(config)))


async def run(ctx: ServiceContext) -> None:
    """The ``dns`` service of ``ucloud serve dns`` and ``ucloud up``."""
    sync = ZoneSync(zone_server(ctx.config), zones_of(ctx.config), ctx.config.dns.ttl)
    await sync.follow(ctx.log)
