"""An uploaded qcow2 becomes an image in the Ceph RBD store through the real gateway and
imagescan, and a VM disk cloned from it reads back the image's content."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from tests.ceph_cluster import CephCluster
from tests.integration.gateway_harness import running_gateway
from tests.integration.test_files import files_config
from tests.integration.test_images import MIB, Cloud, qemu_img, raw_disk
from ucloud.config import Config
from ucloud.handlers.imagescan import run as run_imagescan
from ucloud.images.rbd_store import RbdStore
from ucloud.services import ServiceContext

pytestmark = [pytest.mark.servers, pytest.mark.qemu, pytest.mark.ceph, pytest.mark.timeout(180)]


@pytest.fixture
async def rbd_cloud(
    config: Config, tmp_path: Path, ceph: CephCluster
) -> AsyncIterator[tuple[Cloud, RbdStore]]:
    mine = files_config(config, tmp_path, max_virtual_size_gib=1)
    mine = msgspec.structs.replace(
        mine,
        images=msgspec.structs.replace(
            mine.images, rbd_pool=ceph.pool, ceph_conf=str(ceph.conf)
        ),
    )
    async with running_gateway(mine) as running:
        context = ServiceContext(
            config=mine, log=running.log, store=running.store, name="imagescan",
        )
        task = asyncio.create_task(run_imagescan(context))
        try:
            yield Cloud(running, tmp_path, context), RbdStore.from_config(mine)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_an_upload_becomes_an_rbd_image_and_a_vm_disk(
    rbd_cloud: tuple[Cloud, RbdStore], tmp_path: Path
) -> None:
    cloud, store = rbd_cloud
    alice = await cloud.running.new_user()
    content = raw_disk(tmp_path / "disk.raw")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", tmp_path / "disk.raw", tmp_path / "my.qcow2")
    await cloud.upload(alice, "my.qcow2", tmp_path / "my.qcow2")

    answer = await cloud.running.client(alice).post(
        "/v1/images", json={"file": "my.qcow2", "name": "mine", "store": "rbd"}
    )
    assert answer.status_code == 202, answer.text
    image = answer.json()
    done = await cloud.outcome(alice, image["id"])
    assert (done["status"], done["store"], done["size"]) == ("created", "rbd", len(content))
    assert done["checksum"] == hashlib.sha256(content).hexdigest()
    assert store.has_image(image["id"])
    assert cloud.store_files() == []  # nothing of it in the filesystem store

    disk = await asyncio.to_thread(store.clone_disk, image["id"], "vmrbdtest", 8)
    try:
        out = tmp_path / "disk-read.raw"
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "raw", store.qemu_filename(disk), str(out)],
            check=True, capture_output=True,
        )
        data = out.read_bytes()
        assert len(data) == 8 * MIB
        assert data[: len(content)] == content
    finally:
        await asyncio.to_thread(store.delete_disks, "vmrbdtest")

    deleted = await cloud.running.client(alice).delete(f"/v1/images/{image['id']}")
    assert deleted.status_code == 202, deleted.text
    async with asyncio.timeout(60):
        while store.has_image(image["id"]):
            await asyncio.sleep(0.1)
