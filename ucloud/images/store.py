"""The filesystem image store: raw base images in a directory, VM disks as qcow2 overlays.

The store keeps::

    <images>/<image id>.raw                 base images, read-only once imported
    <disks>/<vm id>/root-<image id>.qcow2   a VM's disk: a qcow2 overlay on the raw base
    <disks>/<vm id>/<name>.qcow2            a VM's blank disk (the hdd)

Everything appears by an atomic rename of a temporary file, so a failure leaves no partial
image or disk behind; every operation is idempotent. An image with clones is not deleted.
The interface it implements, ``ImageStore``, is in ``base``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from ucloud.errors import InputError, NotFound, UcloudError
from ucloud.images.base import (
    DiskRef,
    check_clone_size,
    check_disk_size,
    check_id,
    escape,
    refuse_if_cloned,
    temporary_name,
    virtio_disk,
)
from ucloud.images.validate import copy_into

ROOT_PREFIX = "root-"
_DISK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_QEMU_IMG_TIMEOUT_S = 120.0


class FsStore:
    """Raw base images in a directory; VM disks are qcow2 overlays backed by them."""

    kind = "fs"

    def __init__(self, images: Path, disks: Path) -> None:
        self.images = images.absolute()
        self.disks = disks.absolute()

    def image_path(self, image_id: str) -> Path:
        check_id(image_id, "image")
        return self.images / f"{image_id}.raw"

    def import_raw(self, image_id: str, source: Path) -> int:
        final = self.image_path(image_id)
        if final.is_file():
            return final.stat().st_size
        self.images.mkdir(parents=True, exist_ok=True)
        tmp = self.images / temporary_name(image_id)
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
        check_id(image_id, "image")
        if not self.disks.is_dir():
            return []
        return sorted(p.parent.name for p in self.disks.glob(f"*/{ROOT_PREFIX}{image_id}.qcow2"))

    def delete_image(self, image_id: str) -> None:
        refuse_if_cloned(self.clones(image_id))
        self.image_path(image_id).unlink(missing_ok=True)

    def clone_disk(self, image_id: str, vm_id: str, size_mib: int) -> DiskRef:
        base = self.image_path(image_id)
        target = self._vm_dir(vm_id) / f"{ROOT_PREFIX}{image_id}.qcow2"
        if target.is_file():
            return DiskRef(store="fs", path=str(target))
        if not base.is_file():
            raise NotFound("image", f"image {image_id} is not in the store")
        check_clone_size(size_mib, base.stat().st_size)
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
        path = Path(disk.path)
        if not path.is_absolute() or self.disks not in path.parents:
            raise InputError("disk", f"{disk.path} is not a disk of this store")
        spec = f"driver=qcow2,node-name={node},file.driver=file,file.filename={escape(str(path))}"
        return virtio_disk(spec, node)

    def _vm_dir(self, vm_id: str) -> Path:
        check_id(vm_id, "vm")
        return self.disks / vm_id

    def _create(self, target: Path, size_mib: int, backing: list[str]) -> None:
        check_disk_size(size_mib)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(temporary_name(target.stem))
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


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
