"""The current-state views the projector keeps in etcd, and their keys.

Keys, relative to the configured prefix (``/ucloud/v1/``):

    vm/<id>                      VmView
    host/<id>                    HostView
    net/<id>                     NetView
    image/<id>                   ImageView
    file/<id>                    FileView
    user/<name>                  UserView (with SSH public keys; never the TOTP secret)
    order/<id>                   OrderView (the agreed price of a VM, fixed when placed)
    idx/mac/<mac>                vm id
    idx/owner/<owner>/<kind>/<id>   ""   (kind: vm, net, image, file, order)
    idx/vni/<vni>                net id
    idx/net/<net>/<vm>           ""   (VMs attached to a network)
    idx/name/<owner>/<kind>/<name>  id   (names are unique per owner and kind)
    idx/dns/<name>               vm id (a DNS name belongs to one VM)
    _checkpoint/<projection>     last applied stream sequence (decimal)
    _poison/<seq>                PoisonView: a message that did not decode

Values are msgspec JSON (deterministic), index values plain UTF-8. The key families of
``PROJECTED`` belong to the projector alone (a rebuild deletes them); other writers keep
their keys outside them. The ``*_key`` functions spell every key; ``decode_value`` reads one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from ucloud.events.resources import QuotaLimits
from ucloud.events.types import Ipam, Nic, Resources, RestartPolicy, StoreKind
from ucloud.lifecycle import Shown

VmStatus = Shown  # what a view of a VM shows (the VM lifecycle owns it)


class NicView(msgspec.Struct, frozen=True, kw_only=True):
    network: str
    mac: str
    address: str = ""  # EUI-64 address in the network's /64, when it has one
    # the reverse name its owner set for the address; unset (not stored) the default
    ptr: str | msgspec.UnsetType = msgspec.UNSET


class VmView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: str
    name: str
    spec: Resources
    image: str
    status: VmStatus
    nics: tuple[NicView, ...] = ()
    keys: tuple[str, ...] = ()
    restart: RestartPolicy = "always"
    host: str = ""
    reason: str = ""
    order: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # its DNS names, in the order they were added; unset (not stored) until it has one
    dns: tuple[str, ...] | msgspec.UnsetType = msgspec.UNSET

    @property
    def names(self) -> tuple[str, ...]:
        return self.dns if isinstance(self.dns, tuple) else ()


HostState = Literal["up", "down"]


class HostView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    capacity: Resources
    used: Resources
    vms: tuple[str, ...] = ()
    address: str = ""
    router: bool = False
    drained: bool = False
    state: HostState = "up"
    registered_at: datetime | None = None
    # vm id -> what its placement reserved, so that vm_released frees exactly that
    reserved: dict[str, Resources] = msgspec.field(default_factory=dict)


NetStatus = Literal["requested", "created", "failed", "deleting"]


class NetView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: str
    name: str
    ipam: Ipam
    status: NetStatus
    vni: int = 0
    prefix: str = ""
    reason: str = ""
    created_at: datetime | None = None


ImageStatus = Literal["requested", "created", "failed", "deleting"]


class ImageView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: str
    name: str
    file: str
    store: StoreKind
    public: bool
    status: ImageStatus
    size: int = 0
    checksum: str = ""
    reason: str = ""
    created_at: datetime | None = None


class FileView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: str
    name: str
    size: int
    sha256: str
    uploaded_at: datetime | None = None


class KeyView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    public_key: str


class UserView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    # omit_defaults: views of users that were never disabled nor given a quota are stored
    # as before those fields existed (keys is required so that it is always stored)
    name: str
    realm: str
    keys: tuple[KeyView, ...]
    created_at: datetime | None = None  # also the user's identity: see ``identity``
    disabled: bool = False  # tokens and logins refused; what it owns keeps running
    quota: QuotaLimits | None = None  # the admin's overrides of the configured limits


def identity(view: UserView) -> str:
    """What tells a user from an earlier one of the same name (deleted): its creation time."""
    return view.created_at.isoformat() if view.created_at is not None else ""


class OrderLineView(msgspec.Struct, frozen=True, kw_only=True):
    """One agreed price line; amounts are fixed-point decimal strings (``"0.0000008"``)."""

    item: str
    quantity: str
    unit_price: str  # per unit and running minute
    per_minute: str  # quantity x unit_price


class OrderView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: str
    vm: str
    spec: Resources
    currency: str
    lines: tuple[OrderLineView, ...]
    per_minute: str  # the sum of the lines, exact
    per_30_days: str  # per_minute x 43200, rounded as its quote was (older orders: exact)
    image: str = ""  # the image name the quote priced
    nics: int = 0
    placed_at: datetime | None = None


class PoisonView(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    subject: str
    error: str
    seen_by: str


View = VmView | HostView | NetView | ImageView | FileView | UserView | OrderView
Value = View | str  # what a projection key holds: a view, or an index's plain text

CHECKPOINT = "_checkpoint/"
POISON = "_poison/"
# The key families the projector owns under the prefix. Other writers keep their keys
# elsewhere (``alive/``, secrets): a rebuild deletes these families and nothing else.
VIEW_TYPES: dict[str, type[View]] = {
    "vm": VmView,
    "host": HostView,
    "net": NetView,
    "image": ImageView,
    "file": FileView,
    "user": UserView,
    "order": OrderView,
}
PROJECTED = (*(f"{kind}/" for kind in VIEW_TYPES), "idx/", POISON)


def vm_key(vm: str) -> str:
    return f"vm/{vm}"


def host_key(host: str) -> str:
    return f"host/{host}"


def net_key(net: str) -> str:
    return f"net/{net}"


def image_key(image: str) -> str:
    return f"image/{image}"


def file_key(file: str) -> str:
    return f"file/{file}"


def user_key(name: str) -> str:
    return f"user/{name}"


def order_key(order: str) -> str:
    return f"order/{order}"


def mac_key(mac: str) -> str:
    return f"idx/mac/{mac}"


def owner_key(owner: str, kind: str, id_: str) -> str:
    return f"idx/owner/{owner}/{kind}/{id_}"


def name_key(owner: str, kind: str, name: str) -> str:
    return f"idx/name/{owner}/{kind}/{name}"


def dns_key(name: str) -> str:
    return f"idx/dns/{name}"


def vni_key(vni: int) -> str:
    return f"idx/vni/{vni}"


def net_vm_key(net: str, vm: str) -> str:
    return f"idx/net/{net}/{vm}"


def checkpoint_key(projection: str = "main") -> str:
    return f"{CHECKPOINT}{projection}"


def poison_key(seq: int) -> str:
    return f"{POISON}{seq}"


def is_projected(key: str) -> bool:
    """Whether ``key`` (relative to the prefix) is one the projector writes."""
    kind, sep, rest = key.partition("/")
    if not sep or not rest:
        return False
    if kind in VIEW_TYPES:
        return "/" not in rest
    return kind in ("idx", "_poison")


_encoder = msgspec.json.Encoder(order="deterministic")
_decoders = {kind: msgspec.json.Decoder(cls) for kind, cls in VIEW_TYPES.items()}


def encode_value(value: msgspec.Struct | str) -> bytes:
    """The stored bytes of a view (deterministic msgspec JSON) or an index (UTF-8)."""
    if isinstance(value, str):
        return value.encode()
    return _encoder.encode(value)


def decode_value(key: str, data: bytes) -> Value:
    """The view or index value stored at ``key`` (relative to the prefix)."""
    kind = key.split("/", 1)[0]
    decoder = _decoders.get(kind)
    if decoder is None:
        return data.decode()
    view: View = decoder.decode(data)
    return view


__all__ = [
    "CHECKPOINT",
    "POISON",
    "PROJECTED",
    "VIEW_TYPES",
    "Value",
    "View",
    "checkpoint_key",
    "decode_value",
    "encode_value",
    "file_key",
    "identity",
    "host_key",
    "image_key",
    "is_projected",
    "mac_key",
    "name_key",
    "net_key",
    "net_vm_key",
    "order_key",
    "owner_key",
    "poison_key",
    "user_key",
    "vm_key",
    "vni_key",
    "FileView",
    "HostView",
    "ImageView",
    "KeyView",
    "NetView",
    "Nic",
    "NicView",
    "OrderLineView",
    "OrderView",
    "PoisonView",
    "UserView",
    "VmStatus",
    "VmView",
]
