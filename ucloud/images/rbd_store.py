"""The Ceph RBD image store: base images and VM disks as RBD images in one pool.

Layout in the pool (``[images] rbd_pool``)::

    img-<image id>          a base image, with the protected snapshot ``base``
    vm-<vm id>-root         a VM's disk: a clone of ``img-<image id>@base``, grown
    vm-<vm id>-<name>       a VM's blank disk (the hdd); names have no '-', so the last
                            '-' always separates the VM id from the disk name

An import is written under a temporary name and renamed to ``img-<id>`` only once the
snapshot is taken and protected, so ``img-<id>`` always means a complete image; a failure
removes the temporary image. Clones and blank disks converge: asking again for a disk that
exists returns it (grown if it was left smaller). The protection of ``base`` is what keeps
an image with clones alive; ``delete_image`` refuses while the snapshot has children.

librados/librbd come from Debian's python3-rados and python3-rbd and are imported only
when the store is used, so the rest of ucloud runs without Ceph. Each operation connects
and disconnects: stores are opened per request and never closed, and a connection held
by an unclosed store would leak.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ucloud.config import Config
from ucloud.errors import ConfigError, InputError, NotFound, Refused, UcloudError
from ucloud.events.base import valid_token
from ucloud.images.base import (
    MIB,
    DiskRef,
    check_clone_size,
    check_disk_size,
    check_id,
    escape,
    refuse_if_cloned,
    temporary_name,
    virtio_disk,
)

SNAPSHOT = "base"
CHUNK = 4 * MIB  # one RBD object at the default order 22
CONNECT_TIMEOUT_S = 30
_DISK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_ZEROS = bytes(CHUNK)


def _librbd() -> tuple[Any, Any]:
    try:
        return importlib.import_module("rados"), importlib.import_module("rbd")
    except ImportError as exc:
        raise ConfigError(
            "images", f"the rbd store needs python3-rados and python3-rbd: {exc}"
        ) from exc


class RbdStore:
    """Raw base images as RBD images; VM disks are clones of their protected snapshot."""

    kind = "rbd"

    def __init__(self, pool: str, conf: str = "", client: str = "admin") -> None:
        self.pool = pool
        self.conf = conf  # "" means Ceph's default, /etc/ceph/ceph.conf
        self.client = client

    @classmethod
    def from_config(cls, config: Config) -> RbdStore:
        images = config.images
        return cls(images.rbd_pool, images.ceph_conf, images.ceph_client)

    def image_name(self, image_id: str) -> str:
        check_id(image_id, "image")
        return f"img-{image_id}"

    def import_raw(self, image_id: str, source: Path) -> int:
        rados, rbd = _librbd()
        final = self.image_name(image_id)
        with self._ioctx(f"import {final}") as io:
            with contextlib.suppress(rbd.ImageNotFound), rbd.Image(io, final, read_only=True) as im:
                return int(im.size())
            fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
            with open(fd, "rb") as data:
                size = os.fstat(fd).st_size
                tmp = temporary_name(final)
                rbd.RBD().create(io, tmp, size, old_format=False, features=_features(rbd))
                try:
                    with rbd.Image(io, tmp) as im:
                        _copy(data, im, size)
                        im.flush()
                        im.create_snap(SNAPSHOT)
                        im.protect_snap(SNAPSHOT)
                    try:
                        rbd.RBD().rename(io, tmp, final)
                    except rbd.ImageExists:  # a concurrent import of the same image won
                        _remove(rbd, io, tmp)
                except BaseException:
                    with contextlib.suppress(rbd.Error, rados.Error):
                        _remove(rbd, io, tmp)
                    raise
        return size

    def has_image(self, image_id: str) -> bool:
        _, rbd = _librbd()
        name = self.image_name(image_id)
        with self._ioctx(f"open {name}") as io:
            try:
                with rbd.Image(io, name, read_only=True):
                    return True
            except rbd.ImageNotFound:
                return False

    def clones(self, image_id: str) -> list[str]:
        """The RBD images that are clones of the image's snapshot (VM disks)."""
        _, rbd = _librbd()
        name = self.image_name(image_id)
        with self._ioctx(f"list the clones of {name}") as io:
            try:
                with rbd.Image(io, name, snapshot=SNAPSHOT, read_only=True) as im:
                    return sorted(str(c["image"]) for c in im.list_children2())
            except rbd.ImageNotFound:
                return []

    def delete_image(self, image_id: str) -> None:
        _, rbd = _librbd()
        name = self.image_name(image_id)
        refuse_if_cloned(self.clones(image_id))
        with self._ioctx(f"remove {name}") as io:
            try:
                _remove(rbd, io, name)
            except rbd.ImageNotFound:
                return
            except rbd.ImageBusy as exc:  # a clone appeared since the check: still in use
                raise Refused("image", f"{name} has clones or is open: {exc}") from exc

    def clone_disk(self, image_id: str, vm_id: str, size_mib: int) -> DiskRef:
        _, rbd = _librbd()
        parent, target = self.image_name(image_id), self._disk_name(vm_id, "root")
        with self._ioctx(f"clone {parent} to {target}") as io:
            try:
                with rbd.Image(io, parent, snapshot=SNAPSHOT, read_only=True) as im:
                    image_bytes = int(im.size())
            except rbd.ImageNotFound as exc:
                raise NotFound("image", f"image {image_id} is not in the store") from exc
            check_clone_size(size_mib, image_bytes)
            try:
                rbd.RBD().clone(io, parent, SNAPSHOT, io, target, features=_features(rbd))
            except rbd.ImageExists:
                self._check_parent(io, target, parent)
            self._grow(io, target, size_mib)
        return DiskRef(store="rbd", path=f"{self.pool}/{target}")

    def create_blank(self, vm_id: str, name: str, size_mib: int) -> DiskRef:
        _, rbd = _librbd()
        if not _DISK_NAME.match(name) or name == "root":
            raise InputError("name", f"{name!r} is not a disk name (a-z, 0-9, '_'; not 'root')")
        check_disk_size(size_mib)
        target = self._disk_name(vm_id, name)
        with self._ioctx(f"create {target}") as io:
            with contextlib.suppress(rbd.ImageExists):
                rbd.RBD().create(
                    io, target, size_mib * MIB, old_format=False, features=_features(rbd)
                )
            self._grow(io, target, size_mib)
        return DiskRef(store="rbd", path=f"{self.pool}/{target}")

    def delete_disks(self, vm_id: str) -> None:
        _, rbd = _librbd()
        prefix = self._disk_name(vm_id, "")
        with self._ioctx(f"remove the disks {prefix}*") as io:
            for name in rbd.RBD().list(io):
                if name.startswith(prefix) and "-" not in name[len(prefix) :]:
                    with contextlib.suppress(rbd.ImageNotFound):
                        _remove(rbd, io, name)

    def qemu_blockdev(self, disk: DiskRef, node: str) -> list[str]:
        image = self._own_image(disk)
        spec = (
            f"driver=raw,node-name={node},discard=unmap,file.driver=rbd,"
            f"file.pool={escape(self.pool)},file.image={escape(image)},"
            f"file.user={escape(self.client)}"
        )
        if self.conf:
            spec += f",file.conf={escape(self.conf)}"
        return virtio_disk(spec, node)

    def qemu_filename(self, disk: DiskRef) -> str:
        """The disk as a legacy ``rbd:`` filename, for qemu-img."""
        spec = f"rbd:{self.pool}/{self._own_image(disk)}:id={self.client}"
        return spec + (f":conf={self.conf}" if self.conf else "")

    def _own_image(self, disk: DiskRef) -> str:
        if disk.store != "rbd":
            raise InputError("disk", f"a {disk.store} disk is not an rbd store disk")
        pool, _, image = disk.path.partition("/")
        if pool != self.pool or not image.startswith("vm-") or not valid_token(image):
            raise InputError("disk", f"{disk.path} is not a disk of this store")
        return image

    def _disk_name(self, vm_id: str, name: str) -> str:
        check_id(vm_id, "vm")
        return f"vm-{vm_id}-{name}"

    def _check_parent(self, io: Any, target: str, parent: str) -> None:
        _, rbd = _librbd()
        with rbd.Image(io, target, read_only=True) as im:
            try:
                _, image, snap = im.parent_info()
            except rbd.ImageNotFound:
                image, snap = "", ""
        if (image, snap) != (parent, SNAPSHOT):
            raise Refused("vm", f"{target} exists and is not a clone of {parent}@{SNAPSHOT}")

    def _grow(self, io: Any, target: str, size_mib: int) -> None:
        _, rbd = _librbd()
        with rbd.Image(io, target) as im:
            if im.size() < size_mib * MIB:
                im.resize(size_mib * MIB)

    @contextlib.contextmanager
    def _ioctx(self, what: str) -> Iterator[Any]:
        """The pool, connected for one operation; Ceph's errors become UcloudError."""
        rados, rbd = _librbd()
        try:
            cluster = rados.Rados(conffile=self.conf, rados_id=self.client)
        except rados.Error as exc:
            raise ConfigError("images.ceph_conf", f"cannot read {self.conf!r}: {exc}") from exc
        try:
            try:
                cluster.connect(timeout=CONNECT_TIMEOUT_S)
            except rados.Error as exc:
                raise UcloudError(
                    f"ceph: cannot connect as client.{self.client}"
                    f" ({self.conf or 'default ceph.conf'}): {exc}"
                ) from exc
            try:
                io = cluster.open_ioctx(self.pool)
            except rados.ObjectNotFound as exc:
                raise ConfigError("images.rbd_pool", f"no pool {self.pool!r}") from exc
            with io:
                yield io
        except (rbd.Error, rados.Error) as exc:
            raise UcloudError(f"rbd {what} in pool {self.pool}: {exc}") from exc
        finally:
            cluster.shutdown()


def _features(rbd: Any) -> int:
    """Layering (clones) plus what QEMU's librbd uses well: locks, object map, fast diff."""
    return int(
        rbd.RBD_FEATURE_LAYERING
        | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
        | rbd.RBD_FEATURE_OBJECT_MAP
        | rbd.RBD_FEATURE_FAST_DIFF
        | rbd.RBD_FEATURE_DEEP_FLATTEN
    )


def _copy(data: Any, image: Any, size: int) -> None:
    """Stream the file into the (new, all-zero) image; zero chunks stay unallocated."""
    offset = 0
    while offset < size:
        chunk = data.read(CHUNK)
        if not chunk:
            raise UcloudError(f"the source shrank while it was imported ({offset} of {size})")
        if chunk != _ZEROS[: len(chunk)]:
            image.write(chunk, offset)
        offset += len(chunk)


def _remove(rbd: Any, io: Any, name: str) -> None:
    """Remove an image and its snapshots (unprotecting them first)."""
    with rbd.Image(io, name) as im:
        for snap in list(im.list_snaps()):
            if im.is_protected_snap(snap["name"]):
                im.unprotect_snap(snap["name"])
            im.remove_snap(snap["name"])
    rbd.RBD().remove(io, name)
