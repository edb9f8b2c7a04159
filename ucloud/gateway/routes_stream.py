"""Live streams for the dashboard: VMs as the projection changes them, and the event log.

Both are server-sent events (``text/event-stream``) on an ordinary authenticated GET, so
the bearer token travels in the ``Authorization`` header as on every other call, never
in a URL (a browser's ``EventSource`` cannot set headers; the dashboard reads the stream
with ``fetch``). A stream ends when the token that opened it expires, with an
``expired`` event; the client logs in again and reopens it.

``GET /v1/stream/vms``: first a ``snapshot`` (the list of VMs the caller sees, as
``GET /v1/vms`` answers it), then a ``vm`` event with the view of each VM that changed
and a ``vm_deleted`` event (``{"id": ...}``) for each that is gone. It is fed by the
gateway's mirror of the projection: nothing polls; a change is sent once etcd's watch
has delivered it. A user sees her VMs only, an admin all of them.

``GET /v1/stream/log?last=N`` (admin): the last N events of the log (default 50), then
each new one as it is appended, as ``event`` events ``{"seq", "subject", "time",
"type", "actor", "data"}`` where ``data`` is the event's JSON body as a string.

On the VM stream a comment line goes out every ``HEARTBEAT_S`` seconds of silence, so
that a client and anything between notice a dead connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Mapping

import msgspec
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ucloud.errors import InputError
from ucloud.eventlog import EventLog, Record
from ucloud.gateway import tokens
from ucloud.gateway.auth import Principal
from ucloud.gateway.http import Answer, Call, Endpoint
from ucloud.gateway.state import Gateway
from ucloud.projections.mirror import Mirror

HEARTBEAT_S = 15.0
LOG_LAST = 50
LOG_LAST_MAX = 1000
_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_encoder = msgspec.json.Encoder()


class LogLine(msgspec.Struct, kw_only=True):
    seq: int
    subject: str
    time: str
    type: str
    actor: str
    data: str


def frame(event: str, data: bytes) -> bytes:
    """One server-sent event: its name and a one-line JSON payload."""
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def vm_changes(sent: Mapping[str, bytes], now: Mapping[str, bytes]) -> list[bytes]:
    """The frames that turn what the client was sent into what it should see now: a ``vm``
    for each new or changed view (by id, in id order), a ``vm_deleted`` for each gone."""
    out = [frame("vm", raw) for ident, raw in sorted(now.items()) if sent.get(ident) != raw]
    out += [
        frame("vm_deleted", _encoder.encode({"id": ident}))
        for ident in sorted(sent) if ident not in now
    ]
    return out


def visible_vms(mirror: Mirror, principal: Principal) -> dict[str, bytes]:
    entries = mirror.vms.all() if principal.admin else mirror.vms.of_owner(principal.name)
    return {e.view.id: e.raw for e in entries}


def log_line(record: Record) -> LogLine:
    headers = record.headers
    body = record.data.decode("utf-8", "replace")
    actor = ""
    with contextlib.suppress(msgspec.DecodeError):
        decoded = msgspec.json.decode(record.data)
        if isinstance(decoded, dict):
            actor = str(decoded.get("actor", ""))
    return LogLine(
        seq=record.seq, subject=record.subject, time=record.time.isoformat(),
        type=headers.get("Ucloud-Type", ""), actor=actor, data=body,
    )


async def vm_frames(
    mirror: Mirror, principal: Principal, expires_at: float,
    clock: Callable[[], float] = time.time,
) -> AsyncGenerator[bytes, None]:
    """The frames of ``/v1/stream/vms`` until the token expires."""
    now = visible_vms(mirror, principal)
    yield frame("snapshot", b"[" + b",".join(raw for _, raw in sorted(now.items())) + b"]")
    sent, version = now, mirror.vms.version
    while True:
        left = expires_at - clock()
        if left <= 0:
            yield frame("expired", b"{}")
            return
        if mirror.vms.version != version:
            version = mirror.vms.version
            now = visible_vms(mirror, principal)
            for change in vm_changes(sent, now):
                yield change
            sent = now
            continue  # the yields awaited: look again before waiting
        try:
            # awaited directly, so the wait begins before anything else can run
            async with asyncio.timeout(min(HEARTBEAT_S, left)):
                await mirror.changed()
        except TimeoutError:
            yield b": keepalive\n\n"


async def log_frames(
    log: EventLog, last: int, expires_at: float, clock: Callable[[], float] = time.time
) -> AsyncGenerator[bytes, None]:
    """The frames of ``/v1/stream/log``: the last ``last`` events, then new ones (the
    token's expiry is checked as each batch arrives). The read is this generator's own,
    closed with it."""
    start = max(1, await log.last_sequence() - last + 1)
    async with contextlib.aclosing(log.read(start, follow=True)) as batches:
        async for batch in batches:
            if expires_at <= clock():
                yield frame("expired", b"{}")
                return
            for record in batch:
                yield frame("event", _encoder.encode(log_line(record)))


class EventStream(StreamingResponse):
    """A stream whose frames are made in a task of their own, ended by one plain asyncio
    cancel when the response ends however it ends (the client went away, the server
    stops): the response's cancel scope cancels every await again, which would cut short
    the clean-up of what the frames hold (a reader of the log and its connection)."""

    def __init__(self, frames: AsyncGenerator[bytes, None]) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
        self.frames = frames
        super().__init__(self._relay(), media_type="text/event-stream", headers=_HEADERS)

    async def _produce(self) -> None:
        try:
            async with contextlib.aclosing(self.frames) as frames:
                async for chunk in frames:
                    await self.queue.put(chunk)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    async def _relay(self) -> AsyncGenerator[bytes, None]:
        while (chunk := await self.queue.get()) is not None:
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        producer = asyncio.create_task(self._produce(), name="event-stream")
        try:
            await super().__call__(scope, receive, send)
        finally:
            producer.cancel()
            await asyncio.shield(_ended(producer))


async def _ended(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def event_stream(frames: AsyncGenerator[bytes, None]) -> Answer:
    return Answer(200, EventStream(frames))


def endpoints(gw: Gateway) -> list[Endpoint]:
    def expiry(call: Call) -> float:
        header = call.request.headers.get("authorization", "")
        token = header.partition(" ")[2]
        return float(tokens.verify(gw.auth.key, token, gw.auth.clock()).exp)

    async def vms(call: Call) -> Answer:
        return event_stream(vm_frames(gw.mirror, call.principal, expiry(call), gw.auth.clock))

    async def log_tail(call: Call) -> Answer:
        last = _count(call.request.query_params, "last", LOG_LAST)
        return event_stream(log_frames(gw.log, last, expiry(call), gw.auth.clock))

    return [
        Endpoint(
            "GET", "/v1/stream/vms", vms,
            "Server-sent events: a snapshot of your VMs (admin: all), then each change",
            errors=(401,),
        ),
        Endpoint(
            "GET", "/v1/stream/log", log_tail,
            "Server-sent events: the last ?last=N events of the log (50), then new ones",
            access="admin", errors=(400, 401, 403),
        ),
    ]


def _count(query: Mapping[str, str], name: str, default: int) -> int:
    text = query.get(name, str(default))
    if not text.isdigit() or not 0 <= int(text) <= LOG_LAST_MAX:
        raise InputError(name, f"a whole number from 0 to {LOG_LAST_MAX}")
    return int(text)
