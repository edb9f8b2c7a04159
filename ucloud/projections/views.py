"""The current-state views the projector keeps in etcd, and their keys.

Keys, relative to the configured prefix (``/ucloud/v1/``):

    vm/<id>                      VmView
    host/<id>                    HostView
    net/<id>                     NetView
    image/<id>                   ImageView
    file/<id>                    FileView
    user/<name>                  UserView (with SSH public keys; never the TOTP secret)
    idx/mac/<mac>                vm id
    idx/owner/<owner>/<kind>/<id>   ""   (kind: vm, net, image, file)
    idx/vni/<vni>                net id
    idx/net/<net>/<vm>           ""   (VMs attached to a network)
    idx/name/<owner>/<kind>/<name>  id   (names are unique per owner and kind)
    _checkpoint/<projection>     last applied stream sequence (decimal)
    _poison/<seq>                PoisonView: a message that did not decode

Values are msgspec JSON (deterministic), index values plain UTF-8.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from ucloud.events.types import Ipam, Nic, Resources, RestartPolicy, StoreKind

VmStatus = Literal[
    "requested",  # accepted, waiting for the scheduler
    "scheduled",  # capacity reserved on a host, not started yet
    "starting",
    "running",
    "stopping",
    "stopped",
    "crashed",  # died unasked; hostd restarts it per its restart policy
    "deleting",
    "failed",  # could not be scheduled (reason says why)
    "migrating",
    "lost",  # its host died and its disk was local
]


class NicView(msgspec.Struct, frozen=True, kw_only=True):
    network: str
    mac: str
    address: str = ""  # EUI-64 address in the network's /64, when it has one


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


class UserView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    realm: str
    keys: tuple[KeyView, ...] = ()
    created_at: datetime | None = None


class PoisonView(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    subject: str
    error: str
    seen_by: str


__all__ = [
    "FileView",
    "HostView",
    "ImageView",
    "KeyView",
    "NetView",
    "Nic",
    "NicView",
    "PoisonView",
    "UserView",
    "VmStatus",
    "VmView",
]
