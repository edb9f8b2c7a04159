"""The interactive consoles of VMs: a user's WebSocket relayed to the VM's hostd.

``GET /v1/vms/{id}/console/serial`` and ``GET /v1/vms/{id}/console/vnc`` are WebSockets.
The caller shows who they are by a console ticket (``?ticket=``, single-use, from
``POST /v1/vms/{id}/console-tickets``: ``console_tickets.py``) or by a bearer token
(``Authorization``); either way only the VM's owner or an admin gets in. Before the
upgrade the gateway finds the VM's host and that hostd's console endpoint (as for the
log), opens the same stream there with the endpoint's token (``hostd/console_ws.py``),
and appends ``vm.console_opened {kind}`` naming the caller: no console is open that the
audit trail does not show. Then it relays frames both ways, as they are: binary frames
carry the serial bytes or the RFB stream (the subprotocol ``binary`` is accepted for
noVNC), text frames are control messages of the serial console.

A refusal is an HTTP answer instead of the upgrade, ``{"error", "field"}``: 403 without a
valid ticket or token (also for a used, expired or foreign ticket), 404 for a VM that is
not the caller's or has no such console, 409 for a VM without a host or a host that does
not answer, 503 when the log cannot record the opening.
"""

from __future__ import annotations

import logging

import msgspec
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from ucloud.errors import Forbidden, InputError, LogError, Refused, StoreError
from ucloud.events.vm import ConsoleKind, VmConsoleOpened
from ucloud.gateway.auth import Principal
from ucloud.gateway.console_tickets import ConsoleTickets
from ucloud.gateway.lookup import owned
from ucloud.gateway.state import Gateway, envelope
from ucloud.hostd.console import ConsoleEndpoint, endpoint_key
from ucloud.hostd.console_ws import both_ways, deny
from ucloud.projections.views import VmView

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
SUBPROTOCOL = "binary"


class ConsoleRelay:
    def __init__(self, gw: Gateway, tickets: ConsoleTickets) -> None:
        self.gw = gw
        self.tickets = tickets

    async def serial(self, ws: WebSocket) -> None:
        await self.open(ws, "serial")

    async def vnc(self, ws: WebSocket) -> None:
        await self.open(ws, "vnc")

    async def open(self, ws: WebSocket, kind: ConsoleKind) -> None:
        try:
            principal, view = await self.admit(ws, kind)
            place = await self.endpoint_of(view)
        except InputError as exc:
            await deny(ws, exc.status, exc.reason, exc.field)
            return
        except StoreError as exc:
            log.warning("console of %s: %s", ws.path_params.get("id"), exc)
            await deny(ws, 503, "backend unavailable, try again")
            return
        url = place.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            upstream = await connect(
                f"{url}/{kind}/{view.id}",
                additional_headers={"Authorization": f"Bearer {place.token}"},
                open_timeout=CONNECT_TIMEOUT_S, max_size=None, compression=None,
            )
        except InvalidStatus as exc:
            if exc.response.status_code == 404:
                await deny(ws, 404, f"VM {view.id} has no {kind} console on its host now "
                           "(not running, or started before it had one: restart it)", "id")
            else:
                await deny(ws, 409, f"host {view.host} refused the console "
                           f"({exc.response.status_code})", "host")
            return
        except (OSError, TimeoutError, WebSocketException) as exc:
            await deny(ws, 409, f"host {view.host} does not answer for consoles: {exc}", "host")
            return
        async with upstream:
            try:
                await self.gw.log.append(
                    VmConsoleOpened(**envelope(principal), vm=view.id, kind=kind)
                )
            except LogError as exc:
                log.warning("console of %s: %s", view.id, exc)
                await deny(ws, 503, "backend unavailable, try again")
                return
            offered = ws.scope.get("subprotocols") or []
            await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
            log.info("%s console of VM %s opened by %s", kind, view.id, principal.name)
            await both_ways(lambda: _down(upstream, ws), lambda: _up(ws, upstream))

    async def admit(self, ws: WebSocket, kind: ConsoleKind) -> tuple[Principal, VmView]:
        """Who opens the console of which VM; Forbidden or NotFound otherwise."""
        ident = ws.path_params["id"]
        ticket = ws.query_params.get("ticket")
        if ticket is not None:
            record = await self.tickets.redeem(ticket, ident, kind)
            principal = Principal(name=record.user, realm=record.realm)
        else:
            header = ws.headers.get("authorization")
            if not header:
                raise Forbidden("ticket", "a console ticket or a bearer token is required")
            try:
                principal = self.gw.auth.authenticate(header)
            except InputError as exc:
                raise Forbidden(exc.field, exc.reason) from exc
        if self.gw.mirror.users.get(principal.name) is None:
            raise Forbidden("ticket", "unknown user")
        view = owned(self.gw.mirror.vms, principal, ident, "VM").view
        return principal, view

    async def endpoint_of(self, view: VmView) -> ConsoleEndpoint:
        if not view.host:
            raise Refused("status", f"the VM is {view.status} and has no host yet")
        raw = await self.gw.store.get(endpoint_key(self.gw.config.etcd.secrets_prefix, view.host))
        if raw is None:
            raise Refused("host", f"host {view.host} serves no consoles (is its hostd running?)")
        return msgspec.json.decode(raw, type=ConsoleEndpoint)


async def _down(upstream: ClientConnection, ws: WebSocket) -> None:
    async for message in upstream:
        if isinstance(message, bytes):
            await ws.send_bytes(message)
        else:
            await ws.send_text(message)
    await ws.close(1000, "the console closed")


async def _up(ws: WebSocket, upstream: ClientConnection) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await upstream.send(message["bytes"])
        elif message.get("text") is not None:
            await upstream.send(message["text"])
