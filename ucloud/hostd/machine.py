"""hostd's side of one VM: its QEMU, its QMP session, and what hostd wants of it.

A ``Machine`` knows the VM's runtime directory and asks the ``Qemu`` whether a QEMU of
that directory lives; it never keeps a belief that the pid file could contradict. Its
``lock`` serialises everything done to the VM (a command, a restart after a crash, the
reaction to QEMU ending). ``want`` is what hostd last decided: RUN (an exit is a crash),
HALT or GONE (an exit is expected). It is set before a stop begins, so the watcher that
sees QEMU end knows whether to call it a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Sequence

from ucloud.errors import VmError
from ucloud.hostd.qemu import Qemu, RuntimeDir, StartSpec
from ucloud.hostd.qmp import QmpSession, Runstate

log = logging.getLogger(__name__)

QUIT_WAIT_S = 10.0
RUNNING = "running"


class Want(enum.Enum):
    RUN = "run"
    HALT = "halt"
    GONE = "gone"


class Machine:
    def __init__(self, runtime: RuntimeDir, qemu: Qemu) -> None:
        self.vm = runtime.vm
        self.runtime = runtime
        self.qemu = qemu
        self.lock = asyncio.Lock()
        self.want = Want.HALT
        self.spec: StartSpec | None = None
        self.session: QmpSession | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.restarter: asyncio.Task[None] | None = None
        self.sender: asyncio.Task[None] | None = None  # a live migration out of this host
        self.failures = 0  # crashes in a row
        self.running_since = 0.0  # monotonic time QMP last reported it running
        self.last_reason = ""

    def __repr__(self) -> str:
        return f"Machine({self.vm!r}, want={self.want.value})"

    def runs(self) -> bool:
        return self.qemu.pid(self.runtime) is not None

    def attached(self) -> bool:
        return self.session is not None and self.session.runstate is Runstate.RUNNING

    async def attach(self) -> QmpSession:
        """A QMP session with the running QEMU (connecting when there is none)."""
        if self.session is not None and self.session.runstate is Runstate.RUNNING:
            return self.session
        await self.detach()
        session = QmpSession(self.vm, self.runtime.qmp)
        await session.connect()
        self.session = session
        return session

    async def detach(self) -> None:
        """Drop the QMP session; QEMU runs on."""
        session, self.session = self.session, None
        if session is not None:
            await session.disconnect()

    async def launch(self, argv: Sequence[str]) -> float:
        """Start QEMU (paused), connect QMP, let the guest run; seconds it took."""
        began = time.monotonic()
        await self.qemu.launch(argv, self.runtime)
        try:
            await self.resume()
        except BaseException:
            self.qemu.kill(self.runtime)
            await self.detach()
            raise
        return time.monotonic() - began

    async def resume(self) -> None:
        """Make sure the guest runs (``cont`` when QEMU is paused), as QMP reports it."""
        session = await self.attach()
        status = await session.execute("query-status")
        if status.get("status") != RUNNING:
            await session.execute("cont")
            status = await session.execute("query-status")
        if status.get("status") != RUNNING:
            raise VmError(self.vm, "start", f"QEMU reports {status.get('status')!r}, not running")
        self.running_since = time.monotonic()

    async def shutdown(self, graceful_s: float) -> str:
        """End QEMU: ACPI power button and up to ``graceful_s`` seconds (0: none), then
        QMP ``quit``, then SIGKILL. Returns how it ended."""
        if not self.runs():
            await self.detach()
            return "was not running"
        how = "killed"
        try:
            session = await self.attach()
            if graceful_s > 0:
                await session.execute("system_powerdown")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(graceful_s):
                        await session.closed.wait()
                how = "powered off"
            if not session.closed.is_set():
                with contextlib.suppress(VmError):
                    await session.execute("quit")
                how = "quit"
        except VmError as exc:
            log.warning("vm %s: %s; killing QEMU", self.vm, exc)
        if not await self.qemu.wait_gone(self.runtime, QUIT_WAIT_S):
            self.qemu.kill(self.runtime)
            how = "killed"
            if not await self.qemu.wait_gone(self.runtime, QUIT_WAIT_S):
                raise VmError(self.vm, "stop", "QEMU does not die")
        await self.detach()
        return how

    def sending(self) -> bool:
        return self.sender is not None and not self.sender.done()

    def cancel_restart(self) -> None:
        task = self.restarter
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.restarter = None

    async def forget(self) -> None:
        """Stop watching (hostd is going away); QEMU runs on."""
        for task in (self.watcher, self.restarter, self.sender):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.watcher = self.restarter = self.sender = None
        await self.detach()
