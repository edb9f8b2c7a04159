"""The interactive consoles of a host's VMs: serial and VNC streams over WebSockets.

hostd's console endpoint (``console.py``) serves, beside the logs, two WebSockets, for
the holder of the endpoint's token (``Authorization: Bearer <token>``, as for the logs;
the gateway holds it, and does the checks of users and tickets)::

    GET /serial/<vm>   binary frames both ways: the bytes of the VM's serial port
                       (text frames are control messages, JSON: ``{"resize": [cols, rows]}``
                       is accepted and dropped, a serial line has no window size)
    GET /vnc/<vm>      binary frames both ways: the RFB stream of the VM's VNC server

A refusal is an HTTP answer before the upgrade: 403 for a wrong token, 404 when the VM
has no such console on this host (not here, not running, or started before it had one).

QEMU's serial socket takes one client at a time, so a ``SerialHub`` per VM holds the one
connection and shares it: what the guest prints goes to every viewer, what any viewer
types goes to the guest. The hub connects when its first viewer comes and lets go when
its last one leaves, so a hostd started anew finds the socket free and connects again on
demand; ``serial.log`` is QEMU's own and complete whether anyone is attached or not.
A viewer that falls behind by more than ``VIEWER_BACKLOG`` chunks is dropped rather than
slowing the guest. QEMU's VNC server takes many clients: each WebSocket gets its own
connection to ``vnc.sock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import msgspec
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ucloud.events.base import valid_token

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
VIEWER_BACKLOG = 256
_END = b""  # queued to a viewer: the console is gone


class SerialHub:
    """One VM's serial socket, shared by its viewers."""

    def __init__(self, path: Path, gone: Callable[[SerialHub], None]) -> None:
        self.path = path
        self._gone = gone
        self._lock = asyncio.Lock()
        self._viewers: set[asyncio.Queue[bytes]] = set()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def join(self) -> asyncio.Queue[bytes]:
        """A new viewer's queue (connecting first when no one watches); OSError when the
        VM's serial socket cannot be reached."""
        async with self._lock:
            if self._writer is None:
                reader, self._writer = await asyncio.open_unix_connection(str(self.path))
                self._reader_task = asyncio.create_task(self._pump(reader), name="serial-hub")
            queue: asyncio.Queue[bytes] = asyncio.Queue(VIEWER_BACKLOG)
            self._viewers.add(queue)
            return queue

    async def type(self, data: bytes) -> None:
        writer = self._writer
        if writer is not None and data:
            writer.write(data)
            await writer.drain()

    async def leave(self, queue: asyncio.Queue[bytes]) -> None:
        async with self._lock:
            self._viewers.discard(queue)
            if not self._viewers:
                await self._close()

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                for queue in list(self._viewers):
                    try:
                        queue.put_nowait(chunk)
                    except asyncio.QueueFull:  # too slow: this viewer goes
                        self._viewers.discard(queue)
                        _end(queue)
        except OSError as exc:
            log.info("serial console %s: %s", self.path, exc)
        for queue in self._viewers:
            _end(queue)
        self._viewers.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self._gone(self)

    async def _close(self) -> None:
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self._gone(self)


def _end(queue: asyncio.Queue[bytes]) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        while queue.full():
            queue.get_nowait()
    queue.put_nowait(_END)


class ConsoleStreams:
    """The WebSocket routes of one hostd's console endpoint, and its serial hubs."""

    def __init__(self, runtime_root: Path, token: str) -> None:
        self.root = runtime_root
        self.expected = f"Bearer {token}".encode()
        self.hubs: dict[str, SerialHub] = {}

    def routes(self) -> list[WebSocketRoute]:
        return [
            WebSocketRoute("/serial/{vm}", self.serial),
            WebSocketRoute("/vnc/{vm}", self.vnc),
        ]

    async def _admit(self, ws: WebSocket, sock: str) -> Path | None:
        """The socket a request may reach, or None once it has been refused."""
        given = ws.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self.expected):
            await deny(ws, 403, "a valid console token is required")
            return None
        vm: str = ws.path_params["vm"]
        path = self.root / vm / sock
        if not valid_token(vm) or not path.exists():
            await deny(ws, 404, f"no {sock} of VM {vm} on this host")
            return None
        return path

    async def serial(self, ws: WebSocket) -> None:
        path = await self._admit(ws, "serial.sock")
        if path is None:
            return
        vm = ws.path_params["vm"]
        hub = self.hubs.get(vm)
        if hub is None:
            hub = self.hubs[vm] = SerialHub(path, self._forget)
        try:
            queue = await hub.join()
        except OSError as exc:
            await deny(ws, 404, f"the serial console of VM {vm} does not answer: {exc}")
            return
        try:
            await ws.accept()
            await both_ways(lambda: _queue_to_ws(queue, ws), lambda: _ws_to(ws, hub.type))
        finally:
            await hub.leave(queue)

    def _forget(self, hub: SerialHub) -> None:
        vm = hub.path.parent.name
        if self.hubs.get(vm) is hub:
            del self.hubs[vm]

    async def vnc(self, ws: WebSocket) -> None:
        path = await self._admit(ws, "vnc.sock")
        if path is None:
            return
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError as exc:
            await deny(ws, 404, f"the VNC server does not answer: {exc}")
            return

        async def to_qemu(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            await ws.accept()
            await both_ways(lambda: _stream_to_ws(reader, ws), lambda: _ws_to(ws, to_qemu))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def deny(ws: WebSocket, status: int, reason: str, field: str = "") -> None:
    """Refuse a WebSocket before its upgrade: an HTTP answer with ``{"error", "field"}``
    where the server can send one, else a plain 403."""
    body = msgspec.json.encode({"error": reason, "field": field})
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(Response(body, status, media_type="application/json"))
    else:
        await ws.close(1008, reason[:120])


async def both_ways(*sides: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run the two directions of a relay until either ends; then end the other."""
    tasks = [asyncio.create_task(side()) for side in sides]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, WebSocketDisconnect | OSError):
                log.warning("console relay failed: %r", exc)


async def _queue_to_ws(queue: asyncio.Queue[bytes], ws: WebSocket) -> None:
    while chunk := await queue.get():
        await ws.send_bytes(chunk)
    with contextlib.suppress(Exception):
        await ws.close(1000, "the console closed")


async def _stream_to_ws(reader: asyncio.StreamReader, ws: WebSocket) -> None:
    while chunk := await reader.read(CHUNK):
        await ws.send_bytes(chunk)
    with contextlib.suppress(Exception):
        await ws.close(1000, "the console closed")


async def _ws_to(ws: WebSocket, sink: Callable[[bytes], Awaitable[None]]) -> None:
    """Bytes of binary frames to ``sink``; text frames are control messages (dropped)."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data:
            await sink(data)
