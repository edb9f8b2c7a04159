"""VMs: create, list, show, start, stop, migrate, delete, and their audit trail.

Create checks everything before it appends anything: name, the spec (sizes, image,
networks: ``spec.read_spec``, as a quote reads them), keys, the user's quota (which admits
the VM on the user aggregate: ``routes_quotas.admit``).
It assigns the MACs (locally administered unicast, unique against ``idx/mac``), appends
``vm.requested`` expecting an empty aggregate, and answers once the projection shows the
VM. With ``order: true`` it appends the VM's ``order.placed`` first (``routes_orders``).
Lifecycle intents decide on the VM's view after the projection has applied the VM's last
event (``rules.check_vm``), and append with OCC on that event
(``appending.decide_and_append``).

A VM another user owns does not exist for you: every lookup answers 404 (admins see all).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ucloud import events as ev
from ucloud.errors import Forbidden, InputError, NotFound, Refused
from ucloud.events.base import valid_token
from ucloud.events.stored import Stored
from ucloud.gateway import rules
from ucloud.gateway.appending import Decision, decide_and_append
from ucloud.gateway.auth import Principal
from ucloud.gateway.http import Answer, Call, Endpoint, Handler, RawJson, deleted_later, raw_list
from ucloud.gateway.idempotency import idempotent
from ucloud.gateway.lookup import check_resource_name, owned
from ucloud.gateway.routes_orders import draft_order
from ucloud.gateway.routes_quotas import admit, check_admission
from ucloud.gateway.routes_users import own_keys
from ucloud.gateway.schemas import AuditLine, VmCreate, VmMigrate
from ucloud.gateway.spec import read_spec
from ucloud.gateway.state import Gateway, envelope
from ucloud.metadata.userdata import encode_user_data, userdata_key
from ucloud.projections.mirror import Entry
from ucloud.projections.ops import Put
from ucloud.projections.views import VmView
from ucloud.replay.audit import audit_vm
from ucloud.store import Guard

_BUSY = ("status", "the VM kept changing; try again")
_MAC_TRIES = 16
_MAC_CLAIM_S = 120  # a claimed MAC stays reserved this long: well past read_your_writes_s
_LISTINGS = 1024


def new_mac(random: Callable[[int], bytes] = os.urandom) -> str:
    """A locally administered unicast MAC: 02 followed by five random octets."""
    return ":".join(f"{b:02x}" for b in (0x02, *random(5)))


def check_vm_name(name: str) -> None:
    check_resource_name(name, "VM")


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror

    def find(principal: Principal, ident: str) -> Entry[VmView]:
        return owned(mirror.vms, principal, ident, "VM")

    def resolve_keys(principal: Principal, idents: list[str] | None) -> tuple[str, ...]:
        mine = own_keys(gw, principal)
        if idents is None:
            return tuple(k.id for k in mine)
        found: list[str] = []
        for index, ident in enumerate(idents):
            key = next((k for k in mine if ident in (k.id, k.name)), None)
            if key is None:
                raise InputError(f"keys[{index}]", f"no key {ident} of yours")
            if key.id not in found:
                found.append(key.id)
        return tuple(found)

    async def assign_macs(count: int) -> list[str]:
        """MACs no VM has and no other request holds: each is claimed in one etcd
        transaction guarded by its absence from ``idx/mac`` and from the claims (a leased
        ``claim/mac/<mac>`` that outlives the wait for the projection)."""
        macs: list[str] = []
        lease = await gw.store.grant(_MAC_CLAIM_S) if count else 0
        for _ in range(count):
            for _ in range(_MAC_TRIES):
                mac = new_mac()
                claim, held = gw.key(f"claim/mac/{mac}"), gw.key(f"idx/mac/{mac}")
                if mac not in macs and await gw.store.commit(
                    [Put(claim, b"", lease)], [Guard(claim, None), Guard(held, None)]
                ):
                    macs.append(mac)
                    break
            else:
                raise Refused("networks", "could not find a free MAC address")
        return macs

    async def create(call: Call) -> Answer:
        body: VmCreate = call.body
        principal = call.principal
        check_vm_name(body.name)
        vm = call.new_id("vm")
        named = mirror.vms.named(principal.name, body.name)
        if named is not None and named.view.id == vm:  # a retry of a request that made it
            return Answer(202, RawJson(named.raw))
        if named is not None:
            raise Refused("name", f"you already have a VM named {body.name}")
        spec = read_spec(mirror, principal, body, ready=True)
        assert spec.image is not None  # ready: an image is required
        networks = [net.id for net in spec.networks]
        keys = resolve_keys(principal, body.keys)
        user_data = None
        if body.user_data is not None:
            user_data = encode_user_data(body.user_data, gw.config.metadata.max_user_data_bytes)
        admitted = await admit(
            gw, principal.name, "vm", vm, spec.resources, call.new_id("admission")
        )
        macs = await assign_macs(len(networks))
        head = envelope(principal, call.new_id("request"))
        order = None
        if body.order:  # priced before anything is written
            order = draft_order(gw, head, vm=vm, spec=spec, order=call.new_id("order"))
        if user_data is not None:  # before the VM exists, so that its first boot finds it
            await gw.store.put(userdata_key(gw.config.etcd.secrets_prefix, vm), user_data)
        if order is not None:  # first: billing must know the agreed price before the VM
            await gw.log.append(order, expected=0)
            head = {**head, "id": call.new_id("vm.requested")}  # same request, after the order
        event = ev.VmRequested(
            **head, vm=vm, owner=principal.name, name=body.name, spec=spec.resources,
            image=spec.image.id, keys=keys, restart=body.restart,
            order=order.order if order else "",
            nics=tuple(ev.Nic(network=n, mac=m) for n, m in zip(networks, macs, strict=True)),
        )
        check_admission(admitted)
        seq = await gw.log.append(event, expected=0)
        await gw.settled(seq)
        return Answer(202, _raw(mirror.vms.get(vm), vm))

    # owner ("" for all) -> (mirror version, answer): repeated lists cost nothing
    listings: dict[str, tuple[int, RawJson]] = {}

    async def list_vms(call: Call) -> Answer:
        principal = call.principal
        scope = "" if principal.admin else principal.name
        cached = listings.get(scope)
        if cached is not None and cached[0] == mirror.vms.version:
            return Answer(200, cached[1])
        entries = mirror.vms.of_owner(scope) if scope else mirror.vms.all()
        answer = raw_list([e.raw for e in sorted(entries, key=_by_id)])
        if len(listings) >= _LISTINGS:
            listings.clear()
        listings[scope] = (mirror.vms.version, answer)
        return Answer(200, answer)

    async def show(call: Call) -> Answer:
        return Answer(200, RawJson(find(call.principal, call.params["id"]).raw))

    def intent(action: rules.VmAction, make: Callable[[Call, VmView], ev.Event]) -> Handler:
        async def act(call: Call) -> Answer:
            vm = find(call.principal, call.params["id"]).view.id

            def decide(_: list[Stored]) -> Decision[Entry[VmView]]:
                entry = mirror.vms.get(vm)
                if entry is None:
                    raise NotFound("id", f"no VM {call.params['id']}")
                rules.check_vm(entry.view, action)
                return Decision(make(call, entry.view), entry)

            before = await decide_and_append(gw, "vm", vm, decide, busy=_BUSY)
            return Answer(202, _raw(mirror.vms.get(vm), vm, before))

        return act

    def start(call: Call, view: VmView) -> ev.Event:
        return ev.VmStartRequested(**_head(call), vm=view.id)

    def stop(call: Call, view: VmView) -> ev.Event:
        return ev.VmStopRequested(**_head(call), vm=view.id)

    def delete(call: Call, view: VmView) -> ev.Event:
        return ev.VmDeleteRequested(**_head(call), vm=view.id)

    def migrate(call: Call, view: VmView) -> ev.Event:
        body: VmMigrate = call.body
        if body.host:
            if not call.principal.admin:
                raise Forbidden("host", "only the admin realm may choose the target host")
            if mirror.hosts.get(body.host) is None:
                raise InputError("host", f"no host {body.host}")
            rules.check_migration_target(view, body.host)
        image = mirror.images.get(view.image)
        rules.check_migration_disk(image.view.store if image else "fs", gw.config.images)
        return ev.VmMigrationRequested(**_head(call), vm=view.id, host=body.host)

    async def events(call: Call) -> Answer:
        ident = call.params["id"]
        entry = mirror.vms.get(ident)
        if entry is None or not call.principal.sees(entry.view.owner):
            entry = mirror.vms.named(call.principal.name, ident)
        vm = entry.view.id if entry is not None else ident
        owner = None if call.principal.admin else call.principal.name
        try:  # the audit of ``ucloud replay audit --vm``, with the same tenancy
            lines = await audit_vm(gw.log, vm, owner=owner) if valid_token(vm) else []
        except NotFound:
            lines = []
        user = mirror.users.get(call.principal.name)
        since = user.view.created_at if user is not None and owner is not None else None
        if not lines or (since is not None and lines[0].at < since):  # a deleted namesake's
            raise NotFound("id", f"no VM {ident}")
        return Answer(200, [
            AuditLine(
                seq=line.seq, at=line.at, actor=line.actor, type=line.event,
                correlation=line.correlation, causation=line.causation, summary=line.summary,
            )
            for line in lines
        ])

    for_vm = (401, 404, 409)
    return [
        idempotent(gw, Endpoint(
            "POST", "/v1/vms", create, "Create a VM", status=202, body=VmCreate, answer=VmView,
            errors=(400, 401, 409),
        )),
        Endpoint(
            "GET", "/v1/vms", list_vms, "Your VMs (admin: all)", answer=list[VmView],
            errors=(401,),
        ),
        Endpoint(
            "GET", "/v1/vms/{id}", show, "One VM, by id or name", answer=VmView,
            errors=(401, 404),
        ),
        idempotent(gw, Endpoint(
            "POST", "/v1/vms/{id}/start", intent("start", start), "Start a stopped VM",
            status=202, answer=VmView, errors=for_vm,
        )),
        idempotent(gw, Endpoint(
            "POST", "/v1/vms/{id}/stop", intent("stop", stop), "Stop a VM", status=202,
            answer=VmView, errors=for_vm,
        )),
        idempotent(gw, Endpoint(
            "POST", "/v1/vms/{id}/migrate", intent("migrate", migrate),
            "Move a running VM to another host (admin may name it)", status=202, body=VmMigrate,
            optional_body=True, answer=VmView, errors=(400, 401, 403, 404, 409),
        )),
        Endpoint(
            "DELETE", "/v1/vms/{id}", intent("delete", delete), "Delete a VM", status=202,
            answer=VmView, errors=for_vm,
            description=deleted_later("VM", "its host"),
        ),
        Endpoint(
            "GET", "/v1/vms/{id}/events", events, "The VM's events, as audit lines",
            answer=list[AuditLine], errors=(401, 404),
        ),
    ]


def _head(call: Call) -> dict[str, Any]:
    return envelope(call.principal, call.new_id("request"))


def _by_id(entry: Entry[VmView]) -> str:
    return entry.view.id


def _raw(entry: Entry[VmView] | None, vm: str, before: Entry[VmView] | None = None) -> RawJson:
    # A VM deleted between the append and the answer: answer what it was.
    chosen = entry or before
    if chosen is None:
        raise NotFound("id", f"VM {vm} is gone")
    return RawJson(chosen.raw)
