"""HTTP/1.1 for the metadata service: small GETs answered from memory, on asyncio directly.

Every answer is computed synchronously from in-memory state, so a connection needs no
task: ``data_received`` parses with httptools and writes each reply in request order
(pipelining and keep-alive work; requests are GET or HEAD without bodies). A request line
and headers larger than ``MAX_HEAD`` bytes, or bytes that are not HTTP, get a 400 and the
connection is closed. Connections idle for ``IDLE_S`` are closed.

Who is asking is decided per request from the connection's peer address and the bridge
the connection arrived on, which the listener knows (one socket per bridge) or learns
from the accepted socket (``arrival``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import httptools

from ucloud.metadata.documents import TEXT, Reply

log = logging.getLogger(__name__)

MAX_HEAD = 8192
IDLE_S = 30.0

# method, path, source address, arrival (VNI of the bridge, None: not a VM bridge) -> reply
Handler = Callable[[str, str, str, "int | None"], Reply]
Arrival = Callable[[Any], "int | None"]  # the accepted socket -> its arrival bridge's VNI

_REASONS = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 500: "Internal Server Error",
}


def render(reply: Reply, *, head: bool = False, close: bool = False) -> bytes:
    """The bytes of ``reply`` on the wire (no body for HEAD)."""
    lines = [
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}",
        f"Content-Type: {reply.content_type}",
        f"Content-Length: {len(reply.body)}",
        "Cache-Control: no-store",
    ]
    if close:
        lines.append("Connection: close")
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return wire if head else wire + reply.body


class MetadataProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handle: Handler, arrival: Arrival) -> None:
        self._handle = handle
        self._arrival_of = arrival
        self._arrival: int | None = None
        self._source = ""
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._pending = 0  # bytes of the current request so far
        self._idle: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._source = str(peer[0]) if peer else ""
        sock = transport.get_extra_info("socket")
        try:
            self._arrival = self._arrival_of(sock)
        except OSError as exc:
            log.warning("metadata: cannot tell where %s arrived: %s", self._source, exc)
            self._arrival = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._pending += len(data)
        if self._pending > MAX_HEAD:
            self._fail(b"request too large\n")
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(b"upgrades are not supported\n")
        except httptools.HttpParserError:
            self._fail(b"not an HTTP request\n")
        else:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._transport = None

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        self._pending = 0
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        method = self._parser.get_method().decode("ascii", "replace")
        path = self._url.decode("utf-8", "replace")
        try:
            reply = self._handle(method, path, self._source, self._arrival)
        except Exception:  # noqa: BLE001 - one bad request must not end the service
            log.exception("metadata: %s %s from %s failed", method, path, self._source)
            reply = Reply(500, TEXT, b"internal error\n")
        keep = self._parser.should_keep_alive()
        transport.write(render(reply, head=method == "HEAD", close=not keep))
        if not keep:
            transport.close()

    # --- internals ---

    def _fail(self, why: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(render(Reply(400, TEXT, why), close=True))
            transport.close()

    def _arm(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        transport = self._transport
        if transport is not None:
            self._idle = asyncio.get_running_loop().call_later(IDLE_S, transport.close)


def fixed(vni: int | None) -> Arrival:
    """The arrival of every connection on a listener bound to one bridge."""
    return lambda _sock: vni


def tcp_listener(address: str, port: int, scope: int = 0, freebind: bool = False) -> socket.socket:
    """A listening TCP socket on ``[address%scope]:port`` (non-blocking, for asyncio)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if freebind:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        sock.bind((address, port, 0, scope))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


IPV6_FREEBIND = 78  # linux/in6.h: bind to an address not (yet) on this host
