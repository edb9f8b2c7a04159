"""The QMP session and the QEMU process against a real QEMU (paused, no disk, no guest).

The session's state machine: operations refused in the wrong state, a failed connect
rolled back to IDLE, events kept, the peer's end seen as DISCONNECTING with waiting
commands failed; a second client is refused while one is connected (reattaching works
because a dead hostd's connection is gone).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ucloud.errors import VmError
from ucloud.hostd.qemu import Launch, QemuProcess, RuntimeDir, qemu_argv
from ucloud.hostd.qmp import QmpSession, Runstate

pytestmark = [pytest.mark.qemu]

VM = "0192f3a4-0000-7000-8000-0000000000aa"


@pytest.fixture
def runtime() -> Iterator[RuntimeDir]:
    root = Path(tempfile.mkdtemp(prefix="uq", dir="/tmp"))
    directory = RuntimeDir(root, VM)
    try:
        yield directory
    finally:
        QemuProcess().kill(directory)
        shutil.rmtree(root, ignore_errors=True)


async def launched(runtime: RuntimeDir) -> int:
    launch = Launch(
        vm=VM, directory=str(runtime.path), cpu=1, ram_mib=64, accel="tcg", cpu_model="max"
    )
    return await QemuProcess().launch(qemu_argv("qemu-system-x86_64", launch), runtime)


@pytest.mark.timeout(60)
async def test_a_session_through_its_states(runtime: RuntimeDir) -> None:
    session = QmpSession(VM, runtime.qmp)
    with pytest.raises(VmError, match="needs to be running"):
        await session.execute("query-status")
    with pytest.raises(VmError, match="qmp connect"):
        await session.connect(timeout=2)  # no QEMU yet: rolled back
    assert session.runstate is Runstate.IDLE

    pid = await launched(runtime)
    assert QemuProcess().pid(runtime) == pid
    await session.connect()
    assert session.runstate is Runstate.RUNNING and session.version.startswith(
        ("7.", "8.", "9.", "10.")
    )
    with pytest.raises(VmError, match="needs to be idle"):
        await session.connect()
    assert (await session.execute("query-status"))["status"] == "prelaunch"
    with pytest.raises(VmError, match="CommandNotFound"):
        await session.execute("no-such-command")
    second = QmpSession(VM, runtime.qmp)  # one client at a time
    with pytest.raises(VmError):
        await second.connect(timeout=1)
    assert second.runstate is Runstate.IDLE

    await session.execute("cont")
    assert (await session.execute("query-status"))["status"] == "running"
    assert session.last_event("RESUME") is not None

    await session.disconnect()  # QEMU runs on; a new session attaches
    assert session.runstate is Runstate.IDLE and QemuProcess().pid(runtime) == pid
    again = QmpSession(VM, runtime.qmp)
    await again.connect()
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(again.closed.wait(), 10)
    assert again.runstate is Runstate.DISCONNECTING
    with pytest.raises(VmError, match="needs to be running"):
        await again.execute("query-status")
    assert await QemuProcess().wait_gone(runtime, 10)
    await again.disconnect()
    assert again.runstate is Runstate.IDLE


@pytest.mark.timeout(60)
async def test_a_qemu_that_cannot_start_says_why(runtime: RuntimeDir) -> None:
    launch = Launch(
        vm=VM, directory=str(runtime.path), cpu=1, ram_mib=64, accel="tcg",
        cpu_model="no-such-cpu",
    )  # fmt: skip
    with pytest.raises(VmError, match="no-such-cpu"):
        await QemuProcess().launch(qemu_argv("qemu-system-x86_64", launch), runtime)
    assert QemuProcess().pid(runtime) is None


@pytest.mark.timeout(60)
async def test_a_qemu_that_dies_mid_command_fails_the_command(runtime: RuntimeDir) -> None:
    pid = await launched(runtime)
    session = QmpSession(VM, runtime.qmp)
    await session.connect()
    await session.execute("cont")
    await session.execute("stop")
    for _ in range(50):  # the events arrive after the answers, on the same reader
        if session.last_event("STOP") is not None:
            break
        await asyncio.sleep(0.05)
    assert [e["event"] for e in session.events] == ["RESUME", "STOP"]

    os.kill(pid, signal.SIGSTOP)  # QEMU reads nothing more: the command waits
    waiting = asyncio.create_task(session.execute("query-status"))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(VmError, match="connection lost"):
        await asyncio.wait_for(waiting, 10)
    await asyncio.wait_for(session.closed.wait(), 10)
    assert session.runstate is Runstate.DISCONNECTING
    await session.disconnect()
    assert session.runstate is Runstate.IDLE and session.last_event("STOP") is not None
