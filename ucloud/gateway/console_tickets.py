"""Console tickets: short-lived, single-use permissions to open one console of one VM.

A browser cannot put a bearer token on a WebSocket, so it opens a console with a ticket
instead (as Nova's console tokens work): ``POST /v1/vms/{id}/console-tickets {kind}``
makes one, bound to the caller, the VM and the kind, and the WebSocket takes it as
``?ticket=``. Tickets are secrets and live in etcd under the secrets prefix, never in an
event::

    console_ticket/<ticket>   {"user", "realm", "vm", "kind", "expires"}  (lease: the TTL)

Using a ticket deletes its key in a transaction guarded by its value, so of two uses of
one ticket at most one succeeds; one past its expiry is refused even before etcd's lease
has taken the key away.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import msgspec

from ucloud.errors import Forbidden
from ucloud.events.vm import ConsoleKind
from ucloud.projections.ops import Delete, Put
from ucloud.store import Guard, Store

TICKET_TTL_S = 60


class ConsoleTicket(msgspec.Struct, frozen=True, kw_only=True):
    user: str
    realm: str
    vm: str
    kind: ConsoleKind
    expires: float  # unix seconds


class ConsoleTickets:
    """Issues and redeems console tickets in etcd."""

    def __init__(
        self, store: Store, secrets_prefix: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.prefix = f"{secrets_prefix}console_ticket/"
        self.clock = clock

    async def issue(
        self, user: str, realm: str, vm: str, kind: ConsoleKind
    ) -> tuple[str, ConsoleTicket]:
        """A new ticket for ``user`` to open ``kind`` of ``vm``: (its secret, its record)."""
        secret = secrets.token_urlsafe(24)
        record = ConsoleTicket(
            user=user, realm=realm, vm=vm, kind=kind, expires=self.clock() + TICKET_TTL_S
        )
        lease = await self.store.grant(TICKET_TTL_S + 1)
        await self.store.commit([Put(self.prefix + secret, msgspec.json.encode(record), lease)])
        return secret, record

    async def redeem(self, secret: str, vm: str, kind: ConsoleKind) -> ConsoleTicket:
        """The record of a valid ticket for ``kind`` of ``vm``, used up; Forbidden when there
        is none (never issued, used already, expired, or for another VM or console)."""
        if not secret or "/" in secret:
            raise Forbidden("ticket", "not a valid console ticket")
        key = self.prefix + secret
        raw = await self.store.get(key)
        if raw is None or not await self.store.commit([Delete(key)], [Guard(key, raw)]):
            raise Forbidden("ticket", "no such console ticket (used already, or expired)")
        record = msgspec.json.decode(raw, type=ConsoleTicket)
        if record.expires <= self.clock():
            raise Forbidden("ticket", "the console ticket expired")
        if record.vm != vm or record.kind != kind:
            raise Forbidden("ticket", f"the ticket is for the {record.kind} console of another VM")
        return record
