"""The clustered deployment of the README, run for real: a VM outlives the servers of its
gateway.

``tests.cluster.Cluster`` starts three control nodes (a JetStream cluster of three with
stream replicas 3, a 3-member etcd, the services as ``ucloud serve`` processes, two of
each of gateway, projector, scheduler and dispatcher) and two hosts (hostd and metadata)
in network namespaces on an IPv6 underlay. The real CLI logs in as admin at gateway 1,
uploads the tiny guest (filescan and imagescan make it an image in the hosts' shared
store), makes a network with IPAM auto and a VM on it; gateway 2 sees the VM running.
Then the nats-server and the etcd member gateway 1 is connected to are killed, and the VM
is deleted through gateway 2 and the servers left.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster
from tests.conftest import Servers
from tests.integration.hostd_harness import built
from tests.multihost import sh, ucloud_binary
from ucloud.config import NatsConfig
from ucloud.eventlog import EventLog
from ucloud.servers import free_port

START_TARGET_S = 60.0


@pytest.mark.servers
@pytest.mark.timeout(30)
async def test_the_event_log_takes_the_servers_in_the_order_given(servers: Servers) -> None:
    """What keeps each process of the cluster on its own node's nats-server: the list is
    tried in order (past one that is down), not shuffled, and not read as one URL."""
    down = f"nats://127.0.0.1:{free_port()}"
    log = await EventLog.connect(NatsConfig(url=f"{down}, {servers.nats.url}"))
    try:
        assert log.nc.connected_url is not None
        assert log.nc.connected_url.port == servers.nats.port
    finally:
        await log.close()


class Cli:
    """The ``ucloud`` command against one gateway, with a config directory of its own."""

    def __init__(self, home: Path, url: str, token: str = "") -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("UCLOUD_")}
        self.env |= {"UCLOUD_CONFIG_DIR": str(home), "UCLOUD_URL": url}
        if token:
            self.env["UCLOUD_TOKEN"] = token

    def run(self, *argv: str, check: bool = True, timeout: float = 180) -> str:
        done = subprocess.run(
            [ucloud_binary(), *argv], env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"ucloud {' '.join(argv)}: {done.stderr}{done.stdout}"
        return done.stdout

    def json(self, *argv: str, timeout: float = 180) -> Any:
        return json.loads(self.run(*argv, "-o", "json", timeout=timeout))


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_vm_made_through_one_gateway_is_deleted_through_the_other_after_its_servers_die(
    tmp_path: Path,
) -> None:
    tiny = built("tiny")
    with Cluster(hosts=2) as cluster:
        print(f"cluster harness started in {cluster.started_in_s:.1f}s")
        assert cluster.started_in_s < START_TARGET_S
        first = Cli(tmp_path / "admin", cluster.gateway_url("gateway1"))
        first.run("login", "--name", "admin", "--realm", "admin",
                  "--secret-file", str(cluster.admin_secret_file))  # fmt: skip
        token = json.loads((tmp_path / "admin" / "credentials.json").read_text())["token"]
        second = Cli(tmp_path / "admin2", cluster.gateway_url("gateway2"), token)

        first.run("file", "upload", str(tiny), "--name", "tiny.qcow2")
        image = first.json("image", "create", "--file", "tiny.qcow2", "--name", "tiny",
                           "--public", "--wait")  # fmt: skip
        assert image["status"] == "created", image
        net = first.json("net", "create", "lan", "--ipam", "auto", "--wait")
        assert net["status"] == "created" and net["prefix"], net
        vm = first.json("vm", "create", "t1", "--image", "tiny", "--cpu", "1", "--ram", "128M",
                        "--ssd", "1", "--net", "lan", "--wait")  # fmt: skip
        assert vm["status"] == "running", vm
        seen = second.json("vm", "show", vm["id"])
        assert seen["status"] == "running" and seen["host"] == vm["host"], seen

        nats, etcd = cluster.servers_of("gateway1")
        assert nats == {"c1"}, nats  # its config lists node c1's servers first
        assert "c1" in etcd, etcd  # the etcd client balances over the members it reaches
        cluster.kill_nats("c1")
        cluster.kill_etcd("c1")

        second.run("vm", "delete", vm["id"], "--wait", "--timeout", "120", timeout=150)
        assert second.run("vm", "show", vm["id"], check=False) == ""
        assert vm["id"] not in {v["id"] for v in second.json("vm", "list")}
        cluster.check()
        tag, directory = cluster.made.tag, cluster.directory
    assert tag not in sh("ip", "netns", "list").stdout
    assert tag not in sh("ip", "-o", "link", "show").stdout
    assert not directory.exists()
    strays = sh("pgrep", "-af", str(directory), check=False).stdout
    assert strays == "", strays
