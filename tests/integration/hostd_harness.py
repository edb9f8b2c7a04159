"""A whole cloud for hostd tests: gateway, projector, scheduler, dispatcher and hostd.

The services run as tasks in the test's event loop (hostd may instead run as a real
``ucloud serve hostd`` process) against the session's servers, on the test's own stream
and prefixes. hostd runs QEMU under TCG with a short runtime directory of its own in /tmp
(a QMP socket path must fit in 107 bytes). Built-in guest images come from the image
cache shared with the guest image tests, imported into the test's image store the way
imagescan does (raw) and recorded as made. Every QEMU a test started is killed by its
pid file afterwards, and only those.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from tests.integration.gateway_harness import Running, User, running_gateway, system
from ucloud import events as ev
from ucloud.cli.up_cmd import render_settings
from ucloud.config import Config
from ucloud.handlers.dispatcher import run as run_dispatcher
from ucloud.handlers.scheduler import run as run_scheduler
from ucloud.hostd.daemon import Hostd
from ucloud.hostd.plumbing import Plumbing
from ucloud.hostd.qemu import QemuProcess, RuntimeDir
from ucloud.hostd.service import run as run_hostd
from ucloud.ids import new_id
from ucloud.imagebuild import build
from ucloud.images.store import FsStore
from ucloud.services import ServiceContext, Shared


def image_cache() -> Path:
    explicit = os.environ.get("UCLOUD_IMAGE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ucloud" / "images"


def built(recipe: str) -> Path:
    return build(recipe, image_cache(), progress=print)


def cloud_config(config: Config, tmp_path: Path, runtime: Path, **host: Any) -> Config:
    """The test's config for a cloud with one host running VMs under TCG."""
    etcd = msgspec.structs.replace(
        config.etcd, secrets_prefix=config.etcd.prefix.replace("/v1/", "/secret/")
    )
    settings = {
        "id": "h" + new_id().replace("-", "")[-10:],
        "accel": "tcg",
        "runtime_dir": str(runtime),
        "stop_timeout_s": 20.0,
        "restart_backoff_s": [0.5, 2.0],
        **host,
    }
    gateway = msgspec.structs.replace(
        config.gateway, listen="127.0.0.1:0", bootstrap_admin_file=str(tmp_path / "admin.otp"),
        read_your_writes_s=10.0,
    )
    return msgspec.structs.replace(
        config, data_dir=str(tmp_path / "data"), etcd=etcd, gateway=gateway,
        host=msgspec.structs.replace(config.host, **settings),
    )


def kill_all(runtime: Path) -> None:
    """Kill the QEMU of every VM directory under ``runtime`` (ours only), then remove it."""
    qemu = QemuProcess()
    if runtime.is_dir():
        for directory in runtime.iterdir():
            vm = RuntimeDir(runtime, directory.name)
            qemu.kill(vm)
            deadline = time.monotonic() + 10
            while qemu.pid(vm) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
    shutil.rmtree(runtime, ignore_errors=True)


async def import_image(cloud: Cloud, qcow2: Path, name: str) -> str:
    """The built image as a public image of admin, in the store and made."""
    image = new_id()
    store = FsStore(cloud.config.paths.images, cloud.config.paths.disks)
    raw = Path(cloud.config.data_dir) / f"{image}.raw.tmp"
    raw.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(
        subprocess.run, ["qemu-img", "convert", "-O", "raw", str(qcow2), str(raw)], check=True
    )
    try:
        size = await asyncio.to_thread(store.import_raw, image, raw)
    finally:
        raw.unlink(missing_ok=True)
    await cloud.gw.append(
        ev.ImageRequested(**system(), image=image, owner="admin", name=name, file=new_id(),
                          public=True),
        ev.ImageCreated(**system(), image=image, size=size, checksum="0"),
    )  # fmt: skip
    return image


@dataclass
class Cloud:
    gw: Running
    config: Config
    runtime: Path
    user: User
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    contexts: dict[str, ServiceContext] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.config.host.id

    @property
    def hostd(self) -> Hostd:
        found = self.contexts["hostd"].shared.hostd
        assert isinstance(found, Hostd)
        return found

    def client(self) -> httpx.AsyncClient:
        return self.gw.client(self.user)

    def start(self, name: str, service: Any, plumbing: Plumbing | None = None) -> None:
        ctx = ServiceContext(
            config=self.config, log=self.gw.log, store=self.gw.store, name=name,
            shared=Shared(plumbing=plumbing),
        )
        self.contexts[name] = ctx
        self.tasks[name] = asyncio.create_task(service(ctx), name=f"test:{name}")

    async def stop(self, name: str) -> None:
        task = self.tasks.pop(name)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def create(self, name: str, image: str, **body: Any) -> dict[str, Any]:
        answer = await self.client().post(
            "/v1/vms", json={"name": name, "image": image, "cpu": 1, "ram": "128M", "ssd": 1,
                             **body},
        )  # fmt: skip
        assert answer.status_code == 202, answer.text
        created: dict[str, Any] = answer.json()
        return created

    async def act(self, vm: str, verb: str) -> None:
        client = self.client()
        if verb == "delete":
            answer = await client.delete(f"/v1/vms/{vm}")
        else:
            answer = await client.post(f"/v1/vms/{vm}/{verb}")
        assert answer.status_code == 202, answer.text

    async def view(self, vm: str) -> dict[str, Any] | None:
        answer = await self.client().get(f"/v1/vms/{vm}")
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        return view

    async def wait_status(self, vm: str, status: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            view = await self.view(vm)
            now = "gone" if view is None else str(view["status"])
            if not seen or seen[-1] != now:
                seen.append(now)
            if now == status:
                return view or {}
            self.check_services()
            assert time.monotonic() < deadline, f"vm {vm} never {status}: {' -> '.join(seen)}"
            await asyncio.sleep(0.1)

    async def console(self, vm: str, offset: int = 0) -> dict[str, Any]:
        answer = await self.client().get(f"/v1/vms/{vm}/console", params={"offset": offset})
        assert answer.status_code == 200, answer.text
        chunk: dict[str, Any] = answer.json()
        return chunk

    async def wait_console(self, vm: str, text: str, timeout: float, offset: int = 0) -> int:
        """Where in the console log ``text`` ends, once it is there."""
        deadline = time.monotonic() + timeout
        seen = ""
        while True:
            chunk = await self.console(vm, offset)
            seen += chunk["data"]
            offset = chunk["next"]
            if text in seen:
                return offset
            self.check_services()
            assert time.monotonic() < deadline, f"no {text!r} on the console: {seen[-800:]!r}"
            await asyncio.sleep(0.5)

    def check_services(self) -> None:
        for name, task in self.tasks.items():
            if task.done() and not task.cancelled():
                raise AssertionError(f"service {name} ended: {task.exception()!r}")

    async def vm_events(self, vm: str) -> list[ev.Event]:
        stored, _ = await self.gw.log.load("vm", vm)
        return [s.event for s in stored]


@contextlib.asynccontextmanager
async def running_cloud(
    config: Config, tmp_path: Path, *, hostd: bool = True, **host: Any
) -> AsyncIterator[Cloud]:
    runtime = Path(tempfile.mkdtemp(prefix="uc", dir="/tmp"))
    cloud_cfg = cloud_config(config, tmp_path, runtime, **host)
    try:
        async with running_gateway(cloud_cfg) as gw:
            user = await gw.new_user()
            cloud = Cloud(gw=gw, config=cloud_cfg, runtime=runtime, user=user)
            try:
                cloud.start("scheduler", run_scheduler)
                cloud.start("dispatcher", run_dispatcher)
                if hostd:
                    cloud.start("hostd", run_hostd)
                yield cloud
            finally:
                for name in list(cloud.tasks):
                    await cloud.stop(name)
    finally:
        await asyncio.to_thread(kill_all, runtime)


class HostdProcess:
    """``ucloud serve hostd`` as a real process with the cloud's config."""

    def __init__(self, cloud: Cloud, directory: Path) -> None:
        self.settings = directory / "hostd.toml"
        self.settings.write_text(settings_text(cloud.config))
        self.log = directory / "hostd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UCLOUD_")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ucloud.cli.main", "--config", str(self.settings),
                 "serve", "hostd"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            )  # fmt: skip

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def settings_text(config: Config) -> str:
    """``config`` as the TOML file a ``ucloud --config FILE`` process reads."""
    return render_settings(_without_none(msgspec.to_builtins(config)))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value
