"""Hosts (admin realm only; others get 403): list, register, drain, undrain."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ucloud import events as ev
from ucloud.errors import ConflictError, InputError, NotFound, Refused
from ucloud.events.base import valid_token
from ucloud.events.stored import Stored
from ucloud.gateway import rules
from ucloud.gateway.appending import Decision, decide_and_append
from ucloud.gateway.http import Answer, Call, Endpoint, Handler, RawJson, raw_list
from ucloud.gateway.idempotency import idempotent
from ucloud.gateway.schemas import HostCreate
from ucloud.gateway.sizes import parse_positive_size, parse_size
from ucloud.gateway.spec import MAX_CPU
from ucloud.gateway.state import Gateway, envelope
from ucloud.projections.mirror import Entry
from ucloud.projections.views import HostView

_BUSY = ("id", "the host kept changing; try again")
_ADMIN = (401, 403)


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror

    async def list_hosts(call: Call) -> Answer:
        hosts = sorted(mirror.hosts.all(), key=lambda e: e.view.id)
        return Answer(200, raw_list([e.raw for e in hosts]))

    async def register(call: Call) -> Answer:
        body: HostCreate = call.body
        if not valid_token(body.id) or len(body.id) > 63:
            raise InputError("id", "use 1-63 letters, digits, '-' or '_'")
        if not 0 < body.cpu <= MAX_CPU * 64:
            raise InputError("cpu", "must be a positive number of CPUs")
        if body.address:
            try:
                ipaddress.ip_address(body.address.strip("[]"))
            except ValueError as exc:
                raise InputError("address", f"{body.address!r} is not an IP address") from exc
        capacity = ev.Resources(
            cpu=body.cpu,
            ram_mib=parse_positive_size(body.ram, "ram"),
            ssd_mib=parse_positive_size(body.ssd, "ssd"),
            hdd_mib=parse_size(body.hdd, "hdd"),
        )
        event = ev.HostRegistered(
            **envelope(call.principal, call.new_id("request")), host=body.id, capacity=capacity,
            address=body.address.strip("[]"), router=body.router,
        )
        try:
            seq = await gw.log.append(event, expected=0)
        except ConflictError as exc:
            raise Refused("id", f"host {body.id} is already registered") from exc
        await gw.settled(seq)
        entry = mirror.hosts.get(body.id)
        if entry is None:
            raise NotFound("id", f"host {body.id} is gone")
        return Answer(201, RawJson(entry.raw))

    def change(action: rules.HostAction, make: Callable[[Call, str], ev.Event]) -> Handler:
        async def act(call: Call) -> Answer:
            host = call.params["id"]
            if mirror.hosts.get(host) is None:
                raise NotFound("id", f"no host {host}")

            def decide(_: list[Stored]) -> Decision[Entry[HostView]]:
                entry = mirror.hosts.get(host)
                if entry is None:
                    raise NotFound("id", f"no host {host}")
                rules.check_host(entry.view, action)
                return Decision(make(call, host), entry)

            before = await decide_and_append(gw, "host", host, decide, busy=_BUSY)
            return Answer(202, RawJson((mirror.hosts.get(host) or before).raw))

        return act

    def drain(call: Call, host: str) -> ev.Event:
        return ev.HostDrained(**envelope(call.principal, call.new_id("request")), host=host)

    def undrain(call: Call, host: str) -> ev.Event:
        return ev.HostUndrained(**envelope(call.principal, call.new_id("request")), host=host)

    return [
        Endpoint(
            "GET", "/v1/hosts", list_hosts, "All hosts with capacity and use",
            answer=list[HostView], access="admin", errors=_ADMIN,
        ),
        idempotent(gw, Endpoint(
            "POST", "/v1/hosts", register, "Register a host", status=201, body=HostCreate,
            answer=HostView, access="admin", errors=(400, *_ADMIN, 409),
        )),
        idempotent(gw, Endpoint(
            "POST", "/v1/hosts/{id}/drain", change("drain", drain),
            "Place no new VMs on the host", status=202, answer=HostView, access="admin",
            errors=(*_ADMIN, 404, 409),
        )),
        idempotent(gw, Endpoint(
            "POST", "/v1/hosts/{id}/undrain", change("undrain", undrain),
            "Place VMs on the host again", status=202, answer=HostView, access="admin",
            errors=(*_ADMIN, 404, 409),
        )),
    ]
