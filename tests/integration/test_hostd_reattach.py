"""VMs outlive hostd: ``ucloud serve hostd`` killed with SIGKILL while two VMs run.

Both QEMUs keep running; the restarted hostd reattaches to them by their QMP sockets,
appends nothing and restarts nothing, and watches them again (a QEMU killed afterwards
is reported crashed and restarted by the new hostd).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.hostd_harness import HostdProcess, built, import_image, running_cloud
from ucloud import events as ev
from ucloud.config import Config
from ucloud.hostd.qemu import QemuProcess, RuntimeDir

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]


async def wait_for_text(hostd: HostdProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in hostd.output():
        assert hostd.process is not None and hostd.process.poll() is None, hostd.output()[-3000:]
        assert time.monotonic() < deadline, f"hostd never said {text!r}:\n{hostd.output()[-3000:]}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(300)
async def test_vms_outlive_a_killed_hostd_which_reattaches_and_restarts_nothing(
    config: Config, tmp_path: Path
) -> None:
    async with running_cloud(config, tmp_path, hostd=False) as cloud:
        await import_image(cloud, await asyncio.to_thread(built, "tiny"), "tiny")
        hostd = HostdProcess(cloud, tmp_path)
        hostd.start()
        try:
            await wait_for_text(hostd, "reattached: 0 VM(s) found", timeout=60)
            vms = [(await cloud.create(f"r{i}", "tiny"))["id"] for i in range(2)]
            for vm in vms:
                await cloud.wait_status(vm, "running", timeout=90)
            qemu = QemuProcess()
            pids = {vm: qemu.pid(RuntimeDir(cloud.runtime, vm)) for vm in vms}
            assert None not in pids.values()
            before = await cloud.gw.last_seq()

            hostd.kill()
            await asyncio.sleep(1)
            assert {vm: qemu.pid(RuntimeDir(cloud.runtime, vm)) for vm in vms} == pids

            hostd.start()
            await wait_for_text(hostd, "reattached: 2 VM(s) found", timeout=60)
            for vm in vms:
                assert f"adopt {vm}" in hostd.output()
            assert {vm: qemu.pid(RuntimeDir(cloud.runtime, vm)) for vm in vms} == pids
            for vm in vms:
                _, last = await cloud.gw.log.load("vm", vm)
                assert last <= before, await cloud.vm_events(vm)

            victim = vms[0]
            pid = pids[victim]
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await cloud.wait_status(victim, "crashed", timeout=30)
            await cloud.wait_status(victim, "running", timeout=60)
            assert qemu.pid(RuntimeDir(cloud.runtime, vms[1])) == pids[vms[1]]

            for vm in vms:
                await cloud.act(vm, "delete")
            for vm in vms:
                await cloud.wait_status(vm, "gone", timeout=60)
            host, _ = await cloud.gw.log.load("host", cloud.host)
            released = {s.event.vm for s in host if isinstance(s.event, ev.HostVmReleased)}
            assert released == set(vms)
        finally:
            hostd.stop()
