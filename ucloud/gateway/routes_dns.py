"""DNS names and reverse names of VMs: add, remove, and set the PTR of an address.

A name is unique across owners and each owner has at most ``dns.max_names_per_user``: an
add decides on every VM's names (the mirror, settled up to the log's last add) and is
appended expecting the last ``vm.*.dns_name_added`` of the whole log, so two adds that
race cannot both pass on the same picture: the second conflicts, and decides again on the
picture that has the first (``records.check_add`` holds the rules). Removing a name and
setting a PTR are changes of one VM only, appended with OCC on the VM.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from msgspec import Meta

from ucloud import events as ev
from ucloud.dns.records import DnsFold, VmNames, Zones, check_add, normalize_name
from ucloud.errors import ConflictError, InputError, NotFound, Refused
from ucloud.events.stored import Stored
from ucloud.gateway.appending import Decision, decide_and_append
from ucloud.gateway.http import Answer, Call, Endpoint, RawJson
from ucloud.gateway.idempotency import idempotent
from ucloud.gateway.lookup import owned
from ucloud.gateway.schemas import Request
from ucloud.gateway.state import Gateway, envelope
from ucloud.projections.mirror import Entry
from ucloud.projections.views import VmView

ADDS = ev.subject("vm", "*", "dns_name_added")
RETRIES = 8
_BUSY = ("name", "DNS names kept changing; try again")

DnsName = Annotated[str, Meta(min_length=1, max_length=129, examples=["web.alice.vm.test"])]
PtrName = Annotated[str, Meta(max_length=129, examples=["www.example.net"])]


class DnsNameAdd(Request, kw_only=True):
    name: DnsName


class PtrSet(Request, kw_only=True):
    address: Annotated[str, Meta(max_length=64, examples=["fd75:636c:6f75::ff:fe00:1"])]
    name: PtrName = ""  # "" goes back to the default


def names_of(views: list[VmView]) -> DnsFold:
    """The part of the DNS fold that ``check_add`` reads, from the projection."""
    state = DnsFold()
    for view in views:
        state.vms[view.id] = VmNames(view.owner, view.name, (), list(view.names))
        for name in view.names:
            state.holders[name] = view.id
    return state


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror
    settings = gw.config.dns
    zones = Zones.of(settings.zones, settings.zone, gw.config.network.prefix_pool)
    seen = {"position": 0}  # the last dns_name_added of the log, as far as read

    def find(call: Call) -> Entry[VmView]:
        return owned(mirror.vms, call.principal, call.params["id"], "VM")

    async def last_add() -> int:
        records = await gw.log.records(ADDS, start=seen["position"] + 1)
        if records:
            seen["position"] = records[-1].seq
        return seen["position"]

    async def add(call: Call) -> Answer:
        body: DnsNameAdd = call.body
        vm = find(call).view.id
        head = envelope(call.principal, call.new_id("request"))
        for _ in range(RETRIES):
            last = await last_add()
            await gw.settled(max(last, await gw.log.last_sequence()))
            entry = mirror.vms.get(vm)
            if entry is None:
                raise NotFound("id", f"no VM {call.params['id']}")
            name, zone = check_add(
                names_of([e.view for e in mirror.vms.all()]), vm, body.name, zones,
                settings.max_names_per_user,
            )
            if name in entry.view.names:
                return Answer(200, RawJson(entry.raw))
            event = ev.VmDnsNameAdded(**head, vm=vm, name=name, zone=zone)
            try:
                seq = await gw.log.append(event, expected=last, guard=ADDS)
            except ConflictError:
                continue
            await gw.settled(seq)
            return Answer(200, _raw(mirror.vms.get(vm) or entry))
        raise Refused(*_BUSY)

    async def remove(call: Call) -> Answer:
        vm = find(call).view.id
        name = normalize_name(call.params["name"])

        def decide(_: list[Stored]) -> Decision[None]:
            entry = mirror.vms.get(vm)
            if entry is None or name not in entry.view.names:
                raise NotFound("name", f"the VM has no DNS name {name}")
            head = envelope(call.principal, call.new_id("request"))
            return Decision(ev.VmDnsNameRemoved(**head, vm=vm, name=name), None)

        await decide_and_append(gw, "vm", vm, decide, busy=_BUSY)
        return Answer(200, _raw(mirror.vms.get(vm) or find(call)))

    async def set_ptr(call: Call) -> Answer:
        body: PtrSet = call.body
        vm = find(call).view.id
        address = _address(body.address)
        name = normalize_name(body.name) if body.name else ""

        def decide(_: list[Stored]) -> Decision[None]:
            entry = mirror.vms.get(vm)
            if entry is None:
                raise NotFound("id", f"no VM {call.params['id']}")
            nic = next((n for n in entry.view.nics if n.address == address), None)
            if nic is None:
                raise InputError("address", f"{address} is not an address of this VM")
            if (nic.ptr or "") == name:
                return Decision(None, None)
            head = envelope(call.principal, call.new_id("request"))
            return Decision(ev.VmPtrSet(**head, vm=vm, address=address, name=name), None)

        await decide_and_append(gw, "vm", vm, decide, busy=_BUSY)
        return Answer(200, _raw(mirror.vms.get(vm) or find(call)))

    errors = (400, 401, 404, 409)
    return [
        idempotent(gw, Endpoint(
            "POST", "/v1/vms/{id}/dns", add, "Give a VM a DNS name (AAAA of its addresses)",
            body=DnsNameAdd, answer=VmView, errors=errors,
            description="The name must be in a zone offered here (`dns.zones`) and not "
            "another VM's (409); a user has at most `dns.max_names_per_user` names (409).",
        )),
        Endpoint(
            "DELETE", "/v1/vms/{id}/dns/{name}", remove, "Take a DNS name from a VM",
            answer=VmView, errors=errors,
        ),
        idempotent(gw, Endpoint(
            "PUT", "/v1/vms/{id}/ptr", set_ptr, "Set the reverse name (PTR) of a VM's address",
            body=PtrSet, answer=VmView, errors=errors,
        )),
    ]


def _address(value: str) -> str:
    try:
        return str(ipaddress.IPv6Address(value))
    except ValueError as exc:
        raise InputError("address", f"{value!r} is not an IPv6 address") from exc


def _raw(entry: Entry[VmView]) -> RawJson:
    return RawJson(entry.raw)

