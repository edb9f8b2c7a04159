"""Files over the real gateway and filescan on a real directory, against real NATS and etcd."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.integration.gateway_harness import Running, gateway_config, running_gateway
from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.files import file_id
from ucloud.handlers.filescan import FileScanner

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]
LIMIT = 8 << 20


def files_config(config: Config, tmp_path: Path, **images: Any) -> Config:
    """The gateway harness's config with the test's own files, images and disks dirs."""
    base = gateway_config(config, tmp_path)
    settings: dict[str, Any] = {
        "files_dir": str(tmp_path / "files"), "dir": str(tmp_path / "images"),
        "disks_dir": str(tmp_path / "disks"), "settle_s": 0.0, "scan_interval_s": 0.05,
        "builtin": [], "max_upload_bytes": LIMIT, **images,
    }
    return msgspec.structs.replace(
        base, data_dir=str(tmp_path / "data"),
        images=msgspec.structs.replace(base.images, **settings),
    )


@pytest.fixture
async def running(config: Config, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_gateway(files_config(config, tmp_path)) as r:
        yield r


async def file_events(log: EventLog, owner: str, name: str) -> list[ev.Event]:
    stored, _ = await log.load("file", file_id(owner, name))
    return [s.event for s in stored]


async def connect(running: Running) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare HTTP connection to the gateway, for requests httpx would not send."""
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


def put_head(token: str, name: str, length: int) -> bytes:
    return (
        f"PUT /v1/files/{name} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def test_an_upload_is_streamed_to_the_owners_files_and_seen_by_them_only(
    running: Running, tmp_path: Path
) -> None:
    alice, bob = await running.new_user(), await running.new_user()
    data = os.urandom(3 << 20)  # larger than the gateway's JSON body limit (1 MiB)
    answer = await running.client(alice).put("/v1/files/my.qcow2", content=data)
    assert answer.status_code == 201, answer.text
    view = answer.json()
    assert (view["owner"], view["name"], view["size"]) == (alice.name, "my.qcow2", len(data))
    assert view["sha256"] == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "files" / alice.name / "my.qcow2").read_bytes() == data
    assert entries(tmp_path / "files" / alice.name) == ["my.qcow2"]

    mine = await running.client(alice).get("/v1/files")
    assert [f["name"] for f in mine.json()] == ["my.qcow2"]
    assert (await running.client(alice).get("/v1/files/my.qcow2")).json() == view
    assert (await running.client(bob).get("/v1/files")).json() == []
    assert (await running.client(bob).get("/v1/files/my.qcow2")).status_code == 404
    assert (await running.client(bob).get(f"/v1/files/{view['id']}")).status_code == 404
    everyone = await running.client(running.admin).get("/v1/files")
    assert view in everyone.json()

    again = await running.client(alice).put("/v1/files/my.qcow2", content=data)
    assert again.status_code == 201
    assert len(await file_events(running.log, alice.name, "my.qcow2")) == 1  # same version
    changed = await running.client(alice).put("/v1/files/my.qcow2", content=b"other")
    assert changed.json()["sha256"] == hashlib.sha256(b"other").hexdigest()
    assert len(await file_events(running.log, alice.name, "my.qcow2")) == 2

    deleted = await running.client(alice).delete("/v1/files/my.qcow2")
    assert deleted.status_code == 204
    assert entries(tmp_path / "files" / alice.name) == []
    assert (await running.client(alice).get("/v1/files")).json() == []
    kinds = [e.tag() for e in await file_events(running.log, alice.name, "my.qcow2")]
    assert kinds == ["file.uploaded", "file.uploaded", "file.deleted"]
    assert (await running.client(alice).delete("/v1/files/my.qcow2")).status_code == 404


@pytest.mark.parametrize(
    ("url_name", "status"),
    [
        (".hidden", 400),
        ("%2E%2E", 400),  # ".."
        ("a..b", 400),
        ("..%5Cx", 400),  # "..\x"
        ("..%2F..%2Fetc%2Fpasswd", 404),  # "../../etc/passwd" is no file path at all
        ("-x", 400),
    ],
)
async def test_bad_names_are_refused_and_nothing_is_written(
    running: Running, tmp_path: Path, url_name: str, status: int
) -> None:
    alice = await running.new_user()
    before = await running.last_seq()
    answer = await running.client(alice).put(f"/v1/files/{url_name}", content=b"data")
    assert answer.status_code == status, answer.text
    if status == 400:
        assert answer.json()["field"] == "name"
    assert entries(tmp_path / "files" / alice.name) == []
    assert not (tmp_path / "etc").exists()
    assert await running.last_seq() == before


async def test_uploads_over_the_limit_are_refused_and_leave_nothing(
    running: Running, tmp_path: Path
) -> None:
    alice = await running.new_user()
    before = await running.last_seq()
    reader, writer = await connect(running)
    writer.write(put_head(alice.token, "big.img", LIMIT + 1))  # refused before any byte
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 413 ")
    writer.close()

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: found out on the way
        for _ in range(LIMIT // (1 << 20) + 2):
            yield bytes(1 << 20)

    streamed = await running.client(alice).put("/v1/files/big.img", content=chunks())
    assert streamed.status_code == 413, streamed.text
    assert "larger than the limit" in streamed.json()["error"]
    assert entries(tmp_path / "files" / alice.name) == []
    assert await running.last_seq() == before


async def test_an_upload_cut_mid_stream_leaves_nothing_behind(
    running: Running, tmp_path: Path
) -> None:
    alice = await running.new_user()
    before = await running.last_seq()
    _, writer = await connect(running)
    writer.write(put_head(alice.token, "cut.qcow2", 4 << 20))
    writer.write(os.urandom(1 << 20))
    await writer.drain()
    owner_dir = tmp_path / "files" / alice.name
    async with asyncio.timeout(10):
        while not entries(owner_dir):  # the upload is being written
            await asyncio.sleep(0.01)
    writer.close()
    await writer.wait_closed()
    async with asyncio.timeout(10):
        while entries(owner_dir):
            await asyncio.sleep(0.02)
    assert await running.last_seq() == before
    assert (await running.client(alice).get("/v1/files")).json() == []


async def test_filescan_records_files_copied_in_once_per_version(
    event_log: EventLog, tmp_path: Path
) -> None:
    root = tmp_path / "files"
    (root / "carol").mkdir(parents=True)
    path = root / "carol" / "disk.img"
    scanner = FileScanner(event_log, root, settle_s=0.0)
    await scanner.load()

    with path.open("wb") as handle:  # being copied in: two looks see it grow
        handle.write(b"a" * 1000)
        handle.flush()
        await scanner.scan()
        handle.write(b"b" * 1000)
        handle.flush()
        await scanner.scan()
    assert await file_events(event_log, "carol", "disk.img") == []
    await scanner.scan()  # unchanged since the last look: whole
    (first,) = await file_events(event_log, "carol", "disk.img")
    assert isinstance(first, ev.FileUploaded)
    assert (first.owner, first.name, first.size, first.actor) == (
        "carol", "disk.img", 2000, "system:filescan"
    )
    assert first.sha256 == hashlib.sha256(b"a" * 1000 + b"b" * 1000).hexdigest()
    for _ in range(3):
        await scanner.scan()
    assert len(await file_events(event_log, "carol", "disk.img")) == 1

    restarted = FileScanner(event_log, root, settle_s=0.0)
    await restarted.load()
    for _ in range(3):
        await restarted.scan()
    assert len(await file_events(event_log, "carol", "disk.img")) == 1

    path.write_bytes(b"new content")
    os.utime(path, ns=(1, 1))  # an old mtime must not hide a new version
    for _ in range(2):
        await restarted.scan()
    events = await file_events(event_log, "carol", "disk.img")
    assert [getattr(e, "size", None) for e in events] == [2000, 11]

    path.unlink()
    await restarted.scan()
    assert [e.tag() for e in await file_events(event_log, "carol", "disk.img")][-1] == (
        "file.deleted"
    )


async def test_a_gateway_upload_is_not_recorded_again_by_filescan(
    running: Running, tmp_path: Path
) -> None:
    alice = await running.new_user()
    scanner = FileScanner(running.log, tmp_path / "files", settle_s=0.0)
    await scanner.load()
    answer = await running.client(alice).put("/v1/files/up.img", content=b"uploaded")
    assert answer.status_code == 201
    for _ in range(3):
        await scanner.scan()
    events = await file_events(running.log, alice.name, "up.img")
    assert [e.actor for e in events] == [alice.name]
