"""Events of the ``net``, ``pool``, ``image``, ``file`` and ``user`` aggregates."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from ucloud.events.base import Event
from ucloud.events.types import Ipam, Resources, StoreKind


class NetEvent(Event, frozen=True, kw_only=True):
    net: str
    aggregate: ClassVar[str] = "net"


class NetRequested(NetEvent, frozen=True, kw_only=True, tag="net.requested"):
    owner: str
    name: str
    ipam: Ipam = "none"


class NetCreated(NetEvent, frozen=True, kw_only=True, tag="net.created"):
    vni: int
    prefix: str = ""
    ipam: Ipam = "none"


class NetFailed(NetEvent, frozen=True, kw_only=True, tag="net.failed"):
    reason: str


class NetDeleteRequested(NetEvent, frozen=True, kw_only=True, tag="net.delete_requested"):
    pass


class NetDeleted(NetEvent, frozen=True, kw_only=True, tag="net.deleted"):
    pass


class PoolEvent(Event, frozen=True, kw_only=True):
    """The allocator singletons: ``pool.vni`` and ``pool.prefix``."""

    pool: str
    aggregate: ClassVar[str] = "pool"


class PoolVniAllocated(PoolEvent, frozen=True, kw_only=True, tag="pool.vni_allocated"):
    vni: int
    net: str


class PoolVniReleased(PoolEvent, frozen=True, kw_only=True, tag="pool.vni_released"):
    vni: int
    net: str


class PoolPrefixAllocated(PoolEvent, frozen=True, kw_only=True, tag="pool.prefix_allocated"):
    prefix: str
    net: str


class PoolPrefixReleased(PoolEvent, frozen=True, kw_only=True, tag="pool.prefix_released"):
    prefix: str
    net: str


class ImageEvent(Event, frozen=True, kw_only=True):
    image: str
    aggregate: ClassVar[str] = "image"


class ImageRequested(ImageEvent, frozen=True, kw_only=True, tag="image.requested"):
    owner: str
    name: str
    file: str
    store: StoreKind = "fs"
    public: bool = False
    # the file's name in the owner's files and the content the request was made for
    file_name: str = ""
    file_sha256: str = ""


class ImageCreated(ImageEvent, frozen=True, kw_only=True, tag="image.created"):
    size: int
    checksum: str


class ImageFailed(ImageEvent, frozen=True, kw_only=True, tag="image.failed"):
    reason: str


class ImageDeleteRequested(ImageEvent, frozen=True, kw_only=True, tag="image.delete_requested"):
    pass


class ImageDeleted(ImageEvent, frozen=True, kw_only=True, tag="image.deleted"):
    pass


class FileEvent(Event, frozen=True, kw_only=True):
    file: str
    aggregate: ClassVar[str] = "file"


class FileUploaded(FileEvent, frozen=True, kw_only=True, tag="file.uploaded"):
    owner: str
    name: str
    size: int
    sha256: str
    mtime_ns: int = 0  # the file's modification time: filescan skips what it has recorded


class FileDeleted(FileEvent, frozen=True, kw_only=True, tag="file.deleted"):
    pass


class UserEvent(Event, frozen=True, kw_only=True):
    """Users are named by ``user``; their TOTP secrets never enter the log."""

    user: str
    aggregate: ClassVar[str] = "user"


class UserCreated(UserEvent, frozen=True, kw_only=True, tag="user.created"):
    realm: str


class UserDeleted(UserEvent, frozen=True, kw_only=True, tag="user.deleted"):
    pass


class UserKeyAdded(UserEvent, frozen=True, kw_only=True, tag="user.key_added"):
    key: str
    name: str
    public_key: str


class UserKeyRemoved(UserEvent, frozen=True, kw_only=True, tag="user.key_removed"):
    key: str


class UserDisabled(UserEvent, frozen=True, kw_only=True, tag="user.disabled"):
    """The user's tokens and logins are refused from now on; what it owns keeps running."""


class UserEnabled(UserEvent, frozen=True, kw_only=True, tag="user.enabled"):
    pass


class UserTotpRotated(UserEvent, frozen=True, kw_only=True, tag="user.totp_rotated"):
    """The user replaced its TOTP secret (the secret itself stays out of the log)."""


class QuotaLimits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-user limits; a field left None takes the configured default (0: unlimited)."""

    vms: int | None = None
    cores: int | None = None
    ram_mib: int | None = None
    ssd_mib: int | None = None
    hdd_mib: int | None = None
    networks: int | None = None
    ipv4: int | None = None
    dns_names: int | None = None


class UserQuotaSet(UserEvent, frozen=True, kw_only=True, tag="user.quota_set"):
    """The admin's overrides of the user's limits, all of them (the last one counts)."""

    limits: QuotaLimits = QuotaLimits()


AdmittedKind = Literal["vm", "net"]


class UserAdmitted(UserEvent, frozen=True, kw_only=True, tag="user.admitted"):
    """A VM or network counted against the user's quota before its request is appended.

    Appended with OCC on the user aggregate, so of concurrent creates only as many are
    admitted as the quota has room for.
    """

    kind: AdmittedKind
    resource: str  # the VM's or network's id
    spec: Resources | None = None  # a VM's allocation


RESOURCE_EVENTS = (
    NetRequested,
    NetCreated,
    NetFailed,
    NetDeleteRequested,
    NetDeleted,
    PoolVniAllocated,
    PoolVniReleased,
    PoolPrefixAllocated,
    PoolPrefixReleased,
    ImageRequested,
    ImageCreated,
    ImageFailed,
    ImageDeleteRequested,
    ImageDeleted,
    FileUploaded,
    FileDeleted,
    UserCreated,
    UserDeleted,
    UserKeyAdded,
    UserKeyRemoved,
    UserDisabled,
    UserEnabled,
    UserTotpRotated,
    UserQuotaSet,
    UserAdmitted,
)
