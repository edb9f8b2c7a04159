"""A VM's interactive serial console in this terminal, over the gateway's WebSocket.

``attach_serial`` asks for a console ticket (``POST /v1/vms/{id}/console-tickets``), opens
``/v1/vms/{id}/console/serial?ticket=...`` and puts the terminal in raw mode: every key
goes to the VM's serial port, everything the VM prints comes back, until the escape
``Ctrl-a q`` (``Ctrl-a a`` sends a Ctrl-a itself) or the console closes. The window size
is sent once as a control message (``{"resize": [cols, rows]}``, a text frame); a serial
line cannot carry it, so the guest keeps its own. Without a terminal on stdin the bytes
are relayed as they are and the end of stdin detaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ucloud.client.http import GatewayClient, api_error, path
from ucloud.errors import Unreachable

ESCAPE = b"\x01"  # Ctrl-a
DETACH = b"q"
ESCAPE_HELP = "Ctrl-a q"
OPEN_TIMEOUT_S = 15.0


def ticket(gateway: GatewayClient, vm: str, kind: str) -> dict[str, Any]:
    """A console ticket: ``{"ticket", "vm", "kind", "expires_at", "path"}``."""
    answer: dict[str, Any] = gateway.post(path("v1", "vms", vm, "console-tickets"), {"kind": kind})
    return answer


def ws_url(base: str, ws_path: str) -> str:
    """The WebSocket address of a path on the gateway at ``base`` (http -> ws)."""
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://").rstrip("/") + ws_path
    return "ws://" + base.removeprefix("http://").rstrip("/") + ws_path


def attach_serial(gateway: GatewayClient, vm: str) -> int:
    """Attach this terminal to the serial console of ``vm``; 0 when detached or closed."""
    granted = ticket(gateway, vm, "serial")
    url = ws_url(gateway.url, granted["path"])
    return asyncio.run(_attach(url, granted["vm"]))


async def _attach(url: str, vm: str) -> int:
    try:
        conn = await connect(url, open_timeout=OPEN_TIMEOUT_S, max_size=None, compression=None)
    except InvalidStatus as exc:
        raise api_error(exc.response.status_code, bytes(exc.response.body or b"")) from exc
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise Unreachable(url.split("?", 1)[0], str(exc)) from exc
    interactive = os.isatty(sys.stdin.fileno())
    async with conn:
        if interactive:
            sys.stderr.write(f"Attached to the serial console of {vm}; {ESCAPE_HELP} detaches.\r\n")
            sys.stderr.flush()
            size = shutil.get_terminal_size()
            await conn.send(json.dumps({"resize": [size.columns, size.lines]}))
        with _raw(interactive):
            done = await _relay(conn, interactive)
    if interactive:
        sys.stderr.write(f"\r\n{done}\r\n")
    return 0


@contextlib.contextmanager
def _raw(interactive: bool) -> Iterator[None]:
    if not interactive:
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _relay(conn: ClientConnection, interactive: bool) -> str:
    """Relay until detached, stdin ended or the console closed; says which."""
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[bytes] = asyncio.Queue()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        keys.put_nowait(data)
        if not data:
            loop.remove_reader(fd)

    loop.add_reader(fd, readable)

    async def typed() -> str:
        pending_escape = False
        while data := await keys.get():
            out = bytearray()
            for byte in data:
                char = bytes([byte])
                if pending_escape:
                    pending_escape = False
                    if interactive and char == DETACH:
                        if out:
                            await conn.send(bytes(out))
                        return "Detached."
                    out += ESCAPE if char in (b"a", ESCAPE) else ESCAPE + char
                    continue
                if interactive and char == ESCAPE:
                    pending_escape = True
                    continue
                out += char
            if out:
                await conn.send(bytes(out))
        return "End of input."

    async def printed() -> str:
        out = sys.stdout.buffer
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                if isinstance(message, bytes):
                    out.write(message)
                    out.flush()
        return "The console closed."

    tasks = [asyncio.create_task(typed()), asyncio.create_task(printed())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result()
    finally:
        loop.remove_reader(fd)
        for task in tasks:
            task.cancel()


def vnc_url(gateway: GatewayClient, vm: str) -> tuple[str, str, dict[str, Any]]:
    """(the dashboard's noVNC page for a fresh ticket, the WebSocket itself, the ticket)."""
    granted = ticket(gateway, vm, "vnc")
    page = f"{gateway.url}/ui/vnc?vm={granted['vm']}&ticket={granted['ticket']}"
    return page, ws_url(gateway.url, granted["path"]), granted

