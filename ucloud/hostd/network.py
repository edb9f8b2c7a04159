"""The Linux plumbing of VM networks: VXLAN over IPv6 multicast, bridges, taps, the router.

Theory of operation. On a host, the network with VNI n is a *segment*: ``vxlan<n>`` (VNI
n, multicast group ``network.group_prefix`` + n, UDP 4789, the underlay interface, the
host's underlay address as source, hop limit ``network.ttl``, MAC learning) enslaved to
the bridge ``br<n>``; each VM NIC is a tap on that bridge. Every operation makes the
kernel match what is asked and keeps nothing in memory that matters: doing it twice
changes nothing, and a restarted hostd carries on from what the kernel holds.

- ``attach(nics)``: per NIC, its network's segment; the port's anti-spoofing rules
  (``antispoof``); the tap (made persistent for QEMU; a link of that name that exists is
  taken as it is), on the bridge and up.
- ``detach(nics)``: the taps go, then their rules; a segment with no port left but its
  VXLAN goes too, unless this host routes that network.
- ``route(networks)`` (router hosts): each manual and auto network gets its segment with
  ``<prefix>::1/64`` on the bridge (so the host reaches its VMs), and each auto network a
  radvd (``radvd``); segments of networks no longer routed lose address and radvd, and go
  when no VM port is left. ``run_router`` calls it whenever the projection's networks
  change, and every few seconds to keep radvd supervised.

Sysctls, written under /proc/sys: a bridge takes no router adverts and no SLAAC address
from a VM network (accept_ra, autoconf 0); ports carry frames and hold no address
(disable_ipv6 1). A bridge's MAC is fixed, derived from the host and the VNI, so its
link-local address stays put as ports come and go. Blocking (netlink, nft, radvd): hostd
calls these from a worker thread; one lock serialises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ucloud.config import Config
from ucloud.errors import NetworkError, UcloudError
from ucloud.hostd import antispoof
from ucloud.hostd.plumbing import NicPlan
from ucloud.hostd.radvd import RadvdSupervisor, radvd_conf
from ucloud.projections.views import NetView, decode_value
from ucloud.store import Store

log = logging.getLogger(__name__)

DSTPORT = 4789
IFA_F_NODAD = 0x02
ROUTER_TICK_S = 5.0
ROUTED_IPAM = ("manual", "auto")
_SEGMENT = re.compile(r"^br([1-9][0-9]{0,7})$")


def bridge_name(vni: int) -> str:
    return f"br{vni}"


def vxlan_name(vni: int) -> str:
    return f"vxlan{vni}"


def group_of(vni: int, group_prefix: str) -> str:
    """The VXLAN multicast group of ``vni``: ``ff05::/104`` and 17 -> ``ff05::11``."""
    return str(ipaddress.IPv6Network(group_prefix).network_address + vni)


def bridge_mac(host: str, vni: int) -> str:
    """A locally administered unicast MAC (06:...) of this host's bridge of ``vni``."""
    digest = hashlib.blake2b(f"{host}/{vni}".encode(), digest_size=5).digest()
    return ":".join(f"{b:02x}" for b in (0x06, *digest))


def router_address(prefix: str) -> str:
    """``<prefix>::1``: the router's address in a /64."""
    return str(ipaddress.IPv6Network(prefix).network_address + 1)


@dataclass(frozen=True, slots=True)
class Routed:
    """A network a router host serves: its VNI, /64 and IPAM type."""

    vni: int
    prefix: str
    ipam: str


def routed_of(views: Iterable[NetView]) -> list[Routed]:
    """The created manual and auto networks, by VNI."""
    nets = {
        v.vni: Routed(v.vni, v.prefix, v.ipam)
        for v in views
        if v.status == "created" and v.ipam in ROUTED_IPAM and v.prefix and v.vni
    }
    return [nets[vni] for vni in sorted(nets)]


def _net_views(prefix: str, items: Iterable[tuple[str, bytes]]) -> Iterator[NetView]:
    for key, value in items:
        try:
            view = decode_value(key[len(prefix) :], value)
        except msgspec.MsgspecError:
            log.warning("router: %s does not decode; skipped", key)
            continue
        if isinstance(view, NetView):
            yield view


def forwarding(sysctl: Path = Path("/proc/sys/net/ipv6/conf/all/forwarding")) -> bool:
    try:
        return sysctl.read_text().strip() != "0"
    except OSError:
        return False


class _Kernel:
    """The links and addresses of this thread's network namespace, over one netlink socket."""

    def __init__(self, ipr: Any) -> None:
        self.ipr = ipr

    def index(self, name: str) -> int | None:
        found = self.ipr.link_lookup(ifname=name)
        return int(found[0]) if found else None

    def links(self) -> list[Any]:
        return list(self.ipr.get_links())

    def kind(self, link: Any) -> str:
        info = link.get("IFLA_LINKINFO")
        return str(info.get("IFLA_INFO_KIND") or "") if info else ""

    def link(self, index: int) -> Any:
        return self.ipr.get_links(index)[0]

    def ports(self, bridge: int) -> list[str]:
        return sorted(str(m.get("ifname")) for m in self.links() if m.get("master") == bridge)

    def globals(self, index: int) -> list[tuple[str, int]]:
        """The global IPv6 addresses on a link, with their prefix lengths."""
        return [
            (str(m.get("IFA_ADDRESS")), int(m["prefixlen"]))
            for m in self.ipr.get_addr(family=socket.AF_INET6, index=index)
            if m["scope"] == 0
        ]


class LinuxPlumbing:
    """VM networking of this host (the ``Plumbing`` hostd uses), and the router role."""

    def __init__(
        self, config: Config, *, radvd: RadvdSupervisor | None = None,
        sysctl_root: Path = Path("/proc/sys"),
    ) -> None:
        self.settings = config.network
        self.host = config.host
        self.radvd = radvd or RadvdSupervisor(config.paths.radvd)
        self.sysctl_root = sysctl_root
        self._lock = threading.Lock()

    # --- Plumbing -----------------------------------------------------------------------

    def attach(self, nics: Sequence[NicPlan]) -> list[str]:
        """Each NIC's tap on its network's bridge, with its rules; the tap names."""
        if not nics:
            return []
        ports = [antispoof.port_of(nic) for nic in nics]
        with self._lock, self._kernel("attach") as kernel:
            bridges = {nic.vni: self._segment(kernel, nic.vni) for nic in nics}
            antispoof.apply(antispoof.attach_script(ports))  # rules before the ports join
            for nic in nics:
                self._tap(kernel, nic, bridges[nic.vni])
        return [nic.tap for nic in nics]

    def detach(self, nics: Sequence[NicPlan]) -> None:
        """The NICs' taps and rules go; so do segments nothing uses any more."""
        if not nics:
            return
        with self._lock, self._kernel("detach") as kernel:
            for nic in nics:
                index = kernel.index(nic.tap)
                if index is not None:
                    _quietly(kernel.ipr.link, "del", index=index)
            antispoof.apply(antispoof.detach_script([nic.tap for nic in nics]))
            for vni in sorted({nic.vni for nic in nics}):
                self._prune(kernel, vni)

    # --- the router role ----------------------------------------------------------------

    def route(self, networks: Sequence[Routed], default_router: bool | None = None) -> None:
        """Serve exactly ``networks`` (those with IPAM manual or auto) from this host."""
        wanted = {n.vni: n for n in networks if n.ipam in ROUTED_IPAM and n.prefix}
        if default_router is None:
            default_router = forwarding(self.sysctl_root / "net/ipv6/conf/all/forwarding")
        with self._lock, self._kernel("route") as kernel:
            for net in wanted.values():
                bridge = self._segment(kernel, net.vni)
                self._hold(kernel, bridge, router_address(net.prefix))
                if net.ipam == "auto":
                    text = radvd_conf(
                        bridge_name(net.vni), net.prefix, mtu=self.settings.mtu,
                        rdnss=self.settings.rdnss, default_router=default_router,
                    )
                    self.radvd.ensure(net.vni, text)
                else:
                    self.radvd.stop(net.vni)
            for vni in sorted(set(self._segments(kernel)) - set(wanted)):
                bridge = kernel.index(bridge_name(vni))
                if bridge is not None:
                    self._hold(kernel, bridge, None)
                self.radvd.stop(vni)
                self._prune(kernel, vni)
            for vni in set(self.radvd.daemons) - {n.vni for n in wanted.values()
                                                  if n.ipam == "auto"}:
                self.radvd.stop(vni)
            self.radvd.check()

    async def run_router(self, store: Store, prefix: str, tick_s: float = ROUTER_TICK_S) -> None:
        """The router role until cancelled: the projection's networks routed here."""
        await asyncio.to_thread(self.radvd.adopt_all)
        changed = asyncio.Event()

        async def watch() -> None:
            while True:
                try:
                    async for _ in store.watch_prefix(prefix + "net/"):
                        changed.set()
                except Exception as exc:  # noqa: BLE001 - the ticks go on; watch again
                    log.warning("router: watching the networks failed (%s)", exc)
                await asyncio.sleep(tick_s)

        watcher = asyncio.create_task(watch(), name="router:watch")
        try:
            while True:
                changed.clear()
                try:
                    items = await store.get_prefix(prefix + "net/")
                    await asyncio.to_thread(self.route, routed_of(_net_views(prefix, items)))
                except Exception as exc:  # noqa: BLE001 - VMs keep running; try next tick
                    log.error("router: %s", exc, exc_info=not isinstance(exc, UcloudError))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(tick_s):
                        await changed.wait()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    # --- links --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _kernel(self, what: str) -> Any:
        try:
            with IPRoute() as ipr:
                yield _Kernel(ipr)
        except NetlinkError as exc:
            raise NetworkError(f"{what}: netlink: {exc}") from exc
        except OSError as exc:
            raise NetworkError(f"{what}: {exc}") from exc

    def _underlay(self, kernel: _Kernel) -> int | None:
        """The underlay link's index; None when the networks stay on this host."""
        if self.settings.underlay:
            index = kernel.index(self.settings.underlay)
            if index is None:
                raise NetworkError(f"network.underlay: no link {self.settings.underlay} here")
            return index
        if not self.host.address:
            return None
        for msg in kernel.ipr.get_addr(family=socket.AF_INET6, address=self.host.address):
            return int(msg["index"])
        raise NetworkError(f"host.address {self.host.address} is on no link of this host")

    def _segment(self, kernel: _Kernel, vni: int) -> int:
        """``br<vni>`` with ``vxlan<vni>`` on it, up; the bridge's index."""
        name, mtu = bridge_name(vni), self.settings.mtu
        bridge = kernel.index(name)
        if bridge is None:
            kernel.ipr.link("add", ifname=name, kind="bridge", br_mcast_snooping=0,
                            address=bridge_mac(self.host.id, vni))
            bridge = _must(kernel.index(name), name)
        elif kernel.kind(kernel.link(bridge)) != "bridge":
            raise NetworkError(f"{name} exists and is not a bridge")
        self._sysctl(name, accept_ra=0, autoconf=0)
        kernel.ipr.link("set", index=bridge, mtu=mtu, state="up")
        vxlan = self._vxlan(kernel, vni)
        self._sysctl(vxlan_name(vni), disable_ipv6=1)
        try:
            kernel.ipr.link("set", index=vxlan, master=bridge, mtu=mtu, state="up")
        except NetlinkError as exc:
            raise NetworkError(
                f"{vxlan_name(vni)}: cannot carry MTU {mtu} ({exc}); the underlay needs an "
                f"MTU of at least {mtu + 70}, or lower network.mtu"
            ) from exc
        return bridge

    def _vxlan(self, kernel: _Kernel, vni: int) -> int:
        name = vxlan_name(vni)
        underlay = self._underlay(kernel)
        wanted: dict[str, Any] = {"vxlan_id": vni, "vxlan_port": DSTPORT, "vxlan_learning": 1}
        if underlay is not None:
            wanted |= {"vxlan_group6": group_of(vni, self.settings.group_prefix),
                       "vxlan_link": underlay, "vxlan_ttl": self.settings.ttl}
        if self.host.address:
            wanted["vxlan_local6"] = self.host.address
        index = kernel.index(name)
        if index is not None and _vxlan_matches(kernel, index, wanted):
            return index
        if index is not None:
            log.info("%s: its settings changed; making it again", name)
            kernel.ipr.link("del", index=index)
        kernel.ipr.link("add", ifname=name, kind="vxlan", **wanted)
        return _must(kernel.index(name), name)

    def _tap(self, kernel: _Kernel, nic: NicPlan, bridge: int) -> None:
        index = kernel.index(nic.tap)
        if index is None:
            flags = {"no_pi": True, "vnet_hdr": True, "one_queue": False, "multi_queue": False}
            kernel.ipr.link("add", ifname=nic.tap, kind="tuntap", mode="tap", ifr=flags)
            index = _must(kernel.index(nic.tap), nic.tap)
        self._sysctl(nic.tap, disable_ipv6=1)
        kernel.ipr.link("set", index=index, master=bridge, mtu=self.settings.mtu, state="up")

    def _segments(self, kernel: _Kernel) -> list[int]:
        """The VNIs of this host's segments: a ``br<n>`` bridge with ``vxlan<n>`` on it and the
        MAC this host gives it (another bridge of that name is not ours to touch)."""
        links = kernel.links()
        by_index = {int(m["index"]): m for m in links}
        found = []
        for link in links:
            match = _SEGMENT.match(str(link.get("ifname")))
            if match is None or kernel.kind(link) != "bridge":
                continue
            ports = {str(m.get("ifname")) for m in by_index.values()
                     if m.get("master") == link["index"]}
            vni = int(match[1])
            if vxlan_name(vni) in ports and link.get("address") == bridge_mac(self.host.id, vni):
                found.append(vni)
        return sorted(found)

    def _prune(self, kernel: _Kernel, vni: int) -> None:
        """Remove the segment of ``vni`` if no VM port is on it and it is not routed here."""
        bridge = kernel.index(bridge_name(vni))
        vxlan = kernel.index(vxlan_name(vni))
        if bridge is not None:
            if set(kernel.ports(bridge)) - {vxlan_name(vni)}:
                return
            if any(_is_router_address(a, n) for a, n in kernel.globals(bridge)):
                return
            if vxlan is not None and kernel.link(vxlan).get("master") != bridge:
                vxlan = None  # not ours
            _quietly(kernel.ipr.link, "del", index=bridge)
        if vxlan is not None:
            _quietly(kernel.ipr.link, "del", index=vxlan)
        log.info("segment of vni %d removed", vni)

    def _hold(self, kernel: _Kernel, bridge: int, address: str | None) -> None:
        """The bridge holds ``address``/64 and no other router address (None: none)."""
        for held, length in kernel.globals(bridge):
            if _is_router_address(held, length) and held != address:
                _quietly(kernel.ipr.addr, "del", index=bridge, address=held, prefixlen=length)
        if address is not None and (address, 64) not in kernel.globals(bridge):
            kernel.ipr.addr("add", index=bridge, address=address, prefixlen=64,
                            flags=IFA_F_NODAD)

    def _sysctl(self, ifname: str, **values: int) -> None:
        for key, value in values.items():
            path = self.sysctl_root / "net/ipv6/conf" / ifname / key
            try:
                if path.read_text().strip() != str(value):
                    path.write_text(f"{value}\n")
            except OSError as exc:
                raise NetworkError(f"sysctl {path}: {exc}") from exc


def _vxlan_matches(kernel: _Kernel, index: int, wanted: dict[str, Any]) -> bool:
    info = kernel.link(index).get("IFLA_LINKINFO")
    data = info.get("IFLA_INFO_DATA") if info else None
    if data is None or kernel.kind(kernel.link(index)) != "vxlan":
        return False
    have = {
        "vxlan_id": data.get("IFLA_VXLAN_ID"),
        "vxlan_group6": data.get("IFLA_VXLAN_GROUP6"),
        "vxlan_link": data.get("IFLA_VXLAN_LINK"),
        "vxlan_local6": data.get("IFLA_VXLAN_LOCAL6"),
    }
    return all(have[key] == wanted.get(key) for key in have)


def _is_router_address(address: str, length: int) -> bool:
    if length != 64:
        return False
    value = ipaddress.IPv6Address(address)
    return int(value) & ((1 << 64) - 1) == 1


def _must(index: int | None, name: str) -> int:
    if index is None:
        raise NetworkError(f"{name} was made but is not there")
    return index


def _quietly(call: Any, *args: Any, **kwargs: Any) -> None:
    """A deletion whose object may already be gone."""
    try:
        call(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT, errno.EADDRNOTAVAIL, errno.ESRCH):
            raise


def plumbing(config: Config) -> LinuxPlumbing | None:
    """This host's plumbing; None where VM networking cannot work (not root, no tun)."""
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        return None
    return LinuxPlumbing(config)
