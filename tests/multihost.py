"""Network namespaces for tests: hosts on an IPv6 underlay, guests, pings; always cleaned up.

- ``Namespace``: a named network namespace (unique name, removed on close) with a worker
  thread that lives in it, so code of this process (pyroute2, sockets, ``nft``, radvd
  children) can run there: ``ns.call(fn, *args)``.
- ``Underlay``: a bridge in the test's own namespace with an address of a fresh ULA /64
  (the servers listen there), and per host a namespace joined to it by a veth (MTU 1600),
  with an address in the same /64.
- ``guest``: a namespace whose ``eth0`` has a VM's MAC; its peer, named like the VM's tap,
  is left in the host's namespace to be plugged into a bridge: a VM without the VM.
- ``ping``: ICMPv6 echo from a namespace (raw socket), True when answered.

Names carry a random tag, so tests running at the same time never meet; every link and
namespace made here is removed by ``close`` even when the test failed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ipaddress
import os
import secrets
import select
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

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
        space = self.made.add(f"h{n}")
        outside = f"ucu{self.made.tag}h{n}"
        sh("ip", "link", "add", outside, "mtu", str(UNDERLAY_MTU), "type", "veth", "peer",
           "name", "underlay", "netns", space.name)
        self.made.root_links.append(outside)
        sh("ip", "link", "set", outside, "master", self.bridge, "up")
        address = self.address(10 + n)
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
        sock.sendto(struct.pack("!BBHHH", 128, 0, 0, ident, 1) + payload, (target, 0))
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
