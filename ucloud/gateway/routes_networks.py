"""Networks: create, list, show, delete.

``POST /v1/networks {name, ipam}`` admits the network on the user's quota
(``routes_quotas.admit``), then appends ``net.requested`` expecting an empty aggregate;
netalloc answers with ``net.created`` (VNI, /64) or ``net.failed``. Delete is refused while
the network is still being created or while VMs are attached (the 409 names them);
otherwise it appends ``net.delete_requested`` with OCC on the network, and netalloc
releases the VNI and the /64. Before looking for attached VMs the gateway waits until the
projection has applied the whole log as it stood, so a VM requested before the delete is
seen. A network another user owns does not exist for you (404); admins see all.
"""

from __future__ import annotations

from ucloud import events as ev
from ucloud.errors import NotFound, Refused
from ucloud.events.stored import Stored
from ucloud.events.types import Ipam
from ucloud.gateway.appending import Decision, decide_and_append
from ucloud.gateway.auth import Principal
from ucloud.gateway.http import Answer, Call, Endpoint, RawJson, deleted_later, raw_list
from ucloud.gateway.idempotency import idempotent
from ucloud.gateway.lookup import check_resource_name, owned
from ucloud.gateway.routes_quotas import admit, check_admission
from ucloud.gateway.schemas import Request, ResourceName
from ucloud.gateway.state import Gateway, envelope
from ucloud.projections.mirror import Entry
from ucloud.projections.views import NetView, net_vm_key

_BUSY = ("status", "the network kept changing; try again")
_NAMED = 10  # attached VMs named in a refusal


class NetCreate(Request, kw_only=True):
    name: ResourceName  # and not one that reads as an id (a UUID)
    ipam: Ipam = "none"  # none: layer 2 only; manual: a /64; auto: a /64 and router adverts


def check_net_name(name: str) -> None:
    check_resource_name(name, "network")


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror

    def find(principal: Principal, ident: str) -> Entry[NetView]:
        return owned(mirror.nets, principal, ident, "network")

    async def attached(net: str) -> list[str]:
        """Names (ids where unknown) of the VMs attached to ``net``, sorted."""
        prefix = gw.key(net_vm_key(net, ""))
        keys = await gw.store.get_prefix(prefix, keys_only=True)
        names = []
        for key, _ in keys:
            vm = key[len(prefix) :]
            entry = mirror.vms.get(vm)
            names.append(entry.view.name if entry is not None else vm)
        return sorted(names)

    async def create(call: Call) -> Answer:
        body: NetCreate = call.body
        principal = call.principal
        check_net_name(body.name)
        net = call.new_id("net")
        named = mirror.nets.named(principal.name, body.name)
        if named is not None and named.view.id == net:  # a retry of a request that made it
            return Answer(202, RawJson(named.raw))
        if named is not None:
            raise Refused("name", f"you already have a network named {body.name}")
        admitted = await admit(gw, principal.name, "net", net, None, call.new_id("admission"))
        event = ev.NetRequested(
            **envelope(principal, call.new_id("request")), net=net, owner=principal.name,
            name=body.name, ipam=body.ipam,
        )
        check_admission(admitted)
        seq = await gw.log.append(event, expected=0)
        await gw.settled(seq)
        return Answer(202, _raw(mirror.nets.get(net), net))

    async def list_nets(call: Call) -> Answer:
        principal = call.principal
        mine = mirror.nets.all() if principal.admin else mirror.nets.of_owner(principal.name)
        entries = list(mine)
        entries.sort(key=lambda e: (e.view.owner, e.view.name, e.view.id))
        return Answer(200, raw_list([e.raw for e in entries]))

    async def show(call: Call) -> Answer:
        return Answer(200, RawJson(find(call.principal, call.params["id"]).raw))

    async def delete(call: Call) -> Answer:
        principal = call.principal
        net = find(principal, call.params["id"]).view.id

        async def decide(_: list[Stored]) -> Decision[Entry[NetView]]:
            entry = mirror.nets.get(net)
            if entry is None:
                raise NotFound("id", f"no network {call.params['id']}")
            view = entry.view
            if view.status == "deleting":
                return Decision(None, entry)
            if view.status == "requested":
                raise Refused("status", f"network {view.name} is still being created")
            users = await attached(net)
            if users:
                shown = ", ".join(users[:_NAMED]) + (", ..." if len(users) > _NAMED else "")
                raise Refused(
                    "id", f"{len(users)} VM(s) are attached to network {view.name}: {shown}"
                )
            head = envelope(principal, call.new_id("request"))
            return Decision(ev.NetDeleteRequested(**head, net=net), entry)

        # the whole log as it stood: a VM requested before the delete is seen attached
        before = await decide_and_append(gw, "net", net, decide, busy=_BUSY, settle="log")
        return Answer(202, _raw(mirror.nets.get(net), net, before))

    return [
        idempotent(gw, Endpoint(
            "POST", "/v1/networks", create, "Create a network (IPAM none, manual or auto)",
            status=202, body=NetCreate, answer=NetView, errors=(400, 401, 409),
        )),
        Endpoint(
            "GET", "/v1/networks", list_nets, "Your networks (admin: all)",
            answer=list[NetView], errors=(401,),
        ),
        Endpoint(
            "GET", "/v1/networks/{id}", show, "One network, by id or name", answer=NetView,
            errors=(401, 404),
        ),
        Endpoint(
            "DELETE", "/v1/networks/{id}", delete, "Delete a network no VM is attached to",
            status=202, answer=NetView, errors=(401, 404, 409),
            description=deleted_later("network", "netalloc"),
        ),
    ]


def _raw(entry: Entry[NetView] | None, net: str, before: Entry[NetView] | None = None) -> RawJson:
    # A network deleted between the append and the answer: answer what it was.
    chosen = entry or before
    if chosen is None:
        raise NotFound("id", f"network {net} is gone")
    return RawJson(chosen.raw)
