"""A VM's consoles: the serial log, tickets, and the interactive serial and VNC streams.

``GET /v1/vms/{id}/console?offset=N&limit=M`` answers ``{"offset", "next", "size",
"data"}`` (see ``ucloud.hostd.console``): the gateway finds the VM's host in the
projection and that hostd's console endpoint in etcd, and asks it with the endpoint's
token. Only the owner reads a console (it may show what the guest prints, passwords of a
first boot included): another user gets 404 as for any VM not theirs, an admin who does
not own the VM 403.

The interactive consoles (``console_relay.py``) are for the owner or an admin:

    POST /v1/vms/{id}/console-tickets {"kind": "serial" | "vnc"}
      -> 201 {"ticket", "vm", "kind", "expires_at", "path"}
    GET  /v1/vms/{id}/console/serial   WebSocket (?ticket=..., or a bearer token)
    GET  /v1/vms/{id}/console/vnc      WebSocket (?ticket=..., or a bearer token)

``path`` is the WebSocket's path with the ticket, to put after the gateway's address
(``ws://`` or ``wss://``). A ticket opens one console once, within 60 seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import msgspec

from ucloud.errors import Forbidden, InputError, NotFound, Refused
from ucloud.events.vm import ConsoleKind
from ucloud.gateway.console_relay import ConsoleRelay
from ucloud.gateway.console_tickets import TICKET_TTL_S, ConsoleTickets
from ucloud.gateway.http import Answer, Call, Endpoint, RawJson
from ucloud.gateway.lookup import owned
from ucloud.gateway.schemas import ConsoleQuery
from ucloud.gateway.state import Gateway
from ucloud.hostd.console import MAX_CHUNK, ConsoleChunk, ConsoleEndpoint, endpoint_key

TIMEOUT_S = 10.0


class TicketRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: ConsoleKind


class Ticket(msgspec.Struct, frozen=True, kw_only=True):
    ticket: str  # a secret: opens the console once, until ``expires_at``
    vm: str
    kind: ConsoleKind
    expires_at: datetime
    path: str  # the WebSocket's path and query, ticket included


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror
    tickets = ConsoleTickets(gw.store, gw.config.etcd.secrets_prefix)
    relay = ConsoleRelay(gw, tickets)

    async def ticket(call: Call) -> Answer:
        principal, kind = call.principal, call.body.kind
        view = owned(mirror.vms, principal, call.params["id"], "VM").view
        secret, record = await tickets.issue(principal.name, principal.realm, view.id, kind)
        return Answer(201, Ticket(
            ticket=secret, vm=view.id, kind=kind,
            expires_at=datetime.fromtimestamp(record.expires, UTC),
            path=f"/v1/vms/{quote(view.id, safe='')}/console/{kind}?ticket={secret}",
        ))

    def upgrade_only(kind: ConsoleKind) -> Endpoint:
        async def plain(call: Call) -> Answer:
            raise InputError("", f"the {kind} console is a WebSocket: connect with an upgrade")

        return Endpoint(
            "GET", f"/v1/vms/{{id}}/console/{kind}", plain,
            f"The VM's {kind} console, a WebSocket of binary frames (owner or admin; "
            "?ticket=<console ticket> or a bearer token)",
            status=101, access="public", errors=(400, 403, 404, 409),
            stream=relay.serial if kind == "serial" else relay.vnc,
        )

    async def console(call: Call) -> Answer:
        principal, ident = call.principal, call.params["id"]
        view = owned(mirror.vms, principal, ident, "VM").view
        if view.owner != principal.name:
            raise Forbidden("id", "only the VM's owner may read its console")
        offset = _integer(call.request.query_params.get("offset", "0"), "offset")
        limit = _integer(call.request.query_params.get("limit", str(MAX_CHUNK)), "limit")
        if limit < 1:
            raise InputError("limit", "must be at least 1")
        if not view.host:
            raise Refused("status", f"the VM is {view.status} and has no host yet")
        raw = await gw.store.get(endpoint_key(gw.config.etcd.secrets_prefix, view.host))
        if raw is None:
            raise Refused("host", f"host {view.host} serves no consoles (is its hostd running?)")
        place = msgspec.json.decode(raw, type=ConsoleEndpoint)
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                answer = await client.get(
                    f"{place.url}/console/{view.id}",
                    params={"offset": offset, "limit": min(limit, MAX_CHUNK)},
                    headers={"Authorization": f"Bearer {place.token}"},
                )
        except httpx.HTTPError as exc:
            raise Refused("host", f"host {view.host} does not answer for consoles: {exc}") from exc
        if answer.status_code == 404:
            raise NotFound("id", f"VM {ident} has no console log (yet)")
        if answer.status_code != 200:
            raise Refused("host", f"host {view.host} answered {answer.status_code} for the console")
        return Answer(200, RawJson(answer.content))

    return [
        Endpoint(
            "GET", "/v1/vms/{id}/console", console,
            "The VM's serial console log from ?offset=N (negative: from the end), owner only",
            answer=ConsoleChunk, errors=(400, 401, 403, 404, 409), query=ConsoleQuery,
        ),
        Endpoint(
            "POST", "/v1/vms/{id}/console-tickets", ticket,
            f"A single-use ticket to open the VM's serial or VNC console within {TICKET_TTL_S} s "
            "(owner or admin)",
            status=201, body=TicketRequest, answer=Ticket, errors=(400, 401, 404),
        ),
        upgrade_only("serial"),
        upgrade_only("vnc"),
    ]


def _integer(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(field, f"{text!r} is not a whole number") from None
