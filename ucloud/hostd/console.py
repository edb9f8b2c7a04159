"""The serial console logs of a host's VMs, served to the gateway.

A VM's serial console goes to ``serial.log`` in its runtime directory, on its host. Each
hostd serves those files on a small internal HTTP endpoint (``[host] console_listen``:
loopback on one machine, the underlay address in a cluster) and publishes where, with a
token made at each start, in etcd under the secrets prefix (``console/<host>``, outside
the log and the projection). The gateway checks that the caller owns the VM, finds the
VM's host in the projection and its endpoint in etcd, and proxies:

    GET /console/<vm>?offset=N&limit=M   Authorization: Bearer <token>
    -> {"offset": N, "next": N + bytes, "size": file size, "data": text}

A negative ``offset`` counts from the end (``-4096``: the last 4 KiB). ``data`` is the
bytes from ``offset`` decoded as UTF-8 (invalid bytes replaced), cut before a character
split at the end; ``next`` is where to ask next (``--follow`` polls with it).

The same endpoint, with the same token, serves the interactive consoles as WebSockets
(``/serial/<vm>``, ``/vnc/<vm>``: ``console_ws.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from pathlib import Path

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ucloud.errors import InputError, ServerError
from ucloud.events.base import valid_token
from ucloud.hostd.console_ws import ConsoleStreams
from ucloud.listen import Server, bind, url_of
from ucloud.store import Store

log = logging.getLogger(__name__)

MAX_CHUNK = 1 << 20
_STOP_S = 2.0


class ConsoleChunk(msgspec.Struct, frozen=True, kw_only=True):
    offset: int
    next: int
    size: int
    data: str


class ConsoleEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where a host serves its consoles, and the token it wants."""

    url: str
    token: str


def endpoint_key(secrets_prefix: str, host: str) -> str:
    return f"{secrets_prefix}console/{host}"


def read_chunk(path: Path, offset: int, limit: int = MAX_CHUNK) -> ConsoleChunk:
    """Up to ``limit`` bytes of the log from ``offset`` (negative: from the end)."""
    limit = max(1, min(limit, MAX_CHUNK))
    with path.open("rb") as log_file:
        size = log_file.seek(0, 2)
        start = max(0, size + offset) if offset < 0 else min(offset, size)
        log_file.seek(start)
        raw = log_file.read(limit)
    whole = _whole_chars(raw)
    return ConsoleChunk(
        offset=start, next=start + len(whole), size=size,
        data=whole.decode("utf-8", errors="replace"),
    )


def _whole_chars(raw: bytes) -> bytes:
    """``raw`` without a UTF-8 character cut off at its end."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte < 0x80:
            return raw
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return raw if back >= need else raw[:-back]
    return raw

def console_app(runtime_root: Path, token: str) -> Starlette:
    """The console endpoint: serial logs under ``runtime_root``, for holders of ``token``."""
    expected = f"Bearer {token}".encode()

    def answer(status: int, body: object) -> Response:
        return Response(msgspec.json.encode(body), status, media_type="application/json")

    async def console(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return answer(401, {"error": "a valid console token is required", "field": ""})
        vm = request.path_params["vm"]
        try:
            offset = _integer(request.query_params.get("offset", "0"), "offset")
            limit = _integer(request.query_params.get("limit", str(MAX_CHUNK)), "limit")
            if not valid_token(vm):
                raise InputError("id", f"{vm!r} is not a VM id")
        except InputError as exc:
            return answer(400, {"error": exc.reason, "field": exc.field})
        path = runtime_root / vm / "serial.log"
        try:
            chunk = await asyncio.to_thread(read_chunk, path, offset, limit)
        except FileNotFoundError:
            return answer(404, {"error": f"no console log of VM {vm} on this host", "field": "id"})
        return answer(200, chunk)

    streams = ConsoleStreams(runtime_root, token)
    return Starlette(routes=[Route("/console/{vm}", console, methods=["GET"]), *streams.routes()])


def _integer(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InputError(field, f"{text!r} is not a whole number") from None


async def serve_consoles(
    store: Store, key: str, listen: str, advertised: str, runtime_root: Path
) -> None:
    """Serve the console endpoint and publish it at ``key`` until cancelled."""
    token = secrets.token_urlsafe(32)
    sock = bind(listen, "host.console_listen")
    config = uvicorn.Config(
        console_app(runtime_root, token), log_config=None, access_log=False, lifespan="off",
        server_header=False, timeout_graceful_shutdown=1,
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="hostd-console")
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
            raise ServerError("the console endpoint stopped at once")
        url = url_of(sock, advertised)
        await store.put(key, msgspec.json.encode(ConsoleEndpoint(url=url, token=token)))
        log.info("serial consoles served on %s", url)
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, _STOP_S)
        raise
    finally:
        if not task.done():
            task.cancel()
        sock.close()
