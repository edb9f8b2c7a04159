"""One QMP session with one QEMU: a small asyncio client shaped like qemu.qmp's protocol.

Theory of operation
-------------------
A session is in one ``Runstate`` at a time::

    IDLE --connect()--> CONNECTING --greeting, qmp_capabilities--> RUNNING
      ^                     | (any failure: the guard closes the socket, back to IDLE)
      |                     v
      +--disconnect()-- DISCONNECTING <--the peer closed (QEMU exited or was killed)--+

Operations say which state they require (``execute`` needs RUNNING, ``connect`` IDLE) and
raise ``VmError`` otherwise. While RUNNING one reader task owns the socket: it hands each
answer to the command that waits for it (by ``id``) and keeps the events; when the peer
closes, every waiting command fails, the state becomes DISCONNECTING and ``closed`` is
set. The session never starts or kills QEMU; that is the ``Qemu`` of ``qemu.py``.

QEMU's QMP socket takes one client at a time. A hostd that dies leaves the socket free
(the kernel closes its end), so the next hostd connects again: that is reattaching.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from ucloud.errors import VmError

log = logging.getLogger(__name__)

LINE_LIMIT = 1 << 20  # QMP answers (query-* output) can be long lines
EVENTS_KEPT = 64

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])


class Runstate(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    RUNNING = "running"
    DISCONNECTING = "disconnecting"


def requires(*states: Runstate) -> Callable[[F], F]:
    """An operation that may only run in one of ``states``."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        async def guarded(self: QmpSession, *args: Any, **kwargs: Any) -> Any:
            if self.runstate not in states:
                wanted = " or ".join(s.value for s in states)
                raise VmError(
                    self.vm, f"qmp {method.__name__}",
                    f"the session is {self.runstate.value}, it needs to be {wanted}",
                )
            return await method(self, *args, **kwargs)

        return cast(F, guarded)

    return decorate


class QmpSession:
    """A QMP client for the QEMU of VM ``vm``, listening on the unix socket ``path``."""

    def __init__(self, vm: str, path: Path) -> None:
        self.vm = vm
        self.path = path
        self.runstate = Runstate.IDLE
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.closed = asyncio.Event()
        self.version = ""
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"QmpSession({self.vm!r}, {self.runstate.value})"

    @requires(Runstate.IDLE)
    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, read the greeting and leave negotiation mode; VmError on any failure,
        with the session back in IDLE and the socket closed."""
        self.runstate = Runstate.CONNECTING
        self.closed.clear()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(
                    str(self.path), limit=LINE_LIMIT
                )
                self._reader, self._writer = reader, writer
                greeting = json.loads(await reader.readline() or b"null")
                if not isinstance(greeting, dict) or "QMP" not in greeting:
                    raise VmError(self.vm, "qmp greeting", f"not a QMP greeting: {greeting!r}")
                qemu = greeting["QMP"].get("version", {}).get("qemu", {})
                self.version = f"{qemu.get('major')}.{qemu.get('minor')}.{qemu.get('micro')}"
                self._task = asyncio.create_task(self._read(reader), name=f"qmp:{self.vm}")
                self.runstate = Runstate.RUNNING
                await self.execute("qmp_capabilities")
        except BaseException as exc:
            await self._teardown()
            self.runstate = Runstate.IDLE
            if isinstance(exc, VmError | asyncio.CancelledError):
                raise
            if isinstance(exc, TimeoutError):
                raise VmError(
                    self.vm, "qmp connect", f"no QMP session within {timeout:g}s"
                ) from exc
            if isinstance(exc, OSError | ValueError):
                raise VmError(self.vm, "qmp connect", f"{self.path}: {exc}") from exc
            raise

    @requires(Runstate.RUNNING)
    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        """Run ``command`` and return its ``return`` value; VmError on an error answer,
        a closed connection or no answer within ``timeout`` seconds."""
        assert self._writer is not None
        ident = next(self._ids)
        message: dict[str, Any] = {"execute": command, "id": ident}
        if arguments:
            message["arguments"] = dict(arguments)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        try:
            self._writer.write(json.dumps(message).encode() + b"\n")
            await self._writer.drain()
            async with asyncio.timeout(timeout):
                answer = await future
        except TimeoutError as exc:
            raise VmError(self.vm, f"qmp {command}", f"no answer within {timeout:g}s") from exc
        except (ConnectionError, OSError) as exc:
            raise VmError(self.vm, f"qmp {command}", f"connection lost: {exc}") from exc
        finally:
            self._waiting.pop(ident, None)
        if "error" in answer:
            error = answer["error"]
            raise VmError(self.vm, f"qmp {command}", f"{error.get('class')}: {error.get('desc')}")
        return answer.get("return")

    def last_event(self, name: str) -> dict[str, Any] | None:
        """The most recent event ``name`` this session saw (the whole message)."""
        return next((e for e in reversed(self.events) if e.get("event") == name), None)

    async def disconnect(self) -> None:
        """Close the connection (QEMU keeps running); the session is IDLE again."""
        self.runstate = Runstate.DISCONNECTING
        await self._teardown()
        self.runstate = Runstate.IDLE

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("vm %s: QMP sent a line that is not JSON: %r", self.vm, line[:200])
                    continue
                if "event" in message:
                    self.events.append(message)
                    continue
                future = self._waiting.get(message.get("id"))
                if future is not None and not future.done():
                    future.set_result(message)
        except ConnectionResetError:
            pass  # QEMU exited (a quit, a kill): the same as an orderly close
        except (ConnectionError, OSError, ValueError) as exc:  # ValueError: line over limit
            log.warning("vm %s: QMP connection failed: %r", self.vm, exc)
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("QEMU closed the QMP connection"))
            if self.runstate is Runstate.RUNNING:
                self.runstate = Runstate.DISCONNECTING
            self.closed.set()

    async def _teardown(self) -> None:
        task, writer = self._task, self._writer
        self._task = self._writer = self._reader = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
        self.closed.set()
