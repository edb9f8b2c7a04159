"""The VM bridges of this host the metadata service listens on, and where a request arrived.

Theory of operation. A VM network's bridge is ``br<vni>``; it exists on a host while a
VM of that network runs there (hostd creates it). Every ``bridge_poll_s`` seconds, and
when the projection's networks change, the service lists this host's links and decides
with ``plan`` which bridges to listen on: those named ``br<vni>`` for a VNI of a network
in the projection, and of kind bridge. For each it makes sure ``fe80::a9fe:a9fe/64``
(no DAD) is on the bridge and keeps one listening socket bound to
``[fe80::a9fe:a9fe%br<vni>]:port``, so the listener itself says where a request arrived.
A bridge that disappears (or comes back with another index) loses (renews) its listener.

The optional global address is one socket for all bridges; there the arrival interface
of each connection comes from the kernel (``IPV6_RECVPKTINFO`` on the listener, read back
from the accepted socket with ``IPV6_2292PKTOPTIONS``: the SYN's incoming interface).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ucloud.metadata import BRIDGE_PREFIX, METADATA_ADDRESS

IFA_F_NODAD = 0x02
IPV6_2292PKTOPTIONS = 6  # linux/in6.h
_EEXIST = 17


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    index: int
    kind: str  # "bridge", "veth", "" for none


@dataclass(frozen=True, slots=True)
class Bridge:
    name: str
    index: int
    vni: int


@dataclass(frozen=True, slots=True)
class Plan:
    open: tuple[Bridge, ...]  # listen on these
    close: tuple[str, ...]  # stop listening on these (by name)


def vni_of(name: str) -> int | None:
    """``br17`` -> 17; None for any other name."""
    digits = name[len(BRIDGE_PREFIX) :]
    if not name.startswith(BRIDGE_PREFIX) or not digits.isdigit() or digits.startswith("0"):
        return None
    return int(digits)


def plan(links: Iterable[Link], vnis: set[int], listening: Mapping[str, Bridge]) -> Plan:
    """Which bridges to start and stop listening on, given this host's links and the VNIs."""
    wanted: dict[str, Bridge] = {}
    for link in links:
        vni = vni_of(link.name)
        if link.kind == "bridge" and vni is not None and vni in vnis:
            wanted[link.name] = Bridge(link.name, link.index, vni)
    close = tuple(
        name for name, bridge in listening.items() if wanted.get(name) != bridge
    )
    opened = tuple(b for name, b in wanted.items() if listening.get(name) != b)
    return Plan(open=opened, close=close)


class HostLinks:
    """This host's links and addresses, over netlink (pyroute2). Blocking: call in a thread."""

    def links(self) -> list[Link]:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            return [
                Link(
                    name=str(msg.get("ifname")),
                    index=int(msg["index"]),
                    kind=str(msg.get(("linkinfo", "kind")) or ""),
                )
                for msg in ipr.get_links()
            ]

    def ensure_address(self, indexes: Iterable[int]) -> list[tuple[int, OSError]]:
        """Put ``fe80::a9fe:a9fe/64`` (nodad) on each link; the failures, by link index."""
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        failures: list[tuple[int, OSError]] = []
        with IPRoute() as ipr:
            have = {
                int(msg["index"])
                for msg in ipr.get_addr(family=socket.AF_INET6)
                if msg.get("address") == METADATA_ADDRESS
            }
            for index in indexes:
                if index in have:
                    continue
                try:
                    ipr.addr(
                        "add", index=index, address=METADATA_ADDRESS, prefixlen=64,
                        flags=IFA_F_NODAD,
                    )
                except NetlinkError as exc:
                    if exc.code != _EEXIST:
                        failures.append((index, OSError(exc.code, str(exc))))
        return failures


def arrival_index(sock: Any) -> int | None:
    """The index of the interface an accepted TCP connection's SYN came in on.

    Needs ``IPV6_RECVPKTINFO`` on the listening socket; None when the kernel kept nothing.
    """
    data: bytes = sock.getsockopt(socket.IPPROTO_IPV6, IPV6_2292PKTOPTIONS, 512)
    return pktinfo_index(data)


def pktinfo_index(data: bytes) -> int | None:
    """The ifindex of the ``IPV6_PKTINFO`` control message in ``data`` (cmsghdr list)."""
    header = struct.Struct("@Nii")  # cmsg_len (size_t), cmsg_level, cmsg_type
    align = struct.calcsize("@N")
    offset = 0
    while offset + header.size <= len(data):
        length, level, kind = header.unpack_from(data, offset)
        if length < header.size:
            return None
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            start = offset + header.size
            if start + 20 <= len(data):
                (index,) = struct.unpack_from("@I", data, start + 16)
                return int(index)
            return None
        offset += (length + align - 1) // align * align
    return None
