"""hostd with real QEMU under TCG, driven through the gateway like a user would.

The ``tiny`` guest goes the whole way (create, running, its serial line in the console
log, stop by ACPI, start, delete with its disk); a QEMU killed with SIGKILL is reported
crashed and runs again, also when hostd was away meanwhile; a VM whose start cannot work
says why; a NIC is a tap on its network's bridge (and a host without networking refuses
it); consoles are their owner's; ``debian-12`` created with the real CLI boots to a login
prompt that ``ucloud vm console-log`` shows; a running VM's CPU, disk and tap counters are
on the process's ``/metrics``. A start command of before commands carried the image's store
and the networks still starts the VM on its network.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.hostd_harness import Cloud, built, import_image, running_cloud
from ucloud import events as ev
from ucloud.config import Config
from ucloud.eventlog import TYPE_HEADER
from ucloud.hostd.metrics import taps_of
from ucloud.hostd.plumbing import NicPlan, NoPlumbing
from ucloud.hostd.qemu import QemuProcess, RuntimeDir
from ucloud.hostd.service import run as run_hostd
from ucloud.ids import new_id
from ucloud.imagebuild.tiny import UP_LINE
from ucloud.metrics import listening

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]


@pytest.fixture
async def cloud(config: Config, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(config, tmp_path) as running:
        yield running


@pytest.fixture
async def tiny(cloud: Cloud) -> str:
    return await import_image(cloud, await asyncio.to_thread(built, "tiny"), "tiny")


def qemu_pid(cloud: Cloud, vm: str) -> int | None:
    return QemuProcess().pid(RuntimeDir(cloud.runtime, vm))


@pytest.mark.timeout(300)
async def test_the_tiny_guest_through_its_whole_life(cloud: Cloud, tiny: str) -> None:
    vm = (await cloud.create("t1", "tiny"))["id"]
    running = await cloud.wait_status(vm, "running", timeout=60)
    assert running["host"] == cloud.host
    assert cloud.hostd.timings[vm].qemu_s > 0  # launch to QMP's "running"
    pid = qemu_pid(cloud, vm)
    assert pid is not None
    disk = cloud.config.paths.disks / vm
    assert [p.name for p in disk.iterdir()] == [f"root-{tiny}.qcow2"]
    up = await cloud.wait_console(vm, UP_LINE, timeout=120)

    await cloud.act(vm, "stop")
    stopped = await cloud.wait_status(vm, "stopped", timeout=60)
    assert stopped["reason"] == ""
    assert qemu_pid(cloud, vm) is None and disk.is_dir()

    await cloud.act(vm, "start")
    await cloud.wait_status(vm, "running", timeout=60)
    again = qemu_pid(cloud, vm)
    assert again is not None and again != pid
    await cloud.wait_console(vm, UP_LINE, timeout=120, offset=up)  # a second boot, appended

    await cloud.act(vm, "delete")
    await cloud.wait_status(vm, "gone", timeout=60)
    assert qemu_pid(cloud, vm) is None
    assert not disk.exists() and not (cloud.runtime / vm).exists()
    types = [e.tag() for e in await cloud.vm_events(vm)]
    assert types == [
        "vm.requested", "vm.scheduled", "vm.started", "vm.stop_requested", "vm.stopped",
        "vm.start_requested", "vm.started", "vm.delete_requested", "vm.deleted",
    ]  # fmt: skip
    host, _ = await cloud.gw.log.load("host", cloud.host)
    released = [s.event for s in host if isinstance(s.event, ev.HostVmReleased)]
    assert [r.vm for r in released] == [vm]


@pytest.mark.timeout(300)
async def test_a_killed_qemu_is_reported_crashed_and_runs_again(cloud: Cloud, tiny: str) -> None:
    vm = (await cloud.create("t2", "tiny"))["id"]
    await cloud.wait_status(vm, "running", timeout=60)
    pid = qemu_pid(cloud, vm)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    crashed = await cloud.wait_status(vm, "crashed", timeout=30)
    assert "killed" in crashed["reason"]
    await cloud.wait_status(vm, "running", timeout=60)
    again = qemu_pid(cloud, vm)
    assert again is not None and again != pid
    types = [e.tag() for e in await cloud.vm_events(vm)]
    assert types[-2:] == ["vm.crashed", "vm.started"]

    await cloud.act(vm, "delete")
    await cloud.wait_status(vm, "gone", timeout=60)
    assert qemu_pid(cloud, vm) is None


@pytest.mark.timeout(120)
async def test_only_the_owner_reads_a_console(cloud: Cloud, tiny: str) -> None:
    vm = (await cloud.create("t4", "tiny"))["id"]
    await cloud.wait_status(vm, "running", timeout=60)
    mine = await cloud.console(vm, offset=-10)
    assert mine["offset"] == max(0, mine["size"] - 10) and mine["next"] == mine["size"]
    path = f"/v1/vms/{vm}/console"
    other = await cloud.gw.new_user()
    assert (await cloud.gw.client(other).get(path)).status_code == 404
    admin = await cloud.gw.client(cloud.gw.admin).get(path)
    assert admin.status_code == 403 and "owner" in admin.json()["error"]
    bad = await cloud.client().get(path, params={"offset": "end"})
    assert bad.status_code == 400 and bad.json()["field"] == "offset"
    await cloud.act(vm, "delete")
    await cloud.wait_status(vm, "gone", timeout=60)
    assert (await cloud.client().get(path)).status_code == 404


@pytest.mark.timeout(120)
async def test_a_vm_killed_while_hostd_was_away_is_started_when_it_comes_back(
    cloud: Cloud, tiny: str
) -> None:
    vm = (await cloud.create("t5", "tiny"))["id"]
    await cloud.wait_status(vm, "running", timeout=60)
    pid = qemu_pid(cloud, vm)
    assert pid is not None
    await cloud.stop("hostd")
    assert qemu_pid(cloud, vm) == pid  # stopping hostd stops no VM
    os.kill(pid, signal.SIGKILL)
    assert await QemuProcess().wait_gone(RuntimeDir(cloud.runtime, vm), 10)
    cloud.start("hostd", run_hostd)
    crashed = await cloud.wait_status(vm, "crashed", timeout=30)
    assert "not running when hostd started" in crashed["reason"]
    await cloud.wait_status(vm, "running", timeout=60)
    assert qemu_pid(cloud, vm) not in (None, pid)
    await cloud.act(vm, "delete")
    await cloud.wait_status(vm, "gone", timeout=60)


@pytest.mark.timeout(120)
async def test_a_vm_whose_image_is_not_in_the_store_crashes_with_the_reason(
    cloud: Cloud,
) -> None:
    image = await cloud.gw.image("admin", "hollow", public=True)  # made, but no file
    vm = (await cloud.create("t3", image))["id"]
    crashed = await cloud.wait_status(vm, "crashed", timeout=60)
    assert "cannot start" in crashed["reason"] and image in crashed["reason"]
    assert qemu_pid(cloud, vm) is None
    await cloud.act(vm, "delete")
    await cloud.wait_status(vm, "gone", timeout=60)


async def ucloud_cli(cloud: Cloud, home: Path, *argv: str) -> tuple[int, str, str]:
    """The real ``ucloud`` command line as the cloud's user; (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCLOUD_")}
    env |= {"UCLOUD_URL": cloud.gw.url, "UCLOUD_TOKEN": cloud.user.token,
            "UCLOUD_CONFIG_DIR": str(home)}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ucloud.cli.main", *argv, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.mark.timeout(900)
async def test_debian_boots_to_a_login_prompt_on_its_console(
    cloud: Cloud, tmp_path: Path
) -> None:
    await import_image(cloud, await asyncio.to_thread(built, "debian"), "debian-12")
    code, out, err = await ucloud_cli(
        cloud, tmp_path, "vm", "create", "deb", "--image", "debian-12", "--cpu", "1",
        "--ram", "1G", "--ssd", "4G", "--wait", "--timeout", "120",
    )  # fmt: skip
    assert code == 0, err
    # piped, --wait prints no progress, only the VM as it ended up
    assert any(line.split() == ["status:", "running"] for line in out.splitlines()), out
    deadline = time.monotonic() + 600
    while True:
        code, log, err = await ucloud_cli(cloud, tmp_path, "vm", "console-log", "deb")
        assert code == 0, err
        if "login:" in log:
            break
        assert time.monotonic() < deadline, f"no login prompt after 600s:\n{log[-2000:]}"
        await asyncio.sleep(3)
    assert "Debian GNU/Linux 12" in log
    await cloud.act("deb", "delete")
    await cloud.wait_status("deb", "gone", timeout=60)


@pytest.mark.timeout(120)
async def test_a_vm_with_a_nic_on_a_host_without_networking_does_not_start_without_it(
    config: Config, tmp_path: Path
) -> None:
    async with running_cloud(config, tmp_path, hostd=False) as cloud:
        cloud.start("hostd", run_hostd, plumbing=NoPlumbing())
        await import_image(cloud, await asyncio.to_thread(built, "tiny"), "tiny")
        net = await cloud.gw.network(cloud.user.name, "lan")
        vm = (await cloud.create("t6", "tiny", networks=[net]))["id"]
        crashed = await cloud.wait_status(vm, "crashed", timeout=60)
        assert "no VM networking" in crashed["reason"], crashed
        assert qemu_pid(cloud, vm) is None
        await cloud.act(vm, "delete")
        await cloud.wait_status(vm, "gone", timeout=60)


def link(name: str) -> dict[str, Any] | None:
    shown = subprocess.run(["ip", "-j", "link", "show", name], capture_output=True, text=True)
    if shown.returncode != 0:
        return None
    found: list[dict[str, Any]] = json.loads(shown.stdout)
    return found[0]


@pytest.mark.timeout(120)
async def test_a_nic_is_a_tap_on_its_networks_bridge_and_goes_with_the_vm(
    cloud: Cloud, tiny: str
) -> None:
    if isinstance(cloud.hostd.plumbing, NoPlumbing):
        pytest.fail("this host offers no VM networking (root and /dev/net/tun are needed)")
    net = await cloud.gw.network(cloud.user.name, "lan")
    vm = (await cloud.create("t7", "tiny", networks=[net]))["id"]
    view = await cloud.wait_status(vm, "running", timeout=60)
    mac = view["nics"][0]["mac"]
    stored, _ = await cloud.gw.log.load("net", net)
    vni = next(s.event.vni for s in stored if isinstance(s.event, ev.NetCreated))
    tap = NicPlan(vm=vm, index=0, network=net, vni=vni, prefix="", ipam="none", mac=mac).tap
    found = link(tap)
    assert found is not None and found.get("master") == f"br{vni}", found
    assert "LOWER_UP" in found["flags"]  # QEMU holds it open
    session = cloud.hostd.machines[vm].session
    assert session is not None
    filters = await session.execute("query-rx-filter")
    assert [f["main-mac"] for f in filters] == [mac]  # the guest's NIC has the VM's MAC
    await cloud.act(vm, "delete")
    await cloud.wait_status(vm, "gone", timeout=60)
    assert link(tap) is None and link(f"br{vni}") is None


@pytest.mark.timeout(180)
async def test_a_running_vm_has_cpu_disk_and_tap_counters_on_metrics(
    cloud: Cloud, tiny: str
) -> None:
    if isinstance(cloud.hostd.plumbing, NoPlumbing):
        pytest.fail("this host offers no VM networking (root and /dev/net/tun are needed)")
    net = await cloud.gw.network(cloud.user.name, "lan")
    vm = (await cloud.create("t8", "tiny", networks=[net]))["id"]
    await cloud.wait_status(vm, "running", timeout=60)
    await cloud.wait_console(vm, UP_LINE, timeout=120)
    tap = taps_of(Path(f"/proc/{qemu_pid(cloud, vm)}/cmdline").read_bytes())[0]
    labels = {"host": cloud.host, "vm": vm}
    async with listening(cloud.contexts["hostd"].metrics, "[::1]:0") as url:
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(url)).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }

    def value(name: str, **more: str) -> float:
        return samples[(name, tuple(sorted({**labels, **more}.items())))]

    assert value("ucloud_vm_cpu_seconds_total") > 0
    drives = [dict(k)["drive"] for n, k in samples if n == "ucloud_vm_disk_read_bytes_total"]
    assert drives, text
    assert value("ucloud_vm_disk_read_bytes_total", drive=drives[0]) > 0  # it booted from it
    assert value("ucloud_vm_disk_reads_total", drive=drives[0]) > 0
    for name in ("received", "sent"):
        assert value(f"ucloud_vm_network_{name}_bytes_total", tap=tap) >= 0
        assert isinstance(value(f"ucloud_vm_network_{name}_packets_total", tap=tap), int)
    assert samples[("ucloud_vm_running", (("host", cloud.host),))] >= 1
    await cloud.act(vm, "delete")
    await cloud.wait_status(vm, "gone", timeout=60)


@pytest.mark.timeout(180)
async def test_a_start_command_of_before_commands_carried_the_networks_still_starts_the_vm(
    cloud: Cloud, tiny: str
) -> None:
    if isinstance(cloud.hostd.plumbing, NoPlumbing):
        pytest.fail("this host offers no VM networking (root and /dev/net/tun are needed)")
    net = await cloud.gw.network(cloud.user.name, "lan")
    vm = (await cloud.create("t8", "tiny", networks=[net]))["id"]
    view = await cloud.wait_status(vm, "running", timeout=60)
    await cloud.act(vm, "stop")
    await cloud.wait_status(vm, "stopped", timeout=60)
    runtime = RuntimeDir(cloud.runtime, vm)
    kept = runtime.read_spec()
    assert kept is not None and kept.networks is not None  # what the command carried
    vni = kept.networks[0].vni
    # host.vm_start as the dispatcher sent it before commands carried what the spec names
    request = next(e for e in await cloud.vm_events(vm) if isinstance(e, ev.VmRequested))
    command = ev.HostVmStart.of(
        {"id": new_id(), "at": datetime.now(UTC), "actor": "system:dispatcher"}, cloud.host,
        request.vm_spec(),
    )
    old = {k: v for k, v in msgspec.to_builtins(command).items() if k != "resolved"}
    await cloud.gw.log.append_raw(
        command.subject, json.dumps(old).encode(),
        {"Nats-Msg-Id": command.id, TYPE_HEADER: command.tag()},
    )  # fmt: skip
    await cloud.wait_status(vm, "running", timeout=60)
    tap = NicPlan(vm=vm, index=0, network=net, vni=vni, prefix="", ipam="none",
                  mac=view["nics"][0]["mac"]).tap  # fmt: skip
    found = link(tap)
    assert found is not None and found.get("master") == f"br{vni}", found
    again = runtime.read_spec()
    assert again is not None and again.networks == kept.networks  # read from the log, kept
    await cloud.act(vm, "delete")
    await cloud.wait_status(vm, "gone", timeout=60)
    assert link(tap) is None and link(f"br{vni}") is None
