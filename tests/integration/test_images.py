"""Images from uploads: real gateway, projector and imagescan; real qemu-img and QEMU.

Hostile files are made with qemu-img itself (a backing file of /etc/passwd, a ``json:``
backing name, a huge virtual size, a truncated qcow2, raw bytes named .qcow2, an external
data file); each must end ``failed`` with a reason, leaving nothing in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.gateway_harness import Running, User, running_gateway, system
from tests.integration.test_files import files_config
from ucloud import events as ev
from ucloud.cli.main import main
from ucloud.config import Config
from ucloud.errors import ExitCode
from ucloud.handlers.builtins import builtin_image_id, register_builtin
from ucloud.handlers.imagescan import ImageScan
from ucloud.handlers.imagescan import run as run_imagescan
from ucloud.ids import new_id
from ucloud.images.store import FsStore
from ucloud.services import ServiceContext

pytestmark = [pytest.mark.servers, pytest.mark.qemu, pytest.mark.timeout(180)]
MIB = 1 << 20


def qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def raw_disk(path: Path) -> bytes:
    """A 4 MiB raw disk: 1 MiB of noise, then zeros (holes in a sparse copy)."""
    data = os.urandom(MIB) + bytes(3 * MIB)
    path.write_bytes(data)
    return data


@dataclass
class Cloud:
    running: Running
    tmp: Path
    context: ServiceContext

    async def upload(self, user: User, name: str, source: Path) -> dict[str, Any]:
        answer = await self.running.client(user).put(
            f"/v1/files/{name}", content=source.read_bytes()
        )
        assert answer.status_code == 201, answer.text
        view: dict[str, Any] = answer.json()
        return view

    async def request(self, user: User, file: str, name: str) -> dict[str, Any]:
        answer = await self.running.client(user).post(
            "/v1/images", json={"file": file, "name": name}
        )
        assert answer.status_code == 202, answer.text
        view: dict[str, Any] = answer.json()
        assert view["status"] == "requested"
        return view

    async def outcome(self, user: User, image: str) -> dict[str, Any]:
        """The image once imagescan decided on it."""
        async with asyncio.timeout(60):
            while True:
                view: dict[str, Any] = (
                    await self.running.client(user).get(f"/v1/images/{image}")
                ).json()
                if view["status"] not in ("requested", "deleting"):
                    return view
                await asyncio.sleep(0.05)

    def store_files(self) -> list[str]:
        images = self.tmp / "images"
        found = [p.name for p in images.iterdir()] if images.exists() else []
        work = images / ".work"
        found += [f".work/{p.name}" for p in work.iterdir()] if work.exists() else []
        return sorted(f for f in found if f != ".work")


@pytest.fixture
async def cloud(config: Config, tmp_path: Path) -> AsyncIterator[Cloud]:
    mine = files_config(config, tmp_path, max_virtual_size_gib=1)
    async with running_gateway(mine) as running:
        context = ServiceContext(
            config=mine, log=running.log, store=running.store, name="imagescan",
        )
        task = asyncio.create_task(run_imagescan(context))
        try:
            yield Cloud(running, tmp_path, context)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_uploads_become_raw_images_with_the_checksum_of_their_content(
    cloud: Cloud, tmp_path: Path
) -> None:
    alice, bob = await cloud.running.new_user(), await cloud.running.new_user()
    content = raw_disk(tmp_path / "disk.raw")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", tmp_path / "disk.raw", tmp_path / "my.qcow2")
    expected = hashlib.sha256(content).hexdigest()

    file = await cloud.upload(alice, "my.qcow2", tmp_path / "my.qcow2")
    await cloud.upload(alice, "disk.img", tmp_path / "disk.raw")
    from_qcow2 = await cloud.request(alice, "my.qcow2", "mine")
    assert (from_qcow2["file"], from_qcow2["public"], from_qcow2["store"]) == (
        file["id"], False, "fs"
    )
    from_raw = await cloud.request(alice, "disk.img", "plain")
    for image in (from_qcow2, from_raw):
        done = await cloud.outcome(alice, image["id"])
        assert (done["status"], done["size"], done["checksum"]) == (
            "created", len(content), expected
        ), done
        stored = tmp_path / "images" / f"{image['id']}.raw"
        assert stored.read_bytes() == content
        assert stored.stat().st_blocks * 512 < 2 * MIB  # the zeros stayed holes
    assert cloud.store_files() == sorted(f"{i['id']}.raw" for i in (from_qcow2, from_raw))

    client = cloud.running.client(bob)
    assert (await client.get("/v1/images")).json() == []
    assert (await client.get(f"/v1/images/{from_qcow2['id']}")).status_code == 404
    theirs = await client.post("/v1/images", json={"file": file["id"], "name": "x"})
    assert (theirs.status_code, theirs.json()["field"]) == (400, "file")
    public = await client.post(
        "/v1/images", json={"file": "my.qcow2", "name": "x", "public": True}
    )
    assert (public.status_code, public.json()["field"]) == (403, "public")
    again = await cloud.running.client(alice).post(
        "/v1/images", json={"file": "my.qcow2", "name": "mine"}
    )
    assert (again.status_code, again.json()["field"]) == (409, "name")
    mine = (await cloud.running.client(alice).get("/v1/images")).json()
    assert sorted(i["name"] for i in mine) == ["mine", "plain"]


def _backing(tmp: Path, target: Path, backing: str) -> None:
    qemu_img("create", "-f", "qcow2", "-u", "-F", "raw", "-b", backing, target, "1M")


def _huge(tmp: Path, target: Path) -> None:
    qemu_img("create", "-f", "qcow2", target, "100T")


def _truncated(tmp: Path, target: Path) -> None:
    raw_disk(tmp / "t.raw")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", tmp / "t.raw", tmp / "full.qcow2")
    target.write_bytes((tmp / "full.qcow2").read_bytes()[: 300 * 1024])


def _data_file(tmp: Path, target: Path) -> None:
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={tmp / 'data.raw'},data_file_raw=on",
             target, "1M")


HOSTILE: list[tuple[str, Callable[[Path, Path], object], str]] = [
    ("passwd.qcow2", lambda t, p: _backing(t, p, "/etc/passwd"),
     "has a backing file ('/etc/passwd')"),
    ("json.qcow2", lambda t, p: _backing(
        t, p, 'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/shadow"}}'),
     "has a backing file ('json:"),
    ("huge.qcow2", _huge, "virtual size 102400.0 GiB is over the limit of 1 GiB"),
    ("truncated.qcow2", _truncated, "is corrupt"),
    ("fake.qcow2", lambda t, p: p.write_bytes(bytes(MIB)),
     "named .qcow2 but is not a qcow2 image"),
    ("datafile.qcow2", _data_file, "uses an external data file"),
    ("header.qcow2", lambda t, p: p.write_bytes(b"QFI\xfb" + bytes(60)), "not a readable qcow2"),
]


async def test_hostile_files_are_refused_with_a_reason_and_leave_nothing_behind(
    cloud: Cloud, tmp_path: Path
) -> None:
    alice = await cloud.running.new_user()
    (tmp_path / "made").mkdir()
    requested = []
    for name, make, _ in HOSTILE:
        make(tmp_path / "made", tmp_path / "made" / name)
        await cloud.upload(alice, name, tmp_path / "made" / name)
        requested.append(await cloud.request(alice, name, name.removesuffix(".qcow2")))
    for (name, _, reason), image in zip(HOSTILE, requested, strict=True):
        done = await cloud.outcome(alice, image["id"])
        assert done["status"] == "failed", (name, done)
        assert done["reason"].startswith(f"{name}: ") and reason in done["reason"], (name, done)
        answer = json.dumps(done)  # the user learns nothing of where the server keeps files
        for kept in ("images", "files", "data"):  # (a file may name the user's own paths)
            assert str(tmp_path / kept) not in answer, (name, done)
        assert ".work" not in answer, (name, done)
    assert cloud.store_files() == []
    stored, _ = await cloud.running.log.load("image", requested[0]["id"])
    assert [s.event.tag() for s in stored] == ["image.requested", "image.failed"]


async def test_the_cli_uploads_a_file_makes_an_image_and_deletes_it_when_unused(
    cloud: Cloud, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alice = await cloud.running.new_user()
    monkeypatch.setenv("UCLOUD_URL", cloud.running.url)
    monkeypatch.setenv("UCLOUD_TOKEN", alice.token)
    monkeypatch.setenv("UCLOUD_CONFIG_DIR", str(tmp_path / "home"))

    async def ucloud(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    raw_disk(tmp_path / "disk.raw")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", tmp_path / "disk.raw", tmp_path / "my.qcow2")
    code, out, err = await ucloud("file", "upload", str(tmp_path / "my.qcow2"))
    assert code == 0, err
    assert "name:" in out and "my.qcow2" in out
    code, out, err = await ucloud("file", "list")
    assert code == 0 and out.splitlines()[1].split()[:2] == ["my.qcow2", alice.name]

    code, out, err = await ucloud(
        "image", "create", "--file", "my.qcow2", "--name", "mine", "--wait", "--timeout", "60"
    )
    assert code == 0, err
    assert out.splitlines()[0].startswith("id:")  # piped: the result only, no progress
    assert "status:    created" in out
    code, out, err = await ucloud("image", "list", "-o", "json")
    (image,) = json.loads(out)
    assert (image["name"], image["status"]) == ("mine", "created")

    vm = new_id()
    await cloud.running.append(ev.VmRequested(
        **system(), vm=vm, owner=alice.name, name="web", image=image["id"],
        spec=ev.Resources(cpu=1, ram_mib=512, ssd_mib=1024),
    ))
    code, out, err = await ucloud("image", "delete", "mine")
    assert code == ExitCode.CONFLICT and "1 VM(s) use image mine: web" in err
    await cloud.running.append(ev.VmDeleted(**system(), vm=vm))
    code, out, err = await ucloud("image", "delete", "mine", "--wait", "--timeout", "60")
    assert (code, out) == (0, ""), err
    assert cloud.store_files() == []
    code, out, err = await ucloud("file", "delete", "my.qcow2")
    assert code == 0 and (await ucloud("file", "list", "-o", "json"))[1].strip() == "[]"


async def test_builtin_images_are_public_images_of_admin(cloud: Cloud, tmp_path: Path) -> None:
    built: list[str] = []

    async def build(recipe: str, cache_dir: Path) -> Path:
        built.append(recipe)
        cache_dir.mkdir(parents=True, exist_ok=True)
        raw_disk(cache_dir / f"{recipe}.raw")
        out = cache_dir / f"{recipe}-0123456789ab.qcow2"
        qemu_img("convert", "-f", "raw", "-O", "qcow2", cache_dir / f"{recipe}.raw", out)
        return out

    context = cloud.context
    assert await register_builtin(context, "tiny", build)
    assert await register_builtin(context, "debian-12", build)
    assert built == ["tiny", "debian"]
    alice = await cloud.running.new_user()
    for name in ("tiny", "debian-12"):
        done = await cloud.outcome(alice, builtin_image_id(name))
        assert (done["name"], done["owner"], done["public"], done["status"]) == (
            name, "admin", True, "created"
        ), done
    listed = (await cloud.running.client(alice).get("/v1/images")).json()
    assert sorted(i["name"] for i in listed) == ["debian-12", "tiny"]
    assert not await register_builtin(context, "tiny", build)  # there already
    assert built == ["tiny", "debian"]


def test_an_image_becomes_a_copy_on_write_vm_disk_that_qemu_opens(tmp_path: Path) -> None:
    store = FsStore(tmp_path / "images", tmp_path / "disks")
    content = raw_disk(tmp_path / "base.raw")
    assert store.import_raw("img1", tmp_path / "base.raw") == len(content)
    assert store.import_raw("img1", tmp_path / "base.raw") == len(content)  # idempotent
    base = tmp_path / "images" / "img1.raw"
    assert base.read_bytes() == content and base.stat().st_mode & 0o777 == 0o444

    with pytest.raises(Exception, match="smaller than the image"):
        store.clone_disk("img1", "vm1", 2)
    disk = store.clone_disk("img1", "vm1", 64)
    assert store.clone_disk("img1", "vm1", 64) == disk
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", "qcow2", disk.path],
        check=True, capture_output=True, text=True,
    ).stdout)
    assert (info["backing-filename"], info["backing-filename-format"]) == (str(base), "raw")
    assert info["virtual-size"] == 64 * MIB
    qemu_img("convert", "-f", "qcow2", "-O", "raw", disk.path, tmp_path / "seen.raw")
    seen = (tmp_path / "seen.raw").read_bytes()
    assert seen[: len(content)] == content and seen[len(content):] == bytes(60 * MIB)
    hdd = store.create_blank("vm1", "hdd", 32)
    assert Path(hdd.path).name == "hdd.qcow2"

    with pytest.raises(Exception, match="clones of it: vm1"):
        store.delete_image("img1")
    assert _qemu_block_devices(store.qemu_blockdev(disk, "disk0") +
                               store.qemu_blockdev(hdd, "disk1")) == {
        "disk0": (disk.path, str(base)), "disk1": (hdd.path, None)
    }
    store.delete_disks("vm1")
    assert not (tmp_path / "disks" / "vm1").exists()
    store.delete_image("img1")
    assert not store.has_image("img1")


def _qemu_block_devices(argv: list[str]) -> dict[str, tuple[str, str | None]]:
    """Start QEMU (stopped, TCG) with ``argv``; its block nodes: file and backing file."""
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
        n["node-name"]: (n["image"]["filename"], n["image"].get("backing-filename"))
        for n in nodes if n["node-name"] in ("disk0", "disk1")
    }


async def test_a_repeated_request_is_decided_once_and_clones_keep_their_image(
    cloud: Cloud, tmp_path: Path
) -> None:
    alice = await cloud.running.new_user()
    raw_disk(tmp_path / "disk.raw")
    await cloud.upload(alice, "disk.img", tmp_path / "disk.raw")
    image = (await cloud.request(alice, "disk.img", "base"))["id"]
    assert (await cloud.outcome(alice, image))["status"] == "created"
    stored, _ = await cloud.running.log.load("image", image)
    request = stored[0].event
    assert isinstance(request, ev.ImageRequested)
    await ImageScan(cloud.running.log, cloud.context.config).create(request)  # redelivered
    stored, _ = await cloud.running.log.load("image", image)
    assert [s.event.tag() for s in stored] == ["image.requested", "image.created"]

    store = FsStore(tmp_path / "images", tmp_path / "disks")
    store.clone_disk(image, "vm1", 16)  # a disk no VM view knows of (e.g. a lost host's)
    deleted = await cloud.running.client(alice).delete(f"/v1/images/{image}")
    # the answer shows the view once the delete is projected: imagescan may have refused it
    # by then already
    assert deleted.status_code == 202 and deleted.json()["status"] in ("deleting", "failed")
    done = await cloud.outcome(alice, image)
    assert done["status"] == "failed"
    assert done["reason"] == "not deleted: 1 VM disk(s) are clones of it: vm1"
    assert store.has_image(image)
    store.delete_disks("vm1")
    again = await cloud.running.client(alice).delete(f"/v1/images/{image}")
    assert again.status_code == 202
    async with asyncio.timeout(30):
        while (await cloud.running.client(alice).get(f"/v1/images/{image}")).status_code != 404:
            await asyncio.sleep(0.05)
    assert not store.has_image(image) and cloud.store_files() == []
