"""Image stores: where validated raw images live, and how VM disks are made from them.

One small interface, ``ImageStore``, with two implementations: ``FsStore`` here (a
directory, the default) and ``RbdStore`` in ``rbd_store`` (a Ceph RBD pool). Methods are
synchronous (they run qemu-img or librbd); async callers use ``asyncio.to_thread``.

The filesystem store keeps::

    <images>/<image id>.raw                 base images, read-only once imported
    <disks>/<vm id>/root-<image id>.qcow2   a VM's disk: a qcow2 overlay on the raw base
    <disks>/<vm id>/<name>.qcow2            a VM's blank disk (the hdd)

Everything appears by an atomic rename of a temporary file, so a failure leaves no partial
image or disk behind; every operation is idempotent. An image with clones is not deleted.
``open_store(config, kind)`` builds the store a ``StoreKind`` names; the RBD module is
expected to offer ``RbdStore.from_config(config)``.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Literal, Protocol, cast

import msgspec

from ucloud.config import Config
from ucloud.errors import ConfigError, InputError, NotFound, Refused, UcloudError
from ucloud.events.base import valid_token
from ucloud.ids import new_id
from ucloud.images.validate import copy_into

MIB = 1 << 20
ROOT_PREFIX = "root-"
_NODE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")
_DISK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_QEMU_IMG_TIMEOUT_S = 120.0


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


def open_store(config: Config, kind: str) -> ImageStore:
    """The store named ``kind`` ("fs" or "rbd") as ``config`` sets it up."""
    if kind == "fs":
        return FsStore(config.paths.images, config.paths.disks)
    if kind == "rbd":
        try:
            module = importlib.import_module("ucloud.images.rbd_store")
        except ImportError as exc:
            raise ConfigError("images", f"the rbd store is not available: {exc}") from exc
        return cast(ImageStore, module.RbdStore.from_config(config))
    raise InputError("store", f"no image store {kind!r}; use fs or rbd")


class FsStore:
    """Raw base images in a directory; VM disks are qcow2 overlays backed by them."""

    kind = "fs"

    def __init__(self, images: Path, disks: Path) -> None:
        self.images = images.absolute()
        self.disks = disks.absolute()

    def image_path(self, image_id: str) -> Path:
        _token(image_id, "image")
        return self.images / f"{image_id}.raw"

    def import_raw(self, image_id: str, source: Path) -> int:
        final = self.image_path(image_id)
        if final.is_file():
            return final.stat().st_size
        self.images.mkdir(parents=True, exist_ok=True)
        tmp = self.images / f".{image_id}.{new_id()[-12:]}.tmp"
        try:
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                size = copy_into(fd, tmp)
            finally:
                os.close(fd)
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _sync_dir(self.images)
        return size

    def has_image(self, image_id: str) -> bool:
        return self.image_path(image_id).is_file()

    def clones(self, image_id: str) -> list[str]:
        """The VMs whose root disk is a clone of the image."""
        _token(image_id, "image")
        if not self.disks.is_dir():
            return []
        return sorted(p.parent.name for p in self.disks.glob(f"*/{ROOT_PREFIX}{image_id}.qcow2"))

    def delete_image(self, image_id: str) -> None:
        users = self.clones(image_id)
        if users:
            raise Refused(
                "image", f"{len(users)} VM disk(s) are clones of it: {', '.join(users[:5])}"
            )
        self.image_path(image_id).unlink(missing_ok=True)

    def clone_disk(self, image_id: str, vm_id: str, size_mib: int) -> DiskRef:
        base = self.image_path(image_id)
        target = self._vm_dir(vm_id) / f"{ROOT_PREFIX}{image_id}.qcow2"
        if target.is_file():
            return DiskRef(store="fs", path=str(target))
        if not base.is_file():
            raise NotFound("image", f"image {image_id} is not in the store")
        need = -(-base.stat().st_size // MIB)
        if size_mib < need:
            raise InputError("ssd", f"{size_mib} MiB is smaller than the image ({need} MiB)")
        self._create(target, size_mib, ["-F", "raw", "-b", str(base)])
        return DiskRef(store="fs", path=str(target))

    def create_blank(self, vm_id: str, name: str, size_mib: int) -> DiskRef:
        if not _DISK_NAME.match(name) or name.startswith(ROOT_PREFIX):
            raise InputError("name", f"{name!r} is not a disk name (a-z, 0-9, '_', '-')")
        target = self._vm_dir(vm_id) / f"{name}.qcow2"
        if not target.is_file():
            self._create(target, size_mib, [])
        return DiskRef(store="fs", path=str(target))

    def delete_disks(self, vm_id: str) -> None:
        path = self._vm_dir(vm_id)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)

    def qemu_blockdev(self, disk: DiskRef, node: str) -> list[str]:
        if disk.store != "fs":
            raise InputError("disk", f"a {disk.store} disk is not a filesystem store disk")
        if not _NODE.match(node):
            raise InputError("node", f"{node!r} is not a QEMU node name")
        path = Path(disk.path)
        if not path.is_absolute() or self.disks not in path.parents:
            raise InputError("disk", f"{disk.path} is not a disk of this store")
        spec = f"driver=qcow2,node-name={node},file.driver=file,file.filename={_escape(str(path))}"
        return ["-blockdev", spec, "-device", f"virtio-blk-pci,drive={node},id={node}"]

    def _vm_dir(self, vm_id: str) -> Path:
        _token(vm_id, "vm")
        return self.disks / vm_id

    def _create(self, target: Path, size_mib: int, backing: list[str]) -> None:
        if size_mib < 1:
            raise InputError("size", "a disk needs at least 1 MiB")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{new_id()[-12:]}.tmp")
        argv = ["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(tmp), f"{size_mib}M"]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=_QEMU_IMG_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            if done.returncode != 0:
                raise UcloudError(f"qemu-img create {target.name}: {done.stderr.strip()[-300:]}")
            os.replace(tmp, target)
        except FileNotFoundError as exc:
            raise UcloudError("qemu-img is not installed (Debian package qemu-utils)") from exc
        finally:
            tmp.unlink(missing_ok=True)


def _token(value: str, field: str) -> None:
    if not valid_token(value):
        raise InputError(field, f"{value!r} is not a valid id")


def _escape(value: str) -> str:
    """A value inside a QEMU option list: commas doubled."""
    return value.replace(",", ",,")


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
