"""The accelerator QEMU runs VMs with: ``kvm`` or ``tcg``, chosen once per host.

Theory of operation
-------------------
``[host] accel`` says ``kvm``, ``tcg`` or ``auto``. For ``auto``, ``/dev/kvm`` being
there is not enough: some hosts offer a paravirtual /dev/kvm (e.g. PVM) for which QMP's
``query-kvm`` reports KVM enabled, yet stock guest kernels crash or hang under it, or
QEMU aborts setting up the CPU. So ``auto`` boots the built-in ``tiny`` guest under KVM
once and waits for its known serial line (``ucloud-tiny: up``): seen -> ``kvm``; QEMU
failing, the guest panicking or staying silent for ``PROBE_TIMEOUT_S`` -> ``tcg``. The
answer is cached in ``<data_dir>/accel.json`` together with what it depends on (the
kernel release, the QEMU binary, the CPU model), so only a change of those probes again.
``choose`` is the pure decision; ``Accelerator`` the shell around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import msgspec

from ucloud.config import HostConfig
from ucloud.errors import UcloudError
from ucloud.hostd.qemu import Accel, Launch, QemuProcess, RuntimeDir, qemu_argv
from ucloud.hostd.qmp import QmpSession
from ucloud.imagebuild.tiny import UP_LINE

log = logging.getLogger(__name__)

CACHE_FILE = "accel.json"
KVM_DEVICE = Path("/dev/kvm")
PROBE_TIMEOUT_S = 30.0
PROBE_RAM_MIB = 128
PANIC = b"Kernel panic"


class Fingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """What a probe's answer depends on."""

    kernel: str
    qemu: str
    cpu_model: str


class Probed(msgspec.Struct, frozen=True, kw_only=True):
    accel: Accel
    reason: str
    fingerprint: Fingerprint
    at: float = 0.0


def choose(
    configured: Literal["auto", "kvm", "tcg"],
    kvm_device: bool,
    cached: Probed | None,
    fingerprint: Fingerprint,
) -> Accel | Literal["probe"]:
    """The accelerator, or ``"probe"`` when only a boot under KVM can tell (pure)."""
    if configured != "auto":
        return configured
    if not kvm_device:
        return "tcg"
    if cached is not None and cached.fingerprint == fingerprint:
        return cached.accel
    return "probe"


Probe = Callable[[], Awaitable[tuple[bool, str]]]


class Accelerator:
    """The host's accelerator, probed at most once per fingerprint (see the module)."""

    def __init__(self, host: HostConfig, data_dir: Path, probe: Probe) -> None:
        self.host = host
        self.cache = data_dir / CACHE_FILE
        self.probe = probe
        self._lock = asyncio.Lock()
        self._known: Accel | None = None

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(
            kernel=os.uname().release,
            qemu=shutil.which(self.host.qemu) or self.host.qemu,
            cpu_model=self.host.cpu_model,
        )

    def cached(self) -> Probed | None:
        try:
            return msgspec.json.decode(self.cache.read_bytes(), type=Probed)
        except (OSError, msgspec.DecodeError):
            return None

    async def get(self) -> Accel:
        if self._known is not None:
            return self._known
        async with self._lock:
            if self._known is None:
                self._known = await self._decide()
            return self._known

    async def _decide(self) -> Accel:
        fingerprint = self.fingerprint()
        choice = choose(self.host.accel, KVM_DEVICE.exists(), self.cached(), fingerprint)
        if choice != "probe":
            return choice
        log.info("accel auto: booting the tiny guest under KVM to see whether KVM works")
        try:
            works, reason = await self.probe()
        except UcloudError as exc:  # no tiny image, no QEMU: TCG now, probe again later
            log.warning("accel auto: cannot probe KVM (%s); using tcg for now", exc)
            return "tcg"
        accel: Accel = "kvm" if works else "tcg"
        probed = Probed(accel=accel, reason=reason, fingerprint=fingerprint, at=time.time())
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(probed))
        tmp.replace(self.cache)
        log.info("accel auto: %s (%s); cached in %s", accel, reason, self.cache)
        return accel


async def probe_kvm(
    binary: str, cpu_model: str, image: Path, workdir: Path, timeout: float = PROBE_TIMEOUT_S
) -> tuple[bool, str]:
    """Boot the tiny ``image`` (qcow2) under KVM; (whether it came up, what happened)."""
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="probe-", dir=workdir))
    runtime = RuntimeDir(root, "kvm")
    qemu = QemuProcess()
    try:
        runtime.path.mkdir()
        disk = runtime.path / "disk.qcow2"
        await asyncio.to_thread(
            subprocess.run,
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.resolve()),
             str(disk)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        blockdev = f"driver=qcow2,node-name=root,file.driver=file,file.filename={disk}"
        launch = Launch(
            vm="00000000-0000-0000-0000-000000000000", directory=str(runtime.path), cpu=1,
            ram_mib=PROBE_RAM_MIB, accel="kvm", cpu_model=cpu_model,
            disks=(("-blockdev", blockdev, "-device", "virtio-blk-pci,drive=root"),),
        )
        try:
            await qemu.launch(qemu_argv(binary, launch), runtime)
        except UcloudError as exc:
            return False, f"QEMU fails under KVM: {exc}"
        session = QmpSession("kvm-probe", runtime.qmp)
        await session.connect()
        try:
            await session.execute("cont")
            return await _watch_serial(runtime, session, timeout)
        finally:
            await session.disconnect()
    except (OSError, subprocess.SubprocessError) as exc:
        raise UcloudError(f"the KVM probe could not run: {exc}") from exc
    finally:
        qemu.kill(runtime)
        await qemu.wait_gone(runtime, 10)
        shutil.rmtree(root, ignore_errors=True)


async def _watch_serial(
    runtime: RuntimeDir, session: QmpSession, timeout: float
) -> tuple[bool, str]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError):
            text = runtime.serial.read_bytes()
            if UP_LINE.encode() in text:
                return True, f"the tiny guest came up in {time.monotonic() - started:.1f}s"
            if PANIC in text:
                return False, "the tiny guest's kernel panicked under KVM"
        if session.closed.is_set():
            return False, "QEMU ended while the tiny guest booted under KVM"
        await asyncio.sleep(0.2)
    return False, f"the tiny guest said nothing within {timeout:g}s under KVM"
