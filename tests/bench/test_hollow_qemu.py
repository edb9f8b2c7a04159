"""The hollow QEMU of the load tests, driven by hostd's own ``QemuProcess`` and ``Machine``:
it starts daemonized and paused, runs on ``cont``, survives its caller, ends on ``quit``
(pid file gone) and dies on SIGKILL, as QEMU does."""

from __future__ import annotations

from pathlib import Path

from ucloud.hostd.machine import Machine
from ucloud.hostd.qemu import Launch, QemuProcess, RuntimeDir, qemu_argv

HOLLOW = str(Path(__file__).parents[2] / "bench" / "hollow_qemu.py")


def _launch(root: Path, vm: str) -> tuple[Machine, list[str]]:
    runtime = RuntimeDir(root, vm)
    launch = Launch(vm=vm, directory=str(runtime.path), cpu=1, ram_mib=128, accel="tcg",
                    cpu_model="max")  # fmt: skip
    return Machine(runtime, QemuProcess()), qemu_argv(HOLLOW, launch)


async def test_hostd_starts_runs_and_quits_a_hollow_vm(tmp_path: Path) -> None:
    machine, argv = _launch(tmp_path, "vm1")
    await machine.launch(argv)
    assert machine.runs()
    status = await (await machine.attach()).execute("query-status")
    assert status["status"] == "running"
    await machine.detach()  # hostd goes away: the VM runs on, and takes the next session
    assert (await (await machine.attach()).execute("query-blockstats")) == []
    assert await machine.shutdown(0) == "quit"
    assert not machine.runs()
    assert not machine.runtime.pidfile.exists()


async def test_a_killed_hollow_vm_is_gone_with_its_pid_file_behind(tmp_path: Path) -> None:
    machine, argv = _launch(tmp_path, "vm2")
    await machine.launch(argv)
    machine.qemu.kill(machine.runtime)
    assert await machine.qemu.wait_gone(machine.runtime, 5)
    assert machine.runtime.pidfile.exists()
    await machine.detach()
