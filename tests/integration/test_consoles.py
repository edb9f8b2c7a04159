"""The interactive consoles of a real ``tiny`` guest under TCG, through the gateway.

``ucloud vm console`` under a pseudo-terminal types into the guest's shell and reads the
answer while a second viewer (a WebSocket of its own) sees the same; the WebSockets refuse
callers without a valid ticket or token, used tickets, and other users; the VNC WebSocket
speaks RFB and sends a framebuffer the guest's VGA drew on; ``ucloud replay audit`` names
who opened the consoles; after hostd was killed and started anew, the serial console
attaches again. A ticket is used once, also by racing uses, and not past its time.
"""

from __future__ import annotations

import asyncio
import os
import random
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.gateway_harness import User
from tests.integration.hostd_harness import (
    Cloud,
    HostdProcess,
    built,
    import_image,
    running_cloud,
    settings_text,
)
from tests.integration.test_hostd_reattach import wait_for_text
from ucloud.config import Config
from ucloud.errors import Forbidden
from ucloud.gateway.console_tickets import TICKET_TTL_S, ConsoleTickets
from ucloud.imagebuild.tiny import UP_LINE

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]


@pytest.fixture
async def cloud(config: Config, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(config, tmp_path) as running:
        await import_image(running, await asyncio.to_thread(built, "tiny"), "tiny")
        yield running


async def booted(cloud: Cloud, name: str) -> str:
    vm = str((await cloud.create(name, "tiny"))["id"])
    await cloud.wait_status(vm, "running", timeout=60)
    await cloud.wait_console(vm, UP_LINE, timeout=120)
    return vm


async def ticket(cloud: Cloud, user: User, vm: str, kind: str) -> dict[str, str]:
    answer = await cloud.gw.client(user).post(f"/v1/vms/{vm}/console-tickets", json={"kind": kind})
    assert answer.status_code == 201, answer.text
    granted: dict[str, str] = answer.json()
    return granted


def ws(cloud: Cloud, path: str) -> str:
    return "ws://" + cloud.gw.url.removeprefix("http://") + path


async def refused(url: str, **kwargs: object) -> int:
    """The HTTP status a WebSocket is refused with (fails if it is accepted)."""
    try:
        async with connect(url, open_timeout=20, **kwargs):  # type: ignore[arg-type]
            pass
    except InvalidStatus as exc:
        return exc.response.status_code
    raise AssertionError(f"{url} was accepted")


async def read_until(conn: ClientConnection, text: bytes, timeout: float) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while text not in seen:
            message = await conn.recv()
            if isinstance(message, bytes):
                seen += message
    return seen


class Pty:
    """``ucloud vm console`` as a real process on a pseudo-terminal."""

    def __init__(self, cloud: Cloud, home: Path, vm: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UCLOUD_")}
        env |= {"UCLOUD_URL": cloud.gw.url, "UCLOUD_TOKEN": cloud.user.token,
                "UCLOUD_CONFIG_DIR": str(home)}  # fmt: skip
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ucloud.cli.main", "vm", "console", vm],
            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
        )
        os.close(slave)
        os.set_blocking(self.master, False)
        self.seen = b""

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    async def wait_for(self, text: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            try:
                self.seen += os.read(self.master, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.05)
            except OSError:  # the process is gone and the pty closed
                break
            assert time.monotonic() < deadline, f"no {text!r} on the terminal: {self.seen!r}"
        assert text in self.seen, f"no {text!r} on the terminal: {self.seen!r}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.master)


def shell_line(tag: str) -> tuple[bytes, bytes]:
    """A command for the guest's shell, and what only its answer holds."""
    n = random.randrange(10_000, 99_999)
    return f"echo {tag}-$(({n}+1))\r".encode(), f"{tag}-{n + 1}".encode()


@pytest.mark.timeout(400)
async def test_the_serial_console_in_a_terminal_with_a_second_viewer(
    cloud: Cloud, tmp_path: Path
) -> None:
    vm = await booted(cloud, "c1")
    second = await ticket(cloud, cloud.user, vm, "serial")
    async with connect(ws(cloud, second["path"]), open_timeout=20, max_size=None) as viewer:
        term = Pty(cloud, tmp_path, vm)
        try:
            await term.wait_for(b"Ctrl-a q", timeout=30)
            command, answer = shell_line("hi")
            term.type(b"\r" + command)
            await term.wait_for(answer, timeout=60)
            assert answer in await read_until(viewer, answer, timeout=30)  # both saw it
            term.type(b"\x01q")  # Ctrl-a q detaches
            assert await asyncio.to_thread(term.process.wait, 20) == 0
        finally:
            term.close()
        command, answer = shell_line("still")
        await viewer.send(command)  # the other viewer stays attached and can type
        await read_until(viewer, answer, timeout=60)
    log = await cloud.wait_console(vm, answer.decode(), timeout=30)  # the scrollback has it all
    assert log > 0

    settings = tmp_path / "ucloud.toml"
    settings.write_text(settings_text(cloud.config))
    audit = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ucloud.cli.main", "--config", str(settings), "replay", "audit",
         "--vm", vm, "--event", "vm.console_opened"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stderr
    opened = audit.stdout.splitlines()[1:]  # below the header
    assert len(opened) == 2 and all(cloud.user.name in line for line in opened), audit.stdout
    assert all("kind=serial" in line for line in opened), opened


@pytest.mark.timeout(300)
async def test_only_tickets_and_tokens_of_the_owner_or_an_admin_open_a_console(
    cloud: Cloud,
) -> None:
    vm = await booted(cloud, "c2")
    serial = ws(cloud, f"/v1/vms/{vm}/console/serial")
    assert await refused(serial) == 403
    assert await refused(serial + "?ticket=made-up") == 403
    granted = await ticket(cloud, cloud.user, vm, "serial")
    assert granted["vm"] == vm and granted["kind"] == "serial"
    async with connect(ws(cloud, granted["path"]), open_timeout=20):
        pass
    assert await refused(ws(cloud, granted["path"])) == 403  # used once already
    vnc_ticket = await ticket(cloud, cloud.user, vm, "vnc")
    assert await refused(serial + f"?ticket={vnc_ticket['ticket']}") == 403  # another kind
    auth = {"Authorization": f"Bearer {cloud.user.token}"}
    async with connect(serial, additional_headers=auth, open_timeout=20):
        pass

    other = await cloud.gw.new_user()
    answer = await cloud.gw.client(other).post(
        f"/v1/vms/{vm}/console-tickets", json={"kind": "serial"}
    )
    assert answer.status_code == 404
    theirs_token = {"Authorization": f"Bearer {other.token}"}
    assert await refused(serial, additional_headers=theirs_token) == 404
    theirs = str((await cloud.gw.client(other).post(
        "/v1/vms", json={"name": "o", "image": "tiny", "cpu": 1, "ram": "128M", "ssd": 1}
    )).json()["id"])  # fmt: skip
    mine = await ticket(cloud, cloud.user, vm, "serial")
    elsewhere = f"/v1/vms/{theirs}/console/serial?ticket={mine['ticket']}"
    assert await refused(ws(cloud, elsewhere)) == 403
    admin = await ticket(cloud, cloud.gw.admin, vm, "serial")  # an admin may
    async with connect(ws(cloud, admin["path"]), open_timeout=20):
        pass
    bad = await cloud.client().post(f"/v1/vms/{vm}/console-tickets", json={"kind": "ssh"})
    assert bad.status_code == 400 and bad.json()["field"] == "kind"
    plain = await cloud.client().get(f"/v1/vms/{vm}/console/serial")
    assert plain.status_code == 400

    runtime = cloud.runtime / vm
    assert runtime.stat().st_mode & 0o777 == 0o700
    for sock in ("vnc.sock", "serial.sock"):
        assert (runtime / sock).stat().st_mode & 0o777 == 0o600


class Rfb:
    """Just enough of an RFB client: bytes read exactly from WebSocket frames."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.buffer = b""

    async def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            message = await self.conn.recv()
            assert isinstance(message, bytes), "RFB goes in binary frames"
            self.buffer += message
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


@pytest.mark.timeout(300)
async def test_the_vnc_websocket_speaks_rfb_and_shows_what_the_guest_drew(cloud: Cloud) -> None:
    vm = await booted(cloud, "c3")
    granted = await ticket(cloud, cloud.user, vm, "vnc")
    async with connect(
        ws(cloud, granted["path"]), subprotocols=["binary"],  # type: ignore[list-item]
        open_timeout=20, max_size=None,
    ) as conn:
        assert conn.subprotocol == "binary"
        rfb = Rfb(conn)
        assert await rfb.read(12) == b"RFB 003.008\n"
        await conn.send(b"RFB 003.008\n")
        count = (await rfb.read(1))[0]
        assert 1 in await rfb.read(count)  # security type None
        await conn.send(b"\x01")
        assert await rfb.read(4) == b"\0\0\0\0"
        await conn.send(b"\x01")  # ClientInit, shared
        width, height = struct.unpack(">HH", await rfb.read(4))
        bpp = (await rfb.read(16))[0]
        (name_length,) = struct.unpack(">I", await rfb.read(4))
        await rfb.read(name_length)
        assert width > 0 and height > 0 and bpp in (8, 16, 32)
        pixels = b""
        async with asyncio.timeout(120):
            while len(set(chunks(pixels, bpp // 8))) < 2:  # until something is drawn
                await conn.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))
                pixels = await framebuffer_update(rfb, bpp // 8)
                await asyncio.sleep(0.5)


async def framebuffer_update(rfb: Rfb, depth: int) -> bytes:
    """The pixels of one FramebufferUpdate (raw rectangles), other messages skipped."""
    while True:
        kind = (await rfb.read(1))[0]
        if kind == 0:
            break
        if kind == 2:  # Bell
            continue
        assert kind == 3, f"unexpected RFB message {kind}"  # ServerCutText
        await rfb.read(3)
        (length,) = struct.unpack(">I", await rfb.read(4))
        await rfb.read(length)
    await rfb.read(1)
    (rects,) = struct.unpack(">H", await rfb.read(2))
    pixels = b""
    for _ in range(rects):
        _, _, w, h, encoding = struct.unpack(">HHHHi", await rfb.read(12))
        if encoding == 0:
            pixels += await rfb.read(w * h * depth)
        else:
            assert encoding < 0, f"encoding {encoding} was never asked for"  # pseudo-encodings
    return pixels


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def attach_when_served(cloud: Cloud, vm: str, timeout: float) -> ClientConnection:
    """A serial console of ``vm``, once its host serves consoles again."""
    deadline = time.monotonic() + timeout
    while True:
        granted = await ticket(cloud, cloud.user, vm, "serial")
        try:
            return await connect(ws(cloud, granted["path"]), open_timeout=20)
        except InvalidStatus as exc:  # 409: the new hostd's endpoint is not published yet
            assert exc.response.status_code == 409, exc
            assert time.monotonic() < deadline, "the console never came back"
            await asyncio.sleep(0.5)


@pytest.mark.timeout(300)
async def test_the_serial_console_attaches_again_after_hostd_was_killed(
    config: Config, tmp_path: Path
) -> None:
    async with running_cloud(config, tmp_path, hostd=False) as cloud:
        await import_image(cloud, await asyncio.to_thread(built, "tiny"), "tiny")
        hostd = HostdProcess(cloud, tmp_path)
        hostd.start()
        try:
            await wait_for_text(hostd, "reattached: 0 VM(s) found", timeout=60)
            vm = await booted(cloud, "c4")
            before = await attach_when_served(cloud, vm, timeout=30)
            async with before:
                hostd.kill()  # SIGKILL: QEMU and its serial socket stay
                async with asyncio.timeout(30):
                    with pytest.raises(ConnectionClosed):
                        while True:
                            await before.recv()
            hostd.start()
            async with await attach_when_served(cloud, vm, timeout=60) as conn:
                command, answer = shell_line("again")
                await conn.send(b"\r" + command)
                await read_until(conn, answer, timeout=60)
        finally:
            hostd.stop()


@pytest.mark.timeout(60)
async def test_a_ticket_is_used_once_even_by_racing_uses_and_not_past_its_time(
    cloud: Cloud,
) -> None:
    now = [1_000_000.0]
    tickets = ConsoleTickets(cloud.gw.store, cloud.config.etcd.secrets_prefix, lambda: now[0])
    secret, record = await tickets.issue("dora", "users", "vm1", "serial")
    assert record.expires == now[0] + TICKET_TTL_S
    assert await cloud.gw.store.get(tickets.prefix + secret) is not None  # in etcd's secrets
    uses = await asyncio.gather(
        *(tickets.redeem(secret, "vm1", "serial") for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(use, BaseException) for use in uses) == 1
    assert all(isinstance(use, Forbidden) for use in uses if isinstance(use, BaseException))
    assert await cloud.gw.store.get(tickets.prefix + secret) is None

    late, _ = await tickets.issue("dora", "users", "vm1", "vnc")
    now[0] += TICKET_TTL_S + 1
    with pytest.raises(Forbidden, match="expired"):
        await tickets.redeem(late, "vm1", "vnc")
    other, _ = await tickets.issue("dora", "users", "vm1", "vnc")
    with pytest.raises(Forbidden, match="another VM"):
        await tickets.redeem(other, "vm2", "vnc")
