"""``ucloud down`` against a real ``ucloud up`` running a tiny VM on an ``auto`` network."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.hostd_harness import built, kill_all
from tests.integration.test_up import Up, _gone, _stop_strays, ucloud
from ucloud import events as ev
from ucloud.config import NatsConfig
from ucloud.eventlog import EventLog
from ucloud.hostd.network import bridge_mac
from ucloud.hostd.qemu import QemuProcess, RuntimeDir
from ucloud.ids import new_id
from ucloud.images.store import FsStore

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "aio"
    _stop_strays(tmp_path / "aio")


@pytest.fixture
def runtime() -> Iterator[Path]:
    """A short runtime directory (a QMP socket's path is at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="dn", dir="/tmp"))
    yield path
    kill_all(path)


def _run(env: dict[str, str], *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ucloud(*argv), capture_output=True, text=True, env=env,
                          timeout=timeout)


async def _public_image(nats: str, data_dir: Path, name: str) -> None:
    """The built tiny image in the all-in-one's store, as a public image of admin."""
    image = new_id()
    store = FsStore(data_dir / "images", data_dir / "disks")
    raw = data_dir / f"{image}.raw.tmp"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(built("tiny")), str(raw)],
                   check=True)
    size = store.import_raw(image, raw)
    raw.unlink(missing_ok=True)
    envelope: dict[str, Any] = {"at": datetime.now(UTC), "actor": "system:test",
                                "correlation": image, "causation": image}
    log = await EventLog.connect(NatsConfig(url=nats))
    try:
        await log.append(ev.ImageRequested(id=image, **envelope, image=image, owner="admin",
                                           name=name, file=new_id(), public=True))
        await log.append(ev.ImageCreated(id=new_id(), **envelope, image=image, size=size,
                                         checksum="0" * 64))
    finally:
        await log.close()


def _links() -> set[str]:
    shown = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout)
    return {str(link["ifname"]) for link in shown}


def _mac_of(name: str) -> str:
    shown = subprocess.run(["ip", "-j", "link", "show", name], capture_output=True, text=True,
                           check=False)
    return str(json.loads(shown.stdout)[0]["address"]) if shown.returncode == 0 else ""


def _nft_ports() -> str:
    shown = subprocess.run(["nft", "list", "map", "bridge", "ucloud", "ports"],
                           capture_output=True, text=True, check=False)
    return shown.stdout if shown.returncode == 0 else ""


@pytest.mark.root
async def test_down_vms_leaves_no_qemu_radvd_link_or_rule(
    data_dir: Path, runtime: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0 or shutil.which("radvd") is None:
        pytest.fail("needs root and radvd (VM networking)")
    host = "dn" + new_id().replace("-", "")[-8:]
    env = dict(os.environ, UCLOUD_HOST__ACCEL="tcg", UCLOUD_HOST__RUNTIME_DIR=str(runtime),
               UCLOUD_HOST__ID=host, UCLOUD_CONFIG_DIR=str(tmp_path / "conf"))
    for name in ("UCLOUD_CONFIG", "UCLOUD_URL", "UCLOUD_TOKEN"):
        env.pop(name, None)
    saved = dict(os.environ)
    os.environ.update(env)  # Up starts its child with os.environ
    try:
        up = Up(data_dir)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    deadline = time.monotonic() + 60
    while not (data_dir / "admin.otp").exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    env["UCLOUD_URL"] = up.info.gateway
    login = _run(env, "login", "--name", "admin", "--realm", "admin", "--secret-file",
                 str(data_dir / "admin.otp"), "--data-dir", str(data_dir))
    assert login.returncode == 0, login.stderr
    await _public_image(up.info.nats, data_dir, "tiny")
    net = _run(env, "net", "create", "n1", "--ipam", "auto", "--wait")
    assert net.returncode == 0, net.stderr
    vm = _run(env, "vm", "create", "v1", "--image", "tiny", "--cpu", "1", "--ram", "256M",
              "--ssd", "1", "--net", "n1", "--wait", "--timeout", "180", "-o", "json",
              timeout=200)
    assert vm.returncode == 0, vm.stderr + (tmp_path / "aio.stderr").read_text()[-3000:]
    vm_id = json.loads(vm.stdout)["id"]
    qemu_pid = QemuProcess().pid(RuntimeDir(runtime, vm_id))
    assert qemu_pid is not None
    radvd_dir = data_dir / "radvd"
    deadline = time.monotonic() + 30
    while not list(radvd_dir.glob("*.pid")) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    radvd_pids = [int(p.read_text()) for p in radvd_dir.glob("*.pid")]
    assert radvd_pids
    vni = int(next(radvd_dir.glob("*.conf")).stem)
    assert {f"br{vni}", f"vxlan{vni}"} <= _links()
    tap = next(name for name in _links() if name.startswith("tap")
               and name.endswith("0") and vm_id.replace("-", "")[-10:] in name)

    down = _run(env, "down", "--data-dir", str(data_dir), "--vms", timeout=120)

    assert down.returncode == 0, down.stderr
    assert up.process.wait(10) == 0 and up.terminate() == 0  # (it closes the pipes)
    assert "is down" in down.stdout
    assert _gone(qemu_pid) and all(_gone(pid) for pid in radvd_pids)
    assert tap not in _links()
    # another cloud testing on this machine may use the same VNI: only our bridge must go
    assert _mac_of(f"br{vni}") != bridge_mac(host, vni)
    assert tap not in _nft_ports()
    if "elements" not in _nft_ports():  # another cloud's ports keep the table
        assert not _nft_ports()
    assert not (data_dir / "up.json").exists()
    assert all(_gone(pid) for pid in up.servers.values())
    again = _run(env, "down", "--data-dir", str(data_dir), "--vms")
    assert again.returncode == 0 and "is down" in again.stdout, again.stderr
