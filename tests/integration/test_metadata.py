"""The metadata service on a real bridge, asked by namespace guests, with ucloud-init.

The cloud (gateway, projector, metadata service) runs in the test's event loop against
the session's servers. The network of one VM is built the way a host has it: a bridge
``br<vni>`` in this namespace, a "router" namespace on it running radvd for the /64 (IPAM
``auto``), and guests: namespaces whose ``eth0`` carries a VM's MAC, their other end a
bridge port named like the VM's tap. ucloud-init runs in a guest (its own UTS namespace,
files under a scratch root) against the real service on port 80.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.capabilities import missing
from tests.integration.gateway_harness import Running, User, gateway_config, running_gateway, system
from tests.unit.gateway.test_sshkeys import ED25519, P256, RSA
from ucloud import events as ev
from ucloud.config import Config
from ucloud.hostd import antispoof
from ucloud.hostd.plumbing import NicPlan
from ucloud.ids import new_id
from ucloud.init import ucloud_init
from ucloud.metadata import METADATA_ADDRESS
from ucloud.metadata.server import MetadataService
from ucloud.metadata.service import run as run_metadata
from ucloud.metadata.userdata import userdata_key
from ucloud.net_addr import eui64, link_local
from ucloud.services import ServiceContext

pytestmark = [pytest.mark.root, pytest.mark.netns]

PROGRAM = Path(ucloud_init.__file__)
USER_DATA = "#cloud-config\nruncmd:\n  - echo hello from user data\n"
# A raw HTTP GET from inside a guest: address, path, interface for the zone (or ""),
# source address (or ""), timeout in seconds.
FETCH = r"""
import socket, sys
address, path, zone, source, timeout = sys.argv[1:6]
zone = socket.if_nametoindex(zone) if zone else 0
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.settimeout(float(timeout))
if source:
    s.bind((source, 0, 0, zone))
s.connect((address, 80, 0, zone))
s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
data = b""
while chunk := s.recv(65536):
    data += chunk
sys.stdout.write(data.decode())
"""


# Debian's cloud-init, its OpenStack datasource as a booting instance runs it, then the
# key installation of its ssh module. Runs as PID 1 of its own PID namespace with Nova's
# product_name in its environment (how the datasource recognises Nova-lxd), with /root on
# a tmpfs of its own mount namespace; prints what it read and the authorized_keys it wrote.
CLOUD_INIT = r"""
import json, logging, sys
from cloudinit import distros, helpers, ssh_util
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from cloudinit.sources import DataSourceOpenStack as openstack
work, url = sys.argv[1], sys.argv[2]
sys_cfg = {"datasource_list": ["OpenStack"], "datasource": {"OpenStack": {
    "metadata_urls": [url], "max_wait": 60, "timeout": 5, "retries": 3}}}
paths = helpers.Paths({"cloud_dir": work, "run_dir": work})
distro = distros.fetch("debian")("debian", {}, paths)
source = openstack.DataSourceOpenStack(sys_cfg, distro, paths)
if not source.get_data():
    sys.exit("the OpenStack datasource found no metadata at " + url)
keys = source.get_public_ssh_keys()
ssh_util.setup_user_keys(set(keys), "root")
with open("/root/.ssh/authorized_keys") as handle:
    written = handle.read()
print(json.dumps({
    "instance_id": source.get_instance_id(),
    "hostname": source.get_hostname().hostname,
    "keys": keys,
    "user_data": source.get_userdata_raw().decode(),
    "network": source.network_config,
    "authorized_keys": written,
}))
"""
CLOUD_INIT_PACKAGE = Path("/usr/lib/python3/dist-packages/cloudinit")


async def sh(*args: str, check: bool = True, timeout: float = 90) -> tuple[int, str, str]:
    """Run a command without blocking the loop (the services run in it)."""
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    code = proc.returncode if proc.returncode is not None else -1
    if check and code != 0:
        raise AssertionError(f"{' '.join(args)} -> {code}: {err.decode()}{out.decode()}")
    return code, out.decode(), err.decode()


class Fabric:
    """One VM network's layer 2 on this host: bridge, router namespace with radvd, guests."""

    def __init__(self, vni: int, prefix: str, directory: Path) -> None:
        self.vni = vni
        self.prefix = prefix
        self.bridge = f"br{vni}"
        self.directory = directory
        self.tag = new_id().replace("-", "")[-6:]
        self.router = f"umr{self.tag}"
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.radvd: asyncio.subprocess.Process | None = None
        self.guarded: list[str] = []

    async def create(self) -> None:
        await sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        # this namespace must not take addresses or routes from the test's radvd
        await sh("sysctl", "-qw", f"net.ipv6.conf.{self.bridge}.accept_ra=0")
        await sh("ip", "link", "set", self.bridge, "up")
        await self._namespace(self.router)
        port = f"umr{self.tag}p"
        await self._plug(self.router, port, "eth0", mac="")
        gateway = str(ipaddress.IPv6Network(self.prefix)[1])
        await sh("ip", "-n", self.router, "addr", "add", f"{gateway}/64", "dev", "eth0", "nodad")
        await sh("ip", "netns", "exec", self.router, "sysctl", "-qw",
                 "net.ipv6.conf.all.forwarding=1")
        conf = self.directory / "radvd.conf"
        conf.write_text(
            "interface eth0 {\n  AdvSendAdvert on;\n  MinRtrAdvInterval 3;\n"
            "  MaxRtrAdvInterval 4;\n"
            f"  prefix {self.prefix} {{ AdvOnLink on; AdvAutonomous on; }};\n"
            f"  RDNSS {gateway} {{ }};\n}};\n"
        )
        conf.chmod(0o644)
        self.radvd = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", self.router, "radvd", "--nodaemon", "--config", str(conf),
            "--pidfile", str(self.directory / "radvd.pid"), "--logmethod", "stderr",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )

    async def guest(self, name: str, mac: str, tap: str, guard: NicPlan | None = None) -> str:
        """A namespace whose eth0 has ``mac``; its bridge port is named ``tap``.

        With ``guard``, the port gets hostd's anti-spoofing rules for that NIC before it
        joins the bridge, as a VM's tap does.
        """
        namespace = f"um{name}{self.tag}"
        await self._namespace(namespace)
        await sh("ip", "netns", "exec", namespace, "sysctl", "-qw",
                 "net.ipv6.conf.default.use_tempaddr=0")
        if guard is not None:
            assert guard.tap == tap
            self.guarded.append(tap)
            script = antispoof.attach_script([antispoof.port_of(guard)])
            await asyncio.to_thread(antispoof.apply, script)
        await self._plug(namespace, tap, "eth0", mac)
        return namespace

    async def slaac(self, namespace: str) -> str:
        """The guest's global address from the router's advertisements (waits for it)."""
        return await self.address(namespace, "global")

    async def address(self, namespace: str, scope: str = "link", timeout: float = 30) -> str:
        """The guest's first usable (DAD done) address of ``scope`` on eth0 (waits for it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            _, out, _ = await sh("ip", "-n", namespace, "-6", "-o", "addr", "show", "dev",
                                 "eth0", "scope", scope, "-tentative")
            words = out.split()
            if "inet6" in words:
                return words[words.index("inet6") + 1].split("/")[0]
            assert loop.time() < deadline, f"{namespace}: no {scope} address on eth0"
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self.radvd is not None and self.radvd.returncode is None:
            self.radvd.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.radvd.wait(), 5)
            if self.radvd.returncode is None:
                self.radvd.kill()
                await self.radvd.wait()
        for namespace in self.namespaces:
            await sh("ip", "netns", "del", namespace, check=False)
        for link in reversed(self.links):
            await sh("ip", "link", "del", link, check=False)
        if self.guarded:
            script = antispoof.detach_script(self.guarded)
            await asyncio.to_thread(antispoof.apply, script)

    async def _namespace(self, namespace: str) -> None:
        await sh("ip", "netns", "add", namespace)
        self.namespaces.append(namespace)
        await sh("ip", "-n", namespace, "link", "set", "lo", "up")

    async def _plug(self, namespace: str, port: str, inside: str, mac: str) -> None:
        peer = f"{port[:11]}tmp"
        await sh("ip", "link", "add", port, "type", "veth", "peer", "name", peer)
        self.links.append(port)
        await sh("ip", "link", "set", peer, "netns", namespace)
        await sh("ip", "-n", namespace, "link", "set", peer, "name", inside)
        if mac:
            await sh("ip", "-n", namespace, "link", "set", inside, "address", mac)
        await sh("ip", "-n", namespace, "link", "set", inside, "up")
        await sh("ip", "link", "set", port, "master", self.bridge)
        await sh("ip", "link", "set", port, "up")


async def init_in(namespace: str, root: Path, *args: str) -> tuple[int, str]:
    """ucloud-init in ``namespace`` (own UTS namespace) on the files under ``root``."""
    code, _, err = await sh(
        "ip", "netns", "exec", namespace, "unshare", "--uts", sys.executable, "-I",
        str(PROGRAM), "--root", str(root), *args, check=False,
    )
    return code, err


async def fetch(namespace: str, address: str, path: str, zone: str = "eth0",
                source: str = "", timeout: float = 10) -> tuple[int, str]:
    """Status and body of ``GET path`` from inside a guest; (0, error) without an answer."""
    args = [address, path, zone, source, str(timeout)]
    code, out, err = await sh(
        "ip", "netns", "exec", namespace, sys.executable, "-I", "-c", FETCH, *args,
        check=False, timeout=30,
    )
    if code != 0:
        return 0, err.strip().splitlines()[-1] if err.strip() else f"exit {code}"
    head, _, body = out.partition("\r\n\r\n")
    return int(head.split()[1]), body


def authorized_keys(root: Path) -> list[str]:
    path = root / "root/.ssh/authorized_keys"
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


class Cloud:
    def __init__(self, gw: Running, service: MetadataService, fabric: Fabric) -> None:
        self.gw = gw
        self.service = service
        self.fabric = fabric


@pytest.fixture
async def cloud(config: Config, tmp_path: Path) -> AsyncIterator[Cloud]:
    vni = 0x800000 + int.from_bytes(os.urandom(3), "big") % 0x7FFFFF
    prefix = f"2001:db8:{os.urandom(2).hex()}:{os.urandom(2).hex()}::/64"
    global_address = str(ipaddress.IPv6Network(prefix)[0xA9FEA9FE])
    cfg = gateway_config(config, tmp_path)
    cfg = msgspec.structs.replace(
        cfg, metadata=msgspec.structs.replace(
            cfg.metadata, bridge_poll_s=0.2, address=global_address
        ),
    )
    fabric = Fabric(vni, prefix, tmp_path)
    try:
        await fabric.create()
        # the global address sits on the bridge: guests reach it on-link
        await sh("ip", "addr", "add", f"{global_address}/64", "dev", fabric.bridge, "nodad")
        async with running_gateway(cfg) as gw:
            ctx = ServiceContext(config=cfg, log=gw.log, store=gw.store, name="metadata")
            task = asyncio.create_task(run_metadata(ctx))
            try:
                while not ctx.shared.metadata:
                    assert not task.done(), task.exception()
                    await asyncio.sleep(0.02)
                service = ctx.shared.metadata
                assert isinstance(service, MetadataService)
                yield Cloud(gw, service, fabric)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await fabric.close()


async def network(gw: Running, owner: str, fabric: Fabric) -> str:
    net = new_id()
    await gw.append(
        ev.NetRequested(**system(), net=net, owner=owner, name=f"lan{net[-4:]}", ipam="auto"),
        ev.NetCreated(**system(), net=net, vni=fabric.vni, prefix=fabric.prefix, ipam="auto"),
    )
    return net


async def add_key(gw: Running, user: User, name: str, key: str) -> str:
    answer = await gw.client(user).post("/v1/keys", json={"name": name, "public_key": key})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def create_vm(gw: Running, user: User, name: str, net: str, **body: Any) -> dict[str, Any]:
    answer = await gw.client(user).post("/v1/vms", json={
        "name": name, "cpu": 1, "ram": "512M", "ssd": 1, "image": "img", "networks": [net],
        **body,
    })
    assert answer.status_code == 202, answer.text
    vm: dict[str, Any] = answer.json()
    return vm


def plan_of(vm: dict[str, Any], fabric: Fabric, net: str) -> NicPlan:
    """What hostd hands the plumbing for the VM's first NIC."""
    return NicPlan(vm=vm["id"], index=0, network=net, vni=fabric.vni, prefix=fabric.prefix,
                   ipam="auto", mac=vm["nics"][0]["mac"])


def tap_of(vm: dict[str, Any], fabric: Fabric, net: str) -> str:
    return plan_of(vm, fabric, net).tap


async def listening(service: MetadataService, bridge: str, timeout: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while bridge not in service.listening:
        assert loop.time() < deadline, f"the service does not listen on {bridge}"
        await asyncio.sleep(0.05)


async def test_ucloud_init_in_a_guest_gets_exactly_its_vms_keys(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw, fabric = cloud.gw, cloud.fabric
    alice, bob = await gw.new_user(), await gw.new_user()
    await gw.image(alice.name, "img")
    await gw.image(bob.name, "img")
    laptop = await add_key(gw, alice, "laptop", ED25519)
    await add_key(gw, alice, "desk", P256)
    await add_key(gw, bob, "bobs", RSA)
    lan = await network(gw, alice.name, fabric)
    web = await create_vm(gw, alice, "web_1", lan, keys=["laptop"], user_data=USER_DATA)
    other = await create_vm(gw, alice, "db", lan)  # both of alice's keys
    guest = await fabric.guest("g", web["nics"][0]["mac"], tap_of(web, fabric, lan))
    await listening(cloud.service, fabric.bridge)

    root = tmp_path / "guest-root"
    code, err = await init_in(guest, root, "--timeout", "60")
    assert code == 0, err
    assert authorized_keys(root) == [ED25519]
    assert (root / "etc/hostname").read_text() == "web-1\n"
    assert "ucloud-init: 1 SSH key(s)" in err and "hostname web-1" in err
    assert (await init_in(guest, root, "--timeout", "30"))[0] == 0
    assert "(unchanged)" in (await init_in(guest, root, "--timeout", "30"))[1]

    status, body = await fetch(guest, METADATA_ADDRESS, "/ucloud/v1/meta")
    meta = msgspec.json.decode(body)
    assert status == 200 and meta["id"] == web["id"] and meta["ssh_keys"] == [ED25519]
    assert meta["nics"][0]["address"] == eui64(fabric.prefix, web["nics"][0]["mac"])
    assert await fetch(guest, METADATA_ADDRESS, "/openstack/latest/user_data") == (
        200, USER_DATA
    )
    openstack = msgspec.json.decode(
        (await fetch(guest, METADATA_ADDRESS, "/openstack/latest/meta_data.json"))[1]
    )
    assert openstack["uuid"] == web["id"] and openstack["public_keys"] == {"laptop": ED25519}

    # the guest's SLAAC address from radvd, to the global address: the same VM
    address = await fabric.slaac(guest)
    assert address == eui64(fabric.prefix, web["nics"][0]["mac"])
    status, body = await fetch(guest, cloud.gw.config.metadata.address, "/ucloud/v1/hostname",
                               zone="")
    assert (status, body) == (200, "web-1\n")

    # a key removed from the owner is removed from the guest; the user's own lines stay
    keys_file = root / "root/.ssh/authorized_keys"
    keys_file.write_text(f"{P256} mine\n" + keys_file.read_text())
    assert (await gw.client(alice).delete(f"/v1/keys/{laptop}")).status_code == 204
    await gw.settle(await gw.last_seq())
    code, err = await init_in(guest, root, "--timeout", "30")
    assert code == 0, err
    assert authorized_keys(root) == [f"{P256} mine"]

    # the other VM of the same owner, on the same bridge, gets its own keys
    second = await fabric.guest("h", other["nics"][0]["mac"], tap_of(other, fabric, lan))
    root2 = tmp_path / "second-root"
    assert (await init_in(second, root2, "--timeout", "60"))[0] == 0
    assert authorized_keys(root2) == [P256]  # laptop is gone, desk remains
    assert (await fetch(second, METADATA_ADDRESS, "/openstack/latest/user_data"))[0] == 404

    # a MAC no VM has: refused, nothing written, and the service says why
    stranger = await fabric.guest("s", "02:00:5e:00:53:01", f"umx{fabric.tag}")
    caplog.set_level(logging.WARNING, logger="ucloud.metadata.service")
    root3 = tmp_path / "stranger-root"
    await fabric.address(stranger)
    code, err = await init_in(stranger, root3, "--timeout", "3")
    assert code == 1 and "403" in err and not root3.exists()
    assert (await fetch(stranger, METADATA_ADDRESS, "/ssh-keys"))[0] == 403
    assert any(
        "refused GET /ssh-keys from " + link_local("02:00:5e:00:53:01") in r.getMessage()
        and "no VM has MAC 02:00:5e:00:53:01" in r.getMessage()
        for r in caplog.records
    )
    assert cloud.service.refused >= 1


async def test_forged_source_addresses_and_wrong_bridges_are_refused(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw, fabric = cloud.gw, cloud.fabric
    alice, mallory = await gw.new_user(), await gw.new_user()
    await gw.image(alice.name, "img")
    await add_key(gw, alice, "laptop", ED25519)
    await add_key(gw, alice, "shared", RSA)
    lan = await network(gw, alice.name, fabric)
    web = await create_vm(gw, alice, "web", lan, keys=["laptop"])
    # another VM on the same bridge (one whose root someone else may have)
    evil = await create_vm(gw, alice, "evil", lan, keys=["shared"])
    mac = web["nics"][0]["mac"]
    victim = await fabric.guest("v", mac, tap_of(web, fabric, lan), guard=plan_of(web, fabric, lan))
    forger = await fabric.guest(
        "f", evil["nics"][0]["mac"], tap_of(evil, fabric, lan), guard=plan_of(evil, fabric, lan)
    )
    await listening(cloud.service, fabric.bridge)
    await fabric.address(victim)
    await fabric.address(forger)
    assert (await fetch(forger, METADATA_ADDRESS, "/ssh-keys")) == (200, f"{RSA}\n")

    # the forger takes the victim's link-local address: its packets never get through
    await sh("ip", "-n", forger, "addr", "add", f"{link_local(mac)}/64", "dev", "eth0", "nodad")
    status, _ = await fetch(forger, METADATA_ADDRESS, "/ssh-keys", source=link_local(mac),
                            timeout=3)
    assert status == 0
    # ... nor with the victim's MAC too
    await sh("ip", "-n", forger, "link", "set", "eth0", "address", mac)
    status, _ = await fetch(forger, METADATA_ADDRESS, "/ssh-keys", source=link_local(mac),
                            timeout=3)
    assert status == 0
    assert (await fetch(victim, METADATA_ADDRESS, "/ssh-keys")) == (200, f"{ED25519}\n")

    # the victim's MAC and address on another network's bridge: refused by the service
    other = Fabric(fabric.vni + 1 if fabric.vni < 0xFFFFFF else fabric.vni - 1,
                   f"{ipaddress.IPv6Network(fabric.prefix).network_address + (1 << 64)}/64",
                   tmp_path / "other")
    (tmp_path / "other").mkdir()
    try:
        await other.create()
        await network(gw, mallory.name, other)
        caplog.set_level(logging.WARNING, logger="ucloud.metadata.service")
        elsewhere = await other.guest("w", mac, f"umw{other.tag}")
        await listening(cloud.service, other.bridge)
        await fabric.address(elsewhere)
        assert (await fetch(elsewhere, METADATA_ADDRESS, "/ssh-keys"))[0] == 403
        assert any(
            f"arrived on br{other.vni}, but that NIC is on br{fabric.vni}" in r.getMessage()
            for r in caplog.records
        )
    finally:
        await other.close()


async def test_user_data_goes_when_the_vm_is_deleted(cloud: Cloud) -> None:
    gw, fabric = cloud.gw, cloud.fabric
    alice = await gw.new_user()
    await gw.image(alice.name, "img")
    lan = await network(gw, alice.name, fabric)
    vm = await create_vm(gw, alice, "web", lan, user_data=USER_DATA)
    key = userdata_key(gw.config.etcd.secrets_prefix, vm["id"])
    assert await gw.store.get(key) == USER_DATA.encode()
    events = await gw.client(alice).get(f"/v1/vms/{vm['id']}/events")
    assert "hello from user data" not in events.text  # never in an event
    guest = await fabric.guest("g", vm["nics"][0]["mac"], tap_of(vm, fabric, lan))
    await listening(cloud.service, fabric.bridge)
    assert await fabric.address(guest) == link_local(vm["nics"][0]["mac"])
    assert (await fetch(guest, METADATA_ADDRESS, "/openstack/latest/user_data"))[0] == 200

    await gw.append(ev.VmDeleted(**system(), vm=vm["id"]))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while await gw.store.get(key) is not None:
        assert loop.time() < deadline, "user data of a deleted VM is still there"
        await asyncio.sleep(0.1)
    assert (await fetch(guest, METADATA_ADDRESS, "/ssh-keys"))[0] == 403


async def test_bad_user_data_is_refused_and_changes_nothing(cloud: Cloud) -> None:
    gw = cloud.gw
    alice = await gw.new_user()
    await gw.image(alice.name, "img")
    limit = gw.config.metadata.max_user_data_bytes
    before = await gw.last_seq()
    for text in ("x" * (limit + 1), ""):
        answer = await gw.client(alice).post("/v1/vms", json={
            "name": "big", "cpu": 1, "ram": 1, "ssd": 1, "image": "img", "user_data": text,
        })
        assert answer.status_code == 400 and answer.json()["field"] == "user_data", answer.text
    assert await gw.last_seq() == before
    secrets = await gw.store.get_prefix(f"{gw.config.etcd.secrets_prefix}userdata/")
    assert secrets == []


async def test_stock_cloud_init_reads_our_openstack_endpoints(
    cloud: Cloud, tmp_path: Path
) -> None:
    if not CLOUD_INIT_PACKAGE.is_dir():
        missing("Debian's cloud-init is not installed (scripts/setup --test installs it)")
    gw, fabric = cloud.gw, cloud.fabric
    alice = await gw.new_user()
    await gw.image(alice.name, "img")
    await add_key(gw, alice, "laptop", ED25519)
    lan = await network(gw, alice.name, fabric)
    vm = await create_vm(gw, alice, "stock", lan, user_data=USER_DATA)
    guest = await fabric.guest("c", vm["nics"][0]["mac"], tap_of(vm, fabric, lan))
    await listening(cloud.service, fabric.bridge)
    await fabric.address(guest)
    script = tmp_path / "cloud_init_check.py"
    script.write_text(CLOUD_INIT)
    work = tmp_path / "cloud"
    work.mkdir()
    code, out, err = await sh(
        "ip", "netns", "exec", guest, "unshare", "--mount", "--uts", "--pid", "--fork",
        "--mount-proc", "sh", "-c",
        'mount -t tmpfs -o mode=0700 ucloud-test /root && '
        'exec env product_name="OpenStack Nova" /usr/bin/python3 "$@"', "-",
        # cloud-init 22.4 drops URLs it cannot resolve, and it resolves the zone of a
        # link-local address only unencoded ("%eth0", not RFC 6874's "%25eth0")
        str(script), str(work), f"http://[{METADATA_ADDRESS}%eth0]",
        check=False, timeout=120,
    )
    assert code == 0, err
    seen = msgspec.json.decode(out.strip().splitlines()[-1])
    assert seen["instance_id"] == vm["id"]
    assert seen["hostname"] == "stock"
    assert seen["keys"] == [ED25519]
    assert seen["authorized_keys"].strip() == ED25519
    assert seen["user_data"] == USER_DATA
    physical = [c for c in seen["network"]["config"] if c["type"] == "physical"]
    assert [c["mac_address"] for c in physical] == [vm["nics"][0]["mac"]]
    assert physical[0]["subnets"][0]["type"] == "ipv6_slaac"
