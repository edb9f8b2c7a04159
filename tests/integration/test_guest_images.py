"""Real boots of the built-in images under TCG.

``tiny`` reaches its serial line, gets an IPv6 address by SLAAC and powers off on QMP
``system_powerdown``; ``debian`` reaches a login prompt, makes its SSH host keys at first
boot and powers off the same way. The images are built into a cache kept across runs
(``UCLOUD_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/ucloud/images``); the recipe hash in the
file name keeps it from going stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from ucloud.imagebuild import build, tiny

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

# QEMU's user-mode network announces fec0::/64; the default MAC gives this EUI-64 address.
SLAAC_ADDRESS = b"fec0::5054:ff:fe12:3456"


def image_cache() -> Path:
    explicit = os.environ.get("UCLOUD_IMAGE_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ucloud" / "images"


def built(name: str) -> Path:
    started = time.monotonic()
    path = build(name, image_cache(), progress=print)
    print(f"{name}: image ready in {time.monotonic() - started:.1f}s: {path}")
    return path


class Guest:
    """One QEMU under TCG; its serial port and QMP connect to sockets this test listens on."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.output = bytearray()
        self.events: list[dict[str, Any]] = []
        self._more = asyncio.Event()
        self._serial: asyncio.StreamWriter | None = None
        self._qmp: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future()
        )
        self._session: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._servers: list[asyncio.Server] = []
        self._stderr: BinaryIO | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0.0

    async def start(self, image: Path, memory_mib: int) -> None:
        disk = self.directory / "disk.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(disk)],
            check=True,
        )
        serial, qmp = self.directory / "serial.sock", self.directory / "qmp.sock"
        self._servers = [
            await asyncio.start_unix_server(self._on_serial, path=str(serial)),
            await asyncio.start_unix_server(self._on_qmp, path=str(qmp)),
        ]
        self._stderr = (self.directory / "qemu.log").open("wb")
        self.started = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", str(memory_mib),
            "-nodefaults", "-no-user-config", "-display", "none",
            "-drive", f"file={disk},if=virtio,format=qcow2",
            "-nic", "user,model=virtio-net-pci",
            "-chardev", f"socket,id=serial,path={serial}", "-serial", "chardev:serial",
            "-chardev", f"socket,id=qmp,path={qmp}", "-mon", "chardev=qmp,mode=control",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=self._stderr,
        )  # fmt: skip

    async def _on_serial(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._serial = writer
        with (self.directory / "serial.log").open("ab") as log:
            while chunk := await reader.read(4096):
                self.output += chunk
                log.write(chunk)
                log.flush()
                self._more.set()

    async def _on_qmp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._qmp.set_result((reader, writer))

    async def wait_for(self, text: bytes, timeout: float, start: int = 0) -> float:
        """Seconds since start when ``text`` appeared on the serial console."""
        deadline = time.monotonic() + timeout
        while text not in self.output[start:]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = bytes(self.output[-1500:]).decode(errors="replace")
                raise AssertionError(
                    f"no {text!r} on the console after {timeout}s{self._exited()}:\n{tail}"
                )
            self._more.clear()
            try:
                await asyncio.wait_for(self._more.wait(), remaining)
            except TimeoutError:
                pass
        return time.monotonic() - self.started

    def _exited(self) -> str:
        if self.process is None or self.process.returncode is None:
            return ""
        log = (self.directory / "qemu.log").read_text(errors="replace")
        return f" (QEMU exited {self.process.returncode}: {log.strip()})"

    async def type(self, line: str) -> int:
        """Send a line to the serial console; returns where its answer will start."""
        assert self._serial is not None, "the serial port never connected"
        mark = len(self.output)
        self._serial.write(line.encode() + b"\n")
        await self._serial.drain()
        return mark

    async def qmp(self, command: str) -> dict[str, Any]:
        if self._session is None:
            reader, writer = await asyncio.wait_for(asyncio.shield(self._qmp), 30)
            greeting = json.loads(await reader.readline())
            assert "QMP" in greeting, greeting
            self._session = (reader, writer)
            await self._exchange("qmp_capabilities")
        return await self._exchange(command)

    async def _exchange(self, command: str) -> dict[str, Any]:
        assert self._session is not None
        reader, writer = self._session
        writer.write(json.dumps({"execute": command}).encode() + b"\n")
        await writer.drain()
        while True:
            message: dict[str, Any] = json.loads(await reader.readline())
            if "event" in message:
                self.events.append(message)
            elif "return" in message or "error" in message:
                assert "error" not in message, message
                return message

    async def wait_exit(self, timeout: float) -> int:
        """QEMU's exit code; QMP events up to the end are in ``events``."""
        assert self.process is not None and self._session is not None
        reader, _ = self._session
        async with asyncio.timeout(timeout):
            while line := await reader.readline():
                self.events.append(json.loads(line))
            return await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        writers = [self._serial]
        if self._qmp.done():
            writers.append(self._qmp.result()[1])
        for writer in writers:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        if self._stderr is not None:
            self._stderr.close()


@pytest.fixture
async def guest(tmp_path: Path) -> AsyncIterator[Guest]:
    machine = Guest(tmp_path)
    try:
        yield machine
    finally:
        await machine.stop()


async def power_down(guest: Guest, timeout: float) -> float:
    pressed = time.monotonic()
    await guest.qmp("system_powerdown")
    assert await guest.wait_exit(timeout) == 0
    shutdowns = [e for e in guest.events if e["event"] == "SHUTDOWN"]
    assert shutdowns and shutdowns[-1]["data"]["guest"] is True, guest.events
    return time.monotonic() - pressed


@pytest.mark.timeout(300)
async def test_tiny_boots_gets_slaac_and_powers_off(guest: Guest) -> None:
    await guest.start(built("tiny"), memory_mib=256)
    up = await guest.wait_for(tiny.UP_LINE.encode(), timeout=60)

    mark = await guest.type('echo "ipv4=$(ip -4 addr show dev eth0 | grep -c inet)"')
    await guest.wait_for(b"ipv4=0", timeout=20, start=mark)
    deadline = time.monotonic() + 30
    while SLAAC_ADDRESS not in guest.output:  # router advertisements come when they come
        assert time.monotonic() < deadline, "no SLAAC address on eth0 after 30s"
        mark = await guest.type("ip -6 addr show dev eth0")
        try:
            await guest.wait_for(SLAAC_ADDRESS, timeout=3, start=mark)
        except AssertionError:
            pass

    off = await power_down(guest, timeout=30)
    print(f"tiny: up after {up:.1f}s, off {off:.1f}s after system_powerdown")


@pytest.mark.timeout(1800)
async def test_debian_boots_to_login_with_fresh_host_keys(guest: Guest) -> None:
    await guest.start(built("debian"), memory_mib=1024)
    login = await guest.wait_for(b"login:", timeout=600)
    keys = await guest.wait_for(b"ucloud: SSH host key fingerprints:", timeout=300)
    await guest.wait_for(b"(ED25519)", timeout=60)
    off = await power_down(guest, timeout=180)
    print(f"debian: login after {login:.1f}s, host keys {keys:.1f}s, off {off:.1f}s")
