"""What every endpoint shares: the log, the store, the mirror of the projection, auth."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ucloud.config import Config
from ucloud.errors import ProjectionBehind
from ucloud.eventlog import EventLog
from ucloud.gateway.auth import Auth, Credentials, Principal
from ucloud.gateway.metrics import RequestMetrics, view_gatherer
from ucloud.ids import new_id
from ucloud.metrics import ProcessMetrics
from ucloud.projections.mirror import Mirror
from ucloud.store import Store


@dataclass
class Gateway:
    config: Config
    log: EventLog
    store: Store
    mirror: Mirror
    credentials: Credentials
    auth: Auth
    metrics: RequestMetrics
    process: ProcessMetrics  # what /metrics shows: the process's, with the gateway's part
    _registered: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @classmethod
    async def open(
        cls, config: Config, log: EventLog, store: Store, process: ProcessMetrics | None = None
    ) -> Gateway:
        """Load the projection into memory and the token key, and add the gateway's metrics
        to ``process`` (a fresh ``ProcessMetrics`` when None); close() undoes it."""
        mirror = Mirror(store, config.etcd.prefix, name="gateway-mirror")
        await mirror.start()
        try:
            credentials = Credentials(store, config.etcd.secrets_prefix)
            key = await credentials.signing_key(config)
        except BaseException:
            await mirror.stop()
            raise
        auth = Auth(credentials, mirror, key, config)
        gw = cls(config, log, store, mirror, credentials, auth, RequestMetrics(),
                 process or ProcessMetrics(log))
        gw._registered.enter_context(gw.process.collecting(gw.metrics))
        gw._registered.enter_context(gw.process.gathering(view_gatherer(mirror, log)))
        return gw

    async def close(self) -> None:
        self._registered.close()
        await self.mirror.stop()

    async def settled(self, seq: int) -> None:
        """Return once the projection (as mirrored here) has applied sequence ``seq``."""
        timeout = self.config.gateway.read_your_writes_s
        if not await self.mirror.caught_up(seq, timeout):
            raise ProjectionBehind(seq, timeout)

    def key(self, relative: str) -> str:
        """The etcd key of a projection key (``idx/mac/...``)."""
        return self.config.etcd.prefix + relative


def envelope(principal: Principal | str, request: str | None = None) -> dict[str, Any]:
    """The envelope of an event a user request appends: the request is its own cause.

    ``request`` is the event's id (default: a fresh one; ``Call.new_id`` for a request
    that may be retried)."""
    request = request or new_id()
    actor = principal if isinstance(principal, str) else principal.name
    return {
        "id": request,
        "at": datetime.now(UTC),
        "actor": actor,
        "causation": request,
        "correlation": request,
    }
