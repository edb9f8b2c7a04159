"""The Ceph RBD image store against a real single-node Ceph (memstore OSD), and QEMU on it.

Tests share the session's pool and isolate themselves by unique image and VM ids.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ceph_cluster import CephCluster
from ucloud.config import Config, decode
from ucloud.errors import ConfigError, InputError, NotFound, Refused
from ucloud.ids import new_id
from ucloud.images.base import DiskRef
from ucloud.images.open import open_store
from ucloud.images.rbd_store import RbdStore

MIB = 1 << 20


def librbd() -> tuple[Any, Any]:
    """Debian's python3-rados and python3-rbd (no type stubs)."""
    return importlib.import_module("rados"), importlib.import_module("rbd")


@pytest.fixture
def rbd_store(ceph: CephCluster) -> RbdStore:
    return RbdStore(ceph.pool, str(ceph.conf))


@pytest.fixture
def pool(ceph: CephCluster) -> Iterator[Any]:
    """The pool, opened with librados, to look at what the store left in it."""
    rados, _ = librbd()
    cluster = rados.Rados(conffile=str(ceph.conf))
    cluster.connect(timeout=30)
    try:
        with cluster.open_ioctx(ceph.pool) as io:
            yield io
    finally:
        cluster.shutdown()


def images(io: Any, *ids: str) -> list[str]:
    """The pool's RBD images whose names mention one of ``ids``."""
    _, rbd = librbd()
    return sorted(n for n in rbd.RBD().list(io) if any(i in n for i in ids))


def allocated(io: Any, name: str) -> list[tuple[int, int]]:
    """The extents of an image that hold data (offset, length)."""
    _, rbd = librbd()
    extents: list[tuple[int, int]] = []
    with rbd.Image(io, name, read_only=True) as im:
        im.diff_iterate(0, im.size(), None, lambda o, n, e: extents.append((o, n)) if e else None)
    return extents


@pytest.mark.ceph
@pytest.mark.qemu
@pytest.mark.timeout(240)
def test_an_image_becomes_an_rbd_clone_that_qemu_opens(
    rbd_store: RbdStore, pool: Any, tmp_path: Path
) -> None:
    _, rbd = librbd()
    image, vm = new_id(), new_id()
    content = os.urandom(MIB) + bytes(7 * MIB) + os.urandom(MIB // 2)  # 8.5 MiB
    (tmp_path / "base.raw").write_bytes(content)
    assert rbd_store.import_raw(image, tmp_path / "base.raw") == len(content)
    assert rbd_store.import_raw(image, tmp_path / "base.raw") == len(content)  # idempotent
    assert rbd_store.has_image(image)
    assert images(pool, image) == [f"img-{image}"]  # no temporary image left behind
    with rbd.Image(pool, f"img-{image}", read_only=True) as im:
        assert im.read(0, len(content)) == content
        assert [s["name"] for s in im.list_snaps()] == ["base"]
        assert im.is_protected_snap("base")
    # zero chunks are not written: the second 4 MiB object holds nothing
    assert all(o + n <= 4 * MIB or o >= 8 * MIB for o, n in allocated(pool, f"img-{image}"))

    with pytest.raises(InputError, match="smaller than the image"):
        rbd_store.clone_disk(image, vm, 8)
    disk = rbd_store.clone_disk(image, vm, 64)
    assert disk == DiskRef(store="rbd", path=f"{rbd_store.pool}/vm-{vm}-root")
    assert rbd_store.clone_disk(image, vm, 64) == disk  # idempotent
    with rbd.Image(pool, f"vm-{vm}-root", read_only=True) as im:
        assert im.size() == 64 * MIB
        assert im.parent_info() == (rbd_store.pool, f"img-{image}", "base")
        assert im.read(0, len(content)) == content
        assert im.read(60 * MIB, 4 * MIB) == bytes(4 * MIB)
    hdd = rbd_store.create_blank(vm, "hdd", 32)
    assert hdd == DiskRef(store="rbd", path=f"{rbd_store.pool}/vm-{vm}-hdd")
    with rbd.Image(pool, f"vm-{vm}-hdd", read_only=True) as im:
        assert im.size() == 32 * MIB and allocated(pool, f"vm-{vm}-hdd") == []

    with pytest.raises(Refused, match=f"clones of it: vm-{vm}-root"):
        rbd_store.delete_image(image)
    assert rbd_store.has_image(image)

    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", rbd_store.qemu_filename(disk)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout)
    assert (info["format"], info["virtual-size"]) == ("raw", 64 * MIB)
    nodes = qemu_block_nodes(rbd_store.qemu_blockdev(disk, "disk0")
                             + rbd_store.qemu_blockdev(hdd, "disk1"))
    assert nodes == {"disk0": ("raw", 64 * MIB), "disk1": ("raw", 32 * MIB)}

    rbd_store.delete_disks(vm)
    assert images(pool, image, vm) == [f"img-{image}"]
    rbd_store.delete_image(image)
    rbd_store.delete_image(image)  # idempotent
    assert not rbd_store.has_image(image)
    assert images(pool, image, vm) == []


def qemu_block_nodes(argv: list[str]) -> dict[str, tuple[str, int]]:
    """Start QEMU (stopped, TCG) with ``argv``; its named block nodes: driver and size."""
    commands = [{"execute": "qmp_capabilities"}, {"execute": "query-named-block-nodes"},
                {"execute": "quit"}]
    done = subprocess.run(
        ["qemu-system-x86_64", "-M", "q35,accel=tcg", "-S", "-nodefaults", "-display", "none",
         "-qmp", "stdio", *argv],
        input="".join(json.dumps(c) + "\n" for c in commands), capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    replies = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    nodes = next(r["return"] for r in replies if isinstance(r.get("return"), list))
    return {
        n["node-name"]: (n["drv"], n["image"]["virtual-size"])
        for n in nodes if n["node-name"] in ("disk0", "disk1")
    }


@pytest.mark.ceph
def test_disks_belong_to_exactly_one_vm_and_bad_names_change_nothing(
    rbd_store: RbdStore, pool: Any
) -> None:
    vm = new_id()
    other = f"{vm}-x"  # a VM id that extends the first one
    rbd_store.create_blank(vm, "hdd", 1)
    rbd_store.create_blank(other, "hdd", 1)
    assert rbd_store.create_blank(vm, "hdd", 2).path.endswith(f"vm-{vm}-hdd")
    for name in ("root", "hdd-2", "Hdd", "", "a/b", "x" * 33):
        with pytest.raises(InputError, match="not a disk name"):
            rbd_store.create_blank(vm, name, 1)
    with pytest.raises(InputError, match="at least 1 MiB"):
        rbd_store.create_blank(vm, "ssd", 0)
    with pytest.raises(InputError, match="not a valid id"):
        rbd_store.create_blank("../etc", "hdd", 1)
    with pytest.raises(NotFound, match="not in the store"):
        rbd_store.clone_disk(new_id(), vm, 16)
    assert images(pool, vm) == sorted([f"vm-{vm}-hdd", f"vm-{other}-hdd"])

    rbd_store.delete_disks(vm)
    assert images(pool, vm) == [f"vm-{other}-hdd"]
    rbd_store.delete_disks(other)
    assert images(pool, vm) == []


@pytest.mark.ceph
def test_an_import_that_fails_leaves_nothing(
    rbd_store: RbdStore, pool: Any, tmp_path: Path
) -> None:
    image = new_id()
    (tmp_path / "real.raw").write_bytes(os.urandom(4096))
    (tmp_path / "link.raw").symlink_to(tmp_path / "real.raw")
    with pytest.raises(OSError):
        rbd_store.import_raw(image, tmp_path / "link.raw")
    (tmp_path / "dir.raw").mkdir()
    with pytest.raises(OSError):  # a directory opens, then fails to read mid-import
        rbd_store.import_raw(image, tmp_path / "dir.raw")
    assert images(pool, image) == [] and not rbd_store.has_image(image)


@pytest.mark.ceph
def test_a_missing_pool_is_a_config_error(ceph: CephCluster) -> None:
    store = RbdStore("no-such-pool", str(ceph.conf))
    with pytest.raises(ConfigError, match="images.rbd_pool: no pool 'no-such-pool'"):
        store.has_image(new_id())


def test_qemu_arguments_name_the_pool_image_user_and_conf() -> None:
    store = RbdStore("vms", "/etc/ceph/a,b.conf", "ucloud")
    disk = DiskRef(store="rbd", path="vms/vm-1-root")
    assert store.qemu_blockdev(disk, "disk0") == [
        "-blockdev",
        "driver=raw,node-name=disk0,discard=unmap,file.driver=rbd,file.pool=vms,"
        "file.image=vm-1-root,file.user=ucloud,file.conf=/etc/ceph/a,,b.conf",
        "-device", "virtio-blk-pci,drive=disk0,id=disk0",
    ]
    assert store.qemu_filename(disk) == "rbd:vms/vm-1-root:id=ucloud:conf=/etc/ceph/a,b.conf"
    assert "file.conf" not in RbdStore("vms").qemu_blockdev(disk, "disk0")[1]
    for bad in (DiskRef(store="fs", path="/x/y.qcow2"), DiskRef(store="rbd", path="other/vm-1"),
                DiskRef(store="rbd", path="vms/img-1"), DiskRef(store="rbd", path="vms/vm-1,x")):
        with pytest.raises(InputError, match="disk"):
            store.qemu_blockdev(bad, "disk0")
    with pytest.raises(InputError, match="node name"):
        store.qemu_blockdev(disk, "0,file=/etc/passwd")


def test_the_store_comes_from_the_images_section() -> None:
    config = decode({"images": {"rbd_pool": "vms", "ceph_conf": "/etc/ceph/c.conf",
                                "ceph_client": "ucloud"}})
    store = open_store(config, "rbd")
    assert isinstance(store, RbdStore) and store.kind == "rbd"
    assert (store.pool, store.conf, store.client) == ("vms", "/etc/ceph/c.conf", "ucloud")
    assert (Config().images.rbd_pool, Config().images.ceph_client) == ("rbd", "admin")
    for key, value in (("rbd_pool", "a/b"), ("rbd_pool", ""), ("ceph_client", "x y")):
        with pytest.raises(ConfigError, match=f"images.{key}"):
            decode({"images": {key: value}})
