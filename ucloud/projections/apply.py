"""How each event changes the views: ``apply(state, event) -> list[Op]``.

Theory of operation. ``state`` is a read-only mapping from keys (relative to the
projection prefix, see ``views``) to the current decoded values: view Structs, or the
plain text of an index. For one event, ``changes`` returns the keys it sets (to a new
value) or removes (``None``); ``apply`` turns those into store operations. Every rule of
the projection lives here and nowhere else.

Rules that keep a replay equal to the live projection byte for byte:

- Only the event and ``state`` decide; no clock, no I/O, no randomness. Timestamps come
  from the events' ``at``.
- Every change is an absolute value (never "add one"), so folding an event again onto the
  state it already produced changes nothing; the checkpoint skips it in any case.
- Events about aggregates the projection does not know (a status change of a VM that was
  never requested, a release on an unregistered host) change nothing, as do events that
  are commands or allocator bookkeeping (``host.vm_start``, ``pool.*``).
- An index is removed only while it still points at the aggregate being removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from ucloud import events as ev
from ucloud.errors import InputError
from ucloud.events import Event
from ucloud.lifecycle import SHOWN, where
from ucloud.net_addr import eui64, normalize_mac
from ucloud.projections.ops import Delete, Op, Put
from ucloud.projections.views import (
    FileView,
    HostView,
    ImageView,
    KeyView,
    NetView,
    NicView,
    OrderLineView,
    OrderView,
    UserView,
    Value,
    VmView,
    dns_key,
    encode_value,
    file_key,
    host_key,
    image_key,
    mac_key,
    name_key,
    net_key,
    net_vm_key,
    order_key,
    owner_key,
    user_key,
    vm_key,
    vni_key,
)
from ucloud.replay.prices import per_30_days, plain

State = Mapping[str, Value]
Change = tuple[str, Value | None]  # key and its new value; None removes the key

E = TypeVar("E", bound=Event)
_RULES: dict[type[Event], Callable[[State, Any], list[Change]]] = {}


def changes(state: State, event: Event) -> list[Change]:
    """The keys ``event`` sets or removes, given the current ``state``."""
    rule = _RULES.get(type(event))
    return rule(state, event) if rule is not None else []


def apply(state: State, event: Event) -> list[Op]:
    """The store operations of ``event`` (keys relative to the projection prefix)."""
    return [to_op(key, value) for key, value in changes(state, event)]


def to_op(key: str, value: Value | None) -> Op:
    return Delete(key) if value is None else Put(key, encode_value(value))


def _on(*types: type[E]) -> Callable[[Callable[[State, E], list[Change]]], None]:
    def register(rule: Callable[[State, E], list[Change]]) -> None:
        for cls in types:
            _RULES[cls] = rule

    return register


def _get(state: State, key: str, cls: type[Any]) -> Any:
    value = state.get(key)
    return value if isinstance(value, cls) else None


def _mac(value: str) -> str:
    try:
        return normalize_mac(value)
    except InputError:
        return value.lower()


def _address(state: State, network: str, mac: str) -> str:
    net: NetView | None = _get(state, net_key(network), NetView)
    if net is None or not net.prefix.endswith("/64"):
        return ""
    try:
        return eui64(net.prefix, mac)
    except InputError:
        return ""


def _unindex(state: State, key: str, points_at: str) -> list[Change]:
    return [(key, None)] if state.get(key) == points_at else []


# --- vm ---------------------------------------------------------------------------------


@_on(ev.VmRequested)
def _vm_requested(state: State, e: ev.VmRequested) -> list[Change]:
    if _get(state, vm_key(e.vm), VmView) is not None:
        return []
    nics = tuple(
        NicView(network=n.network, mac=_mac(n.mac), address=_address(state, n.network, n.mac))
        for n in e.nics
    )
    view = VmView(
        id=e.vm, owner=e.owner, name=e.name, spec=e.spec, image=e.image, status="requested",
        nics=nics, keys=e.keys, restart=e.restart, order=e.order, created_at=e.at,
        updated_at=e.at,
    )
    out: list[Change] = [
        (vm_key(e.vm), view),
        (owner_key(e.owner, "vm", e.vm), ""),
        (name_key(e.owner, "vm", e.name), e.vm),
    ]
    for nic in nics:
        out += [(mac_key(nic.mac), e.vm), (net_vm_key(nic.network, e.vm), "")]
    return out


def _vm_update(state: State, vm: str, at: datetime, **fields: Any) -> list[Change]:
    view: VmView | None = _get(state, vm_key(vm), VmView)
    if view is None:
        return []
    return [(vm_key(vm), msgspec.structs.replace(view, updated_at=at, **fields))]


@_on(*SHOWN)
def _vm_status(state: State, e: ev.VmEvent) -> list[Change]:
    # The status the lifecycle shows after the event; a fact that says where the VM is
    # moves it there; the reason is the event's (a fact without one clears it).
    fields: dict[str, Any] = {"status": SHOWN[type(e)], "reason": getattr(e, "reason", "")}
    host = where(e)
    if host is not None:
        fields["host"] = host
    return _vm_update(state, e.vm, e.at, **fields)


@_on(ev.VmDeleted)
def _vm_deleted(state: State, e: ev.VmDeleted) -> list[Change]:
    view: VmView | None = _get(state, vm_key(e.vm), VmView)
    if view is None:
        return []
    out: list[Change] = [(vm_key(e.vm), None), (owner_key(view.owner, "vm", e.vm), None)]
    out += _unindex(state, name_key(view.owner, "vm", view.name), e.vm)
    for nic in view.nics:
        out += _unindex(state, mac_key(nic.mac), e.vm)
        out.append((net_vm_key(nic.network, e.vm), None))
    for name in view.names:
        out += _unindex(state, dns_key(name), e.vm)
    return out


@_on(ev.VmDnsNameAdded)
def _vm_dns_name_added(state: State, e: ev.VmDnsNameAdded) -> list[Change]:
    view: VmView | None = _get(state, vm_key(e.vm), VmView)
    if view is None or e.name in view.names or state.get(dns_key(e.name)) is not None:
        return []
    return [*_vm_update(state, e.vm, e.at, dns=(*view.names, e.name)), (dns_key(e.name), e.vm)]


@_on(ev.VmDnsNameRemoved)
def _vm_dns_name_removed(state: State, e: ev.VmDnsNameRemoved) -> list[Change]:
    view: VmView | None = _get(state, vm_key(e.vm), VmView)
    if view is None or e.name not in view.names:
        return []
    kept = tuple(n for n in view.names if n != e.name)
    return [*_vm_update(state, e.vm, e.at, dns=kept), *_unindex(state, dns_key(e.name), e.vm)]


@_on(ev.VmPtrSet)
def _vm_ptr_set(state: State, e: ev.VmPtrSet) -> list[Change]:
    view: VmView | None = _get(state, vm_key(e.vm), VmView)
    if view is None:
        return []
    nics = tuple(
        msgspec.structs.replace(n, ptr=e.name or msgspec.UNSET) if n.address == e.address else n
        for n in view.nics
    )
    return _vm_update(state, e.vm, e.at, nics=nics)


# --- host and the capacity ledger -------------------------------------------------------


@_on(ev.HostRegistered)
def _host_registered(state: State, e: ev.HostRegistered) -> list[Change]:
    view: HostView | None = _get(state, host_key(e.host), HostView)
    if view is None:
        view = HostView(
            id=e.host, capacity=e.capacity, used=ev.NOTHING, address=e.address,
            router=e.router, registered_at=e.at,
        )
    else:  # a re-registration: the ledger carries on
        view = msgspec.structs.replace(
            view, capacity=e.capacity, address=e.address, router=e.router
        )
    return [(host_key(e.host), view)]


_HOST_FLAGS: dict[type[ev.HostEvent], dict[str, Any]] = {
    ev.HostDrained: {"drained": True},
    ev.HostUndrained: {"drained": False},
    ev.HostDown: {"state": "down"},
    ev.HostUp: {"state": "up"},
}


@_on(*_HOST_FLAGS)
def _host_flag(state: State, e: ev.HostEvent) -> list[Change]:
    view: HostView | None = _get(state, host_key(e.host), HostView)
    if view is None:
        return []
    return [(host_key(e.host), msgspec.structs.replace(view, **_HOST_FLAGS[type(e)]))]


@_on(ev.HostVmPlaced)
def _host_vm_placed(state: State, e: ev.HostVmPlaced) -> list[Change]:
    view: HostView | None = _get(state, host_key(e.host), HostView)
    if view is None or e.vm in view.reserved:
        return []
    updated = msgspec.structs.replace(
        view,
        used=view.used + e.resources,
        vms=(*view.vms, e.vm),
        reserved={**view.reserved, e.vm: e.resources},
    )
    return [(host_key(e.host), updated)]


@_on(ev.HostVmReleased)
def _host_vm_released(state: State, e: ev.HostVmReleased) -> list[Change]:
    view: HostView | None = _get(state, host_key(e.host), HostView)
    if view is None or e.vm not in view.reserved:
        return []
    updated = msgspec.structs.replace(
        view,
        used=view.used - view.reserved[e.vm],
        vms=tuple(vm for vm in view.vms if vm != e.vm),
        reserved={vm: r for vm, r in view.reserved.items() if vm != e.vm},
    )
    return [(host_key(e.host), updated)]


# --- networks ---------------------------------------------------------------------------


@_on(ev.NetRequested)
def _net_requested(state: State, e: ev.NetRequested) -> list[Change]:
    if _get(state, net_key(e.net), NetView) is not None:
        return []
    view = NetView(
        id=e.net, owner=e.owner, name=e.name, ipam=e.ipam, status="requested", created_at=e.at
    )
    return [
        (net_key(e.net), view),
        (owner_key(e.owner, "net", e.net), ""),
        (name_key(e.owner, "net", e.name), e.net),
    ]


def _net_update(state: State, net: str, **fields: Any) -> list[Change]:
    view: NetView | None = _get(state, net_key(net), NetView)
    if view is None:
        return []
    return [(net_key(net), msgspec.structs.replace(view, **fields))]


@_on(ev.NetCreated)
def _net_created(state: State, e: ev.NetCreated) -> list[Change]:
    out = _net_update(
        state, e.net, status="created", vni=e.vni, prefix=e.prefix, ipam=e.ipam, reason=""
    )
    if not out:
        return []
    return [*out, (vni_key(e.vni), e.net)]


@_on(ev.NetFailed)
def _net_failed(state: State, e: ev.NetFailed) -> list[Change]:
    return _net_update(state, e.net, status="failed", reason=e.reason)


@_on(ev.NetDeleteRequested)
def _net_delete_requested(state: State, e: ev.NetDeleteRequested) -> list[Change]:
    return _net_update(state, e.net, status="deleting")


@_on(ev.NetDeleted)
def _net_deleted(state: State, e: ev.NetDeleted) -> list[Change]:
    view: NetView | None = _get(state, net_key(e.net), NetView)
    if view is None:
        return []
    out: list[Change] = [(net_key(e.net), None), (owner_key(view.owner, "net", e.net), None)]
    out += _unindex(state, name_key(view.owner, "net", view.name), e.net)
    if view.vni:
        out += _unindex(state, vni_key(view.vni), e.net)
    return out


# --- images and files -------------------------------------------------------------------


@_on(ev.ImageRequested)
def _image_requested(state: State, e: ev.ImageRequested) -> list[Change]:
    if _get(state, image_key(e.image), ImageView) is not None:
        return []
    view = ImageView(
        id=e.image, owner=e.owner, name=e.name, file=e.file, store=e.store, public=e.public,
        status="requested", created_at=e.at,
    )
    return [
        (image_key(e.image), view),
        (owner_key(e.owner, "image", e.image), ""),
        (name_key(e.owner, "image", e.name), e.image),
    ]


def _image_update(state: State, image: str, **fields: Any) -> list[Change]:
    view: ImageView | None = _get(state, image_key(image), ImageView)
    if view is None:
        return []
    return [(image_key(image), msgspec.structs.replace(view, **fields))]


@_on(ev.ImageCreated)
def _image_created(state: State, e: ev.ImageCreated) -> list[Change]:
    return _image_update(
        state, e.image, status="created", size=e.size, checksum=e.checksum, reason=""
    )


@_on(ev.ImageFailed)
def _image_failed(state: State, e: ev.ImageFailed) -> list[Change]:
    return _image_update(state, e.image, status="failed", reason=e.reason)


@_on(ev.ImageDeleteRequested)
def _image_delete_requested(state: State, e: ev.ImageDeleteRequested) -> list[Change]:
    return _image_update(state, e.image, status="deleting")


@_on(ev.ImageDeleted)
def _image_deleted(state: State, e: ev.ImageDeleted) -> list[Change]:
    view: ImageView | None = _get(state, image_key(e.image), ImageView)
    if view is None:
        return []
    out: list[Change] = [
        (image_key(e.image), None),
        (owner_key(view.owner, "image", e.image), None),
    ]
    return out + _unindex(state, name_key(view.owner, "image", view.name), e.image)


@_on(ev.FileUploaded)
def _file_uploaded(state: State, e: ev.FileUploaded) -> list[Change]:
    old: FileView | None = _get(state, file_key(e.file), FileView)
    out: list[Change] = []
    if old is not None and (old.owner, old.name) != (e.owner, e.name):
        out += [(owner_key(old.owner, "file", e.file), None)]
        out += _unindex(state, name_key(old.owner, "file", old.name), e.file)
    view = FileView(
        id=e.file, owner=e.owner, name=e.name, size=e.size, sha256=e.sha256, uploaded_at=e.at
    )
    return out + [
        (file_key(e.file), view),
        (owner_key(e.owner, "file", e.file), ""),
        (name_key(e.owner, "file", e.name), e.file),
    ]


@_on(ev.FileDeleted)
def _file_deleted(state: State, e: ev.FileDeleted) -> list[Change]:
    view: FileView | None = _get(state, file_key(e.file), FileView)
    if view is None:
        return []
    out: list[Change] = [(file_key(e.file), None), (owner_key(view.owner, "file", e.file), None)]
    return out + _unindex(state, name_key(view.owner, "file", view.name), e.file)


# --- users and their keys ---------------------------------------------------------------


@_on(ev.UserCreated)
def _user_created(state: State, e: ev.UserCreated) -> list[Change]:
    if _get(state, user_key(e.user), UserView) is not None:
        return []
    return [(user_key(e.user), UserView(name=e.user, realm=e.realm, keys=(), created_at=e.at))]


@_on(ev.UserDeleted)
def _user_deleted(state: State, e: ev.UserDeleted) -> list[Change]:
    if _get(state, user_key(e.user), UserView) is None:
        return []
    return [(user_key(e.user), None)]


@_on(ev.UserKeyAdded)
def _user_key_added(state: State, e: ev.UserKeyAdded) -> list[Change]:
    view: UserView | None = _get(state, user_key(e.user), UserView)
    if view is None:
        return []
    key = KeyView(id=e.key, name=e.name, public_key=e.public_key)
    keys = (*(k for k in view.keys if k.id != e.key), key)
    return [(user_key(e.user), msgspec.structs.replace(view, keys=keys))]


@_on(ev.UserKeyRemoved)
def _user_key_removed(state: State, e: ev.UserKeyRemoved) -> list[Change]:
    view: UserView | None = _get(state, user_key(e.user), UserView)
    if view is None or all(k.id != e.key for k in view.keys):
        return []
    keys = tuple(k for k in view.keys if k.id != e.key)
    return [(user_key(e.user), msgspec.structs.replace(view, keys=keys))]


@_on(ev.UserDisabled, ev.UserEnabled)
def _user_disabled(state: State, e: ev.UserEvent) -> list[Change]:
    view: UserView | None = _get(state, user_key(e.user), UserView)
    disabled = isinstance(e, ev.UserDisabled)
    if view is None or view.disabled == disabled:
        return []
    return [(user_key(e.user), msgspec.structs.replace(view, disabled=disabled))]


@_on(ev.UserQuotaSet)
def _user_quota_set(state: State, e: ev.UserQuotaSet) -> list[Change]:
    view: UserView | None = _get(state, user_key(e.user), UserView)
    if view is None or (view.quota or ev.QuotaLimits()) == e.limits:
        return []
    return [(user_key(e.user), msgspec.structs.replace(view, quota=e.limits))]


# --- orders -----------------------------------------------------------------------------


@_on(ev.OrderPlaced)
def _order_placed(state: State, e: ev.OrderPlaced) -> list[Change]:
    if _get(state, order_key(e.order), OrderView) is not None:
        return []
    per_minute = sum((line.per_minute for line in e.lines), Decimal(0))
    view = OrderView(
        id=e.order, owner=e.owner, vm=e.vm, spec=e.spec, currency=e.currency,
        lines=tuple(
            OrderLineView(
                item=line.item, quantity=plain(line.quantity),
                unit_price=plain(line.unit_price), per_minute=plain(line.per_minute),
            )
            for line in e.lines
        ),
        per_minute=plain(per_minute), per_30_days=plain(per_30_days(per_minute, e.decimals)),
        image=e.image, nics=e.nics, placed_at=e.at,
    )
    return [(order_key(e.order), view), (owner_key(e.owner, "order", e.order), "")]

