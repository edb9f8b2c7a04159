"""The slow tier: a real debian-12 VM on an ``auto`` network takes its owner's key.

A whole cloud on this host (gateway, projector, scheduler, dispatcher, netalloc, hostd as
the router host, the metadata service) boots the built-in ``debian-12`` image under TCG
with one NIC on an IPAM ``auto`` network. ucloud-init in the guest asks the metadata
service on ``fe80::a9fe:a9fe`` and installs the owner's key; the test then logs in with
``ssh -6`` at the VM's EUI-64 address with that key and runs ``hostname``, which prints the
VM's name. The image comes from the cache shared with the other guest tests (built the
first time: minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.hostd_harness import Cloud, built, import_image, running_cloud
from ucloud.config import Config
from ucloud.handlers.netalloc import run as run_netalloc
from ucloud.metadata.service import run as run_metadata
from ucloud.net_addr import eui64

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

BOOT_S = 600.0  # TCG on a busy 2-core machine: boot, first-boot keys, ucloud-init


async def run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", "timed out"
    return proc.returncode or 0, out.decode(), err.decode()


async def test_debian_vm_on_an_auto_network_logs_in_with_its_owners_key(
    config: Config, tmp_path: Path
) -> None:
    image_file = await asyncio.to_thread(built, "debian")
    key = tmp_path / "id_ed25519"
    code, _, err = await run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "owner",
                             "-f", str(key))
    assert code == 0, err
    async with running_cloud(config, tmp_path, router=True) as cloud:
        cloud.start("netalloc", run_netalloc)
        cloud.start("metadata", run_metadata)
        image = await import_image(cloud, image_file, "debian-12")
        client = cloud.client()
        answer = await client.post("/v1/keys", json={
            "name": "owner", "public_key": (tmp_path / "id_ed25519.pub").read_text().strip(),
        })
        assert answer.status_code == 201, answer.text
        answer = await client.post("/v1/networks", json={"name": "lan", "ipam": "auto"})
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 30
        while (net := (await client.get("/v1/networks/lan")).json())["status"] != "created":
            assert net["status"] == "requested" and time.monotonic() < deadline, net
            await asyncio.sleep(0.1)
        vm = await cloud.create("web", image, ram="1G", ssd=4, networks=["lan"])
        try:
            await log_in(cloud, vm, net, key)
        finally:
            await tear_down(cloud, vm, net, Path(cloud.config.data_dir))


async def log_in(cloud: Cloud, vm: dict[str, Any], net: dict[str, Any], key: Path) -> None:
    """Wait for the VM to run, then for ``ssh -6 root@<its address> hostname`` to work."""
    view = await cloud.wait_status(vm["id"], "running", timeout=120)
    address = view["nics"][0]["address"]
    assert address == eui64(net["prefix"], view["nics"][0]["mac"])

    deadline = time.monotonic() + BOOT_S
    attempts: list[str] = []
    while True:
        code, out, err = await run(
            "ssh", "-6", "-i", str(key), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"root@{address}", "hostname",
            timeout=30,
        )
        if code == 0:
            break
        attempts.append(err.strip()[-200:])
        cloud.check_services()
        if time.monotonic() > deadline:
            console = await cloud.console(vm["id"])
            pytest.fail(
                f"no ssh login at {address}: last {attempts[-3:]}; console tail: "
                f"{console['data'][-3000:]}"
            )
        await asyncio.sleep(3)
    assert out.strip() == "web"
    console = (await cloud.console(vm["id"]))["data"]
    assert "ucloud-init: 1 SSH key(s) in /root/.ssh/authorized_keys" in console


async def tear_down(cloud: Cloud, vm: dict[str, Any], net: dict[str, Any], data: Path) -> None:
    """Delete the VM and the network, so that the router lets go of the bridge and radvd."""
    client = cloud.client()
    with contextlib.suppress(AssertionError):
        await cloud.act(vm["id"], "delete")
        await cloud.wait_status(vm["id"], "gone", timeout=60)
        assert (await client.delete(f"/v1/networks/{net['id']}")).status_code == 202
        deadline = time.monotonic() + 30
        while (await client.get(f"/v1/networks/{net['id']}")).status_code != 404:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        while Path(f"/sys/class/net/br{net['vni']}").exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    # whatever is left of this test's radvd (pid files in its own data directory)
    for pidfile in (data / "radvd").glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
