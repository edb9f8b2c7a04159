"""Events of the ``net``, ``pool``, ``image``, ``file`` and ``user`` aggregates."""

from __future__ import annotations

from typing import ClassVar

from ucloud.events.base import Event
from ucloud.events.types import Ipam, StoreKind


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
)
