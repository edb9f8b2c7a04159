"""One QMP session with one QEMU, on the QEMU project's own client (``qemu.qmp``).

Theory of operation
-------------------
``qemu.qmp.QMPClient`` speaks the protocol: the greeting, ``qmp_capabilities``, one
reader and one writer task, answers routed to their command by ``id``. This module adds
what hostd needs around it and nothing else:

- a session named after its VM and bound to the unix socket ``path`` of a detached QEMU;
- errors of our tree: every failure (refused state, no connection, an error answer,
  QEMU gone mid-command, a timeout) is a ``VmError`` naming the VM and the command;
- the last ``EVENTS_KEPT`` events, kept from the moment the session exists (a listener
  registered before connecting, so none is lost between connect and listening, and
  none piles up unread: qemu.qmp's default listener is told to accept nothing);
- ``closed``, set once the connection is gone (QEMU exited or was killed, or we left).

The states are qemu.qmp's ``Runstate``::

    IDLE --connect()--> CONNECTING --greeting, qmp_capabilities--> RUNNING
      ^                     | (any failure: qemu.qmp closes the socket, back to IDLE)
      |                     v
      +--disconnect()-- DISCONNECTING <--the peer closed (QEMU exited or was killed)--+

The session never starts or kills QEMU; that is the ``Qemu`` of ``qemu.py``. QEMU's QMP
socket takes one client at a time. A hostd that dies leaves the socket free (the kernel
closes its end), so the next hostd connects again: that is reattaching.

qemu.qmp logs every failed connect and every end of a connection at ERROR on its own
logger; hostd raises or logs those itself (as ``VmError`` or a warning naming the VM),
so that logger is quieted to CRITICAL (its "this is a bug in the QMP library" lines).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import (
    EventListener,
    ExecInterruptedError,
    ExecuteError,
    Message,
    QMPClient,
    QMPError,
    Runstate,
    StateError,
)

from ucloud.errors import VmError

__all__ = ["EVENTS_KEPT", "QmpSession", "Runstate"]

log = logging.getLogger(__name__)
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)

EVENTS_KEPT = 64
CLOSED_QUIETLY = (EOFError, ConnectionResetError, BrokenPipeError)  # QEMU quit or was killed


class _Kept(EventListener):
    """A listener that keeps the newest events in a bounded deque, with no backlog."""

    def __init__(self, kept: deque[dict[str, Any]]) -> None:
        super().__init__()
        self.kept = kept

    async def put(self, event: Message) -> None:
        if self.accept(event):
            self.kept.append(dict(event))


class QmpSession:
    """A QMP client for the QEMU of VM ``vm``, listening on the unix socket ``path``."""

    def __init__(self, vm: str, path: Path) -> None:
        self.vm = vm
        self.path = path
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.closed = asyncio.Event()
        self.version = ""
        self._client = QMPClient(vm)
        self._client.events.event_filter = lambda _: False  # ours keeps them, bounded
        self._client.register_listener(_Kept(self.events))
        self._watcher: asyncio.Task[None] | None = None
        self._leaving = asyncio.Lock()

    def __repr__(self) -> str:
        return f"QmpSession({self.vm!r}, {self.runstate.name.lower()})"

    @property
    def runstate(self) -> Runstate:
        return self._client.runstate

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, read the greeting and leave negotiation mode; VmError on any failure,
        with the session back in IDLE and the socket closed."""
        self._require(Runstate.IDLE, "connect")
        self.closed.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._client.connect(str(self.path))
        except TimeoutError as exc:
            raise VmError(self.vm, "qmp connect", f"no QMP session within {timeout:g}s") from exc
        except QMPError as exc:
            raise VmError(self.vm, "qmp connect", f"{self.path}: {exc}") from exc
        greeting = self._client.greeting
        qemu = greeting.QMP.version.get("qemu", {}) if greeting is not None else {}
        if isinstance(qemu, Mapping):
            self.version = f"{qemu.get('major')}.{qemu.get('minor')}.{qemu.get('micro')}"
        self._watcher = asyncio.create_task(self._watch(), name=f"qmp:{self.vm}")

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, timeout: float = 30.0
    ) -> Any:
        """Run ``command`` and return its ``return`` value; VmError on an error answer,
        a closed connection or no answer within ``timeout`` seconds."""
        self._require(Runstate.RUNNING, command)
        try:
            async with asyncio.timeout(timeout):
                return await self._client.execute(command, dict(arguments) if arguments else None)
        except ExecuteError as exc:
            raise VmError(self.vm, f"qmp {command}", f"{exc.error_class}: {exc}") from exc
        except TimeoutError as exc:
            raise VmError(self.vm, f"qmp {command}", f"no answer within {timeout:g}s") from exc
        except ExecInterruptedError as exc:
            raise VmError(self.vm, f"qmp {command}", "connection lost: QEMU closed it") from exc
        except StateError as exc:  # the connection went while the command was queued
            raise self._refused(exc.state, (exc.required,), command) from exc
        except (QMPError, OSError) as exc:
            raise VmError(self.vm, f"qmp {command}", f"connection lost: {exc}") from exc

    def last_event(self, name: str) -> dict[str, Any] | None:
        """The most recent event ``name`` this session saw (the whole message)."""
        return next((e for e in reversed(self.events) if e.get("event") == name), None)

    async def disconnect(self) -> None:
        """Close the connection (QEMU keeps running); the session is IDLE again."""
        async with self._leaving:
            watcher, self._watcher = self._watcher, None
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            try:
                await self._client.disconnect()
            except CLOSED_QUIETLY:
                pass  # the same as an orderly close
            except (QMPError, OSError, ValueError) as exc:  # ValueError: a line over the limit
                log.warning("vm %s: QMP connection failed: %r", self.vm, exc)
            finally:
                self.closed.set()

    async def _watch(self) -> None:
        """Set ``closed`` once the connection leaves RUNNING (the peer closed it)."""
        while self._client.runstate is Runstate.RUNNING:
            await self._client.runstate_changed()
        self.closed.set()

    def _require(self, state: Runstate, operation: str) -> None:
        if self.runstate is not state:
            raise self._refused(self.runstate, (state,), operation)

    def _refused(self, now: Runstate, wanted: tuple[Runstate, ...], operation: str) -> VmError:
        names = " or ".join(s.name.lower() for s in wanted)
        return VmError(
            self.vm, f"qmp {operation}",
            f"the session is {now.name.lower()}, it needs to be {names}",
        )  # fmt: skip
