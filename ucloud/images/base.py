"""What every image store is: the ``ImageStore`` interface, the ``DiskRef`` it hands out,
and the checks and names both stores share.

Two implementations: ``store.FsStore`` (a directory, the default) and ``rbd_store.RbdStore``
(a Ceph RBD pool); ``open.open_store`` picks one. Methods are synchronous (they run qemu-img
or librbd); async callers use ``asyncio.to_thread``. Every operation is idempotent, and
whatever a store makes appears complete or not at all (written under a temporary name,
then renamed). An image with clones is not deleted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Protocol

import msgspec

from ucloud.errors import InputError, Refused
from ucloud.events.base import valid_token
from ucloud.ids import new_id

MIB = 1 << 20
_NODE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")


class DiskRef(msgspec.Struct, frozen=True, kw_only=True):
    store: Literal["fs", "rbd"]
    path: str  # fs: absolute path of the qcow2 overlay / blank disk; rbd: "pool/name"


class ImageStore(Protocol):
    kind: str  # "fs" | "rbd"

    def import_raw(self, image_id: str, source: Path) -> int:
        """Copy the validated RAW file ``source`` in as the base image; returns its bytes.
        Idempotent; atomic (no partial image is left on failure)."""
        ...

    def has_image(self, image_id: str) -> bool: ...

    def delete_image(self, image_id: str) -> None:
        """Remove the base image; ``Refused`` while clones of it exist."""
        ...

    def clone_disk(self, image_id: str, vm_id: str, size_mib: int) -> DiskRef:
        """A copy-on-write clone of the image for the VM, grown to ``size_mib``."""
        ...

    def create_blank(self, vm_id: str, name: str, size_mib: int) -> DiskRef: ...

    def delete_disks(self, vm_id: str) -> None: ...

    def qemu_blockdev(self, disk: DiskRef, node: str) -> list[str]:
        """QEMU arguments attaching ``disk`` as a virtio disk named ``node``."""
        ...


def check_id(value: str, field: str) -> None:
    """An image or VM id, before it becomes part of a file or RBD image name."""
    if not valid_token(value):
        raise InputError(field, f"{value!r} is not a valid id")


def check_clone_size(size_mib: int, image_bytes: int) -> None:
    need = -(-image_bytes // MIB)
    if size_mib < need:
        raise InputError("ssd", f"{size_mib} MiB is smaller than the image ({need} MiB)")


def check_disk_size(size_mib: int) -> None:
    if size_mib < 1:
        raise InputError("size", "a disk needs at least 1 MiB")


def refuse_if_cloned(users: list[str]) -> None:
    """``delete_image``'s guard: ``users`` are the disks cloned from the image."""
    if users:
        raise Refused("image", f"{len(users)} VM disk(s) are clones of it: {', '.join(users[:5])}")


def temporary_name(final: str) -> str:
    """A hidden name, unique to this attempt, to write ``final`` under before renaming it."""
    return f".{final}.{new_id()[-12:]}.tmp"


def virtio_disk(blockdev: str, node: str) -> list[str]:
    """QEMU arguments: the block node ``blockdev`` (named ``node``) as a virtio disk."""
    if not _NODE.match(node):
        raise InputError("node", f"{node!r} is not a QEMU node name")
    return ["-blockdev", blockdev, "-device", f"virtio-blk-pci,drive={node},id={node}"]


def escape(value: str) -> str:
    """A value inside a QEMU option list: commas doubled."""
    return value.replace(",", ",,")
