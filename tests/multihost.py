"""Network namespaces for tests: hosts on an IPv6 underlay, guests, pings; always cleaned up.

- ``Namespace``: a named network namespace (unique name, removed on close) with a worker
  thread that lives in it, so code of this process (pyroute2, sockets, ``nft``, radvd
  children) can run there: ``ns.call(fn, *args)``.
- ``Underlay``: a bridge in the test's own namespace with an address of a fresh ULA /64
  (the servers listen there), and per host a namespace joined to it by a veth (MTU 1600),
  with an address in the same /64.
- ``guest``: a namespace whose ``eth0`` has a VM's MAC; its peer, named like the VM's tap,
  is left in the host's namespace to be plugged into a bridge: a VM without the VM.
- ``ping``: ICMPv6 echo from a namespace (raw socket), True when answered;
  ``send_router_advert``: what a rogue router sends.
- ``running_cluster``: nats-server and etcd listening on the underlay address of the
  test's namespace, the gateway, projector, netalloc, scheduler and dispatcher in this
  process, and 2 or 3 hosts (``Host``), each running ``ucloud serve hostd`` inside its
  namespace (host 1 is the router).

Names carry a random tag, so tests running at the same time never meet; every link and
namespace made here is removed by ``close`` even when the test failed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import errno
import ipaddress
import os
import secrets
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from tests.integration.gateway_harness import Running, running_gateway
from tests.integration.hostd_harness import kill_all
from ucloud.cli.up_cmd import render_settings
from ucloud.config import (
    Config,
    EtcdConfig,
    GatewayConfig,
    HostConfig,
    ImagesConfig,
    NatsConfig,
    NetworkConfig,
)
from ucloud.handlers.dispatcher import run as run_dispatcher
from ucloud.handlers.netalloc import run as run_netalloc
from ucloud.handlers.scheduler import run as run_scheduler
from ucloud.hostd.network import LinuxPlumbing
from ucloud.hostd.plumbing import NicPlan
from ucloud.hostd.radvd import RadvdSupervisor
from ucloud.ids import new_id
from ucloud.servers import EmbeddedEtcd, EmbeddedNats
from ucloud.services import ServiceContext

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
UNDERLAY_MTU = 1600
_libc = ctypes.CDLL(None, use_errno=True)


def tag() -> str:
    """A short random tag for names (interface names have at most 15 characters)."""
    return secrets.token_hex(3)


def sh(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {done.returncode}: {done.stderr.strip()}")
    return done


def _enter(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


class Namespace:
    """A network namespace of the test, with a thread that lives in it."""

    def __init__(self, name: str) -> None:
        self.name = name
        sh("ip", "netns", "add", name)
        self._thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{name}", initializer=_enter,
            initargs=(name,),
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args)`` run in this namespace (blocking)."""
        return self._thread.submit(fn, *args, **kwargs).result(timeout=120)

    def sh(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        return sh("ip", "netns", "exec", self.name, *args, check=check, timeout=timeout).stdout

    def sysctl(self, key: str, value: str) -> None:
        self.sh("sysctl", "-qw", f"{key}={value}")

    def addresses(self, device: str, scope: str = "global") -> list[str]:
        out = self.sh("ip", "-6", "-o", "addr", "show", "dev", device, "scope", scope)
        lines = [line for line in out.splitlines() if "tentative" not in line]
        return [line.split()[3].split("/")[0] for line in lines]

    def links(self) -> list[str]:
        out = self.sh("ip", "-o", "link", "show")
        return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)
        sh("ip", "netns", "del", self.name, check=False)


class Namespaces:
    """Every namespace and root-namespace link a test made; ``close`` removes them all."""

    def __init__(self) -> None:
        self.tag = tag()
        self.spaces: list[Namespace] = []
        self.root_links: list[str] = []

    def add(self, role: str) -> Namespace:
        space = Namespace(f"uc{self.tag}{role}")
        self.spaces.append(space)
        space.sh("ip", "link", "set", "lo", "up")
        return space

    def close(self) -> None:
        for space in reversed(self.spaces):
            space.close()
        for link in reversed(self.root_links):
            sh("ip", "link", "del", link, check=False)


@contextlib.contextmanager
def namespaces() -> Iterator[Namespaces]:
    made = Namespaces()
    try:
        yield made
    finally:
        made.close()


def guest(made: Namespaces, host: Namespace, role: str, mac: str, port: str) -> Namespace:
    """A namespace whose eth0 has ``mac``; its peer ``port`` stays in ``host``, down."""
    space = made.add(role)
    inside = f"g{made.tag}{role}"[:15]
    host.sh("ip", "link", "add", port, "type", "veth", "peer", "name", inside)
    host.sh("ip", "link", "set", inside, "netns", space.name)
    space.sh("ip", "link", "set", inside, "name", "eth0")
    space.sh("ip", "link", "set", "eth0", "address", mac)
    # what a VM does: SLAAC with EUI-64 addresses, no temporary ones
    for key, value in (("accept_ra", "2"), ("autoconf", "1"), ("addr_gen_mode", "0"),
                       ("use_tempaddr", "0")):
        space.sysctl(f"net.ipv6.conf.eth0.{key}", value)
    space.sh("ip", "link", "set", "eth0", "up")
    return space


class Underlay:
    """A bridge in the test's namespace with ``<ula>::1``; hosts join it with a veth each."""

    def __init__(self, made: Namespaces) -> None:
        self.made = made
        net = int(ipaddress.IPv6Address("fd00::")) | (secrets.randbits(56) << 64)
        self.prefix = ipaddress.IPv6Network((net, 64))
        self.bridge = f"ucu{made.tag}"
        sh("ip", "link", "add", self.bridge, "mtu", str(UNDERLAY_MTU), "type", "bridge",
           "mcast_snooping", "0")
        made.root_links.append(self.bridge)
        sh("sysctl", "-qw", f"net.ipv6.conf.{self.bridge}.accept_ra=0")
        sh("ip", "link", "set", self.bridge, "up")
        sh("ip", "-6", "addr", "add", f"{self.address(1)}/64", "dev", self.bridge, "nodad")

    def address(self, n: int) -> str:
        return str(self.prefix.network_address + n)

    @property
    def server_address(self) -> str:
        """Where the servers listen: the test's own namespace, on the underlay."""
        return self.address(1)

    def host(self, n: int) -> tuple[Namespace, str]:
        """Host ``n`` (1, 2, ...): a namespace with ``underlay`` at ``<ula>::<10+n>``."""
        return self.node(f"h{n}", 10 + n)

    def node(self, role: str, index: int) -> tuple[Namespace, str]:
        """A namespace ``role`` (at most 4 characters) with ``underlay`` at ``<ula>::<index>``."""
        space = self.made.add(role)
        outside = f"ucu{self.made.tag}{role}"
        sh("ip", "link", "add", outside, "mtu", str(UNDERLAY_MTU), "type", "veth", "peer",
           "name", "underlay", "netns", space.name)
        self.made.root_links.append(outside)
        sh("ip", "link", "set", outside, "master", self.bridge, "up")
        address = self.address(index)
        space.sh("ip", "link", "set", "underlay", "mtu", str(UNDERLAY_MTU), "up")
        space.sh("ip", "-6", "addr", "add", f"{address}/64", "dev", "underlay", "nodad")
        return space, address


# --- ICMPv6 echo ------------------------------------------------------------------------


def _echo_once(target: str, source: str, timeout: float, ident: int) -> bool:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        if source:
            sock.bind((source, 0))
        payload = b"ucloud" + os.urandom(8)
        # a link-local target names its interface: fe80::1%eth0
        where = socket.getaddrinfo(target, None, socket.AF_INET6, socket.SOCK_RAW)[0][4]
        try:
            sock.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, 1) + payload, where)
        except OSError as exc:  # no route there: no answer either
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                return False
            raise
        target = target.split("%")[0]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, peer = sock.recvfrom(2048)
            if data[0] == 129 and data[8:] == payload and peer[0].split("%")[0] == target:
                return True
        return False
    finally:
        sock.close()


def router_advert(prefix: str) -> bytes:
    """An RA (ICMPv6 134) with a prefix information option for SLAAC."""
    network = ipaddress.IPv6Network(prefix)
    head = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
    option = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0)
    return head + option + network.network_address.packed


def send_router_advert(prefix: str, device: str = "eth0") -> None:
    """Advertise ``prefix`` from this thread's namespace, as a rogue router would."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.sendto(router_advert(prefix), ("ff02::1", 0, 0, socket.if_nametoindex(device)))
    finally:
        sock.close()


def ping(space: Namespace, target: str, *, source: str = "", tries: int = 1,
         timeout: float = 1.0) -> bool:
    """Whether ``target`` answers an ICMPv6 echo sent from ``space`` (``tries`` attempts)."""
    for _ in range(tries):
        if space.call(_echo_once, target, source, timeout, secrets.randbits(16)):
            return True
    return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def free_path(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


# --- a cloud of hosts in namespaces -----------------------------------------------------


def ucloud_binary() -> str:
    return str(Path(sys.executable).parent / "ucloud")


class Host:
    """One host: a namespace on the underlay, its config, and ``ucloud serve hostd`` in it."""

    def __init__(self, space: Namespace, config: Config, directory: Path) -> None:
        self.space = space
        self.config = config
        self.directory = directory
        self.settings = directory / "hostd.toml"
        self.settings.write_text(render_settings(_without_none(msgspec.to_builtins(config))))
        self.log = directory / "hostd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.plumbing = LinuxPlumbing(config)  # for namespace guests; the kernel is shared

    @property
    def id(self) -> str:
        return self.config.host.id

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UCLOUD_")}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.space.name, ucloud_binary(), "--config",
                 str(self.settings), "serve", "hostd"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            )

    def stop(self) -> None:
        """hostd, then what outlives it: its VMs' QEMU and its radvd processes."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        kill_all(Path(self.config.host.runtime_dir))
        radvd = RadvdSupervisor(self.config.paths.radvd)
        for vni in radvd.adopt_all():
            radvd.stop(vni)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def attach(self, nic: NicPlan) -> None:
        self.space.call(self.plumbing.attach, [nic])

    def detach(self, nic: NicPlan) -> None:
        self.space.call(self.plumbing.detach, [nic])


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


@dataclass
class Cluster:
    """Servers on the underlay, the cloud's services in this process, hosts in namespaces."""

    made: Namespaces
    underlay: Underlay
    config: Config
    gw: Running
    hosts: list[Host]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def host(self, ident: str) -> Host:
        return next(h for h in self.hosts if h.id == ident)

    def check(self) -> None:
        for host in self.hosts:
            if not host.alive():
                raise AssertionError(f"hostd of {host.id} ended:\n{host.output()[-3000:]}")
        for task in self.tasks:
            if task.done() and not task.cancelled():
                raise AssertionError(f"{task.get_name()} ended: {task.exception()!r}")


def cluster_config(directory: Path, underlay: Underlay, nats: str, etcd: str) -> Config:
    stream = "T" + new_id().replace("-", "")[-16:].upper()
    prefix = f"/t/{new_id()}/"
    pool = int(ipaddress.IPv6Address("fd00::")) | (secrets.randbits(40) << 80)  # a ULA /48
    return Config(
        data_dir=str(directory / "cloud"),
        nats=NatsConfig(url=nats, stream=stream, subject_root=f"{stream.lower()}.evt"),
        etcd=EtcdConfig(endpoints=[etcd], prefix=prefix + "v1/", secrets_prefix=prefix + "secret/"),
        gateway=GatewayConfig(listen="127.0.0.1:0", read_your_writes_s=10.0,
                              bootstrap_admin_file=str(directory / "admin.otp")),
        network=NetworkConfig(underlay="underlay", vni_min=5000, vni_max=5999,
                              prefix_pool=str(ipaddress.IPv6Network((pool, 48)))),
        images=ImagesConfig(dir=str(directory / "images"), builtin=[]),
    )


def host_config(base: Config, directory: Path, n: int, address: str, router: bool) -> Config:
    host = HostConfig(
        id=f"h{n}x{secrets.token_hex(3)}", address=address, router=router, accel="tcg",
        cpu=2, ram_mib=2048, ssd_mib=20_000, stop_timeout_s=10.0, console_listen="[::1]:0",
        runtime_dir=tempfile.mkdtemp(prefix="uc", dir="/tmp"), restart_backoff_s=[1.0],
    )
    return msgspec.structs.replace(base, data_dir=str(directory / f"h{n}"), host=host)


@contextlib.asynccontextmanager
async def running_cluster(directory: Path, hosts: int = 3) -> AsyncIterator[Cluster]:
    """``hosts`` hosts (host 1 routes) on an underlay, everything else in this process."""
    with namespaces() as made:
        underlay = Underlay(made)
        nats = EmbeddedNats(directory / "nats", host=underlay.server_address).start()
        etcd = EmbeddedEtcd(directory / "etcd", host=underlay.server_address, fsync=False)
        members: list[Host] = []
        try:
            etcd.start()
            config = cluster_config(directory, underlay, nats.url, etcd.endpoint)
            for n in range(1, hosts + 1):
                space, address = underlay.host(n)
                folder = directory / f"h{n}"
                folder.mkdir(parents=True, exist_ok=True)
                members.append(Host(space, host_config(config, directory, n, address, n == 1),
                                    folder))
            async with running_gateway(config) as gw:
                cluster = Cluster(made, underlay, config, gw, members)
                for name, service in (("netalloc", run_netalloc), ("scheduler", run_scheduler),
                                      ("dispatcher", run_dispatcher)):
                    ctx = ServiceContext(config=config, log=gw.log, store=gw.store, name=name)
                    cluster.tasks.append(asyncio.create_task(service(ctx), name=name))
                try:
                    for host in members:
                        host.start()
                    yield cluster
                finally:
                    for task in cluster.tasks:
                        task.cancel()
                    for task in cluster.tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
        finally:
            for host in members:
                await asyncio.to_thread(host.stop)
                shutil.rmtree(host.config.host.runtime_dir, ignore_errors=True)
            nats.stop()
            etcd.stop()
