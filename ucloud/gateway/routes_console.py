"""A VM's serial console log, read through its host's hostd (the VM's owner only).

``GET /v1/vms/{id}/console?offset=N&limit=M`` answers ``{"offset", "next", "size",
"data"}`` (see ``ucloud.hostd.console``): the gateway finds the VM's host in the
projection and that hostd's console endpoint in etcd, and asks it with the endpoint's
token. Only the owner reads a console (it may show what the guest prints, passwords of a
first boot included): another user gets 404 as for any VM not theirs, an admin who does
not own the VM 403.
"""

from __future__ import annotations

import httpx
import msgspec

from ucloud.errors import Forbidden, InputError, NotFound, Refused
from ucloud.gateway.http import Answer, Call, Endpoint, RawJson
from ucloud.gateway.lookup import owned
from ucloud.gateway.schemas import ConsoleQuery
from ucloud.gateway.state import Gateway
from ucloud.hostd.console import MAX_CHUNK, ConsoleChunk, ConsoleEndpoint, endpoint_key

TIMEOUT_S = 10.0


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror

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
    ]


def _integer(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(field, f"{text!r} is not a whole number") from None
