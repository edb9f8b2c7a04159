"""Anti-spoofing: what a VM's port may send into its bridge (nftables, bridge family).

Theory of operation. One table, ``bridge ucloud``. Its base chain sees every frame that
enters a bridge port (hook prerouting) and looks the port up in the verdict map ``ports``;
a VM's port jumps to its own chain ``port_<tap>``, which drops, in this order:

- frames whose source MAC is not the VM's;
- VLAN-tagged frames (802.1Q, 802.1ad), which would carry IPv6 past the checks below;
- IPv6 from any source but the NIC's link-local and EUI-64 addresses and ``::``;
- from ``::``, anything but duplicate address detection of its own addresses (neighbour
  solicitations for them) and MLD reports;
- neighbour advertisements for a target that is not one of its addresses;
- router advertisements and redirects: a VM is never a router.

Everything else (including ARP and IPv4 of the VM's MAC on a pure layer 2 network) passes.
The rules live in the kernel, changed one port at a time in one atomic ``nft -f``
transaction: a port's rules exist before its tap joins the bridge and go after it left, and
a restarted hostd finds them as it left them. Scripts are pure functions of the ports;
``apply`` is the only I/O.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from ucloud.errors import NetworkError
from ucloud.hostd.plumbing import NicPlan
from ucloud.net_addr import eui64, link_local, normalize_mac

TABLE = "bridge ucloud"
_PORT = re.compile(r"^[A-Za-z0-9_-]{1,15}$")
# DAD probes and MLD reports are what a NIC sends before it has an address
_UNSPECIFIED_OK = "{ nd-neighbor-solicit, mld-listener-report, mld2-listener-report }"

_BASE = f"""table {TABLE} {{
\tmap ports {{
\t\ttype ifname : verdict
\t}}
\tchain prerouting {{
\t\ttype filter hook prerouting priority filter; policy accept;
\t}}
}}
flush chain {TABLE} prerouting
add rule {TABLE} prerouting iifname vmap @ports
"""


@dataclass(frozen=True, slots=True)
class Port:
    """A VM's port on its bridge: the tap's name, the VM's MAC, the NIC's addresses."""

    name: str
    mac: str
    addresses: tuple[str, ...]

    def __post_init__(self) -> None:
        if not _PORT.match(self.name):
            raise NetworkError(f"{self.name!r} is not a port name")
        for address in self.addresses:
            ipaddress.IPv6Address(address)


def port_of(nic: NicPlan) -> Port:
    """The port of a NIC: its link-local address, and its EUI-64 one in a /64 if it has one."""
    mac = normalize_mac(nic.mac)
    addresses = [link_local(mac)]
    if nic.prefix:
        addresses.append(eui64(nic.prefix, mac))
    return Port(name=nic.tap, mac=mac, addresses=tuple(addresses))


def chain(port: Port) -> str:
    return f"port_{port.name}"


def _hex(address: str) -> str:
    return f"0x{int(ipaddress.IPv6Address(address)):032x}"


def port_rules(port: Port) -> list[str]:
    """The rules of one port's chain, in order (nft syntax, without ``add rule``)."""
    own = ", ".join(port.addresses)
    targets = "{ " + ", ".join(_hex(a) for a in port.addresses) + " }"
    return [
        f"ether saddr != {port.mac} drop",
        "ether type { 8021q, 8021ad } drop",
        f"ip6 saddr != {{ {own}, :: }} drop",
        "ip6 saddr :: meta l4proto != ipv6-icmp drop",
        f"ip6 saddr :: icmpv6 type != {_UNSPECIFIED_OK} drop",
        # the target address of neighbour solicitations and advertisements (RFC 4861 4.3)
        f"ip6 saddr :: icmpv6 type nd-neighbor-solicit @th,64,128 != {targets} drop",
        f"icmpv6 type nd-neighbor-advert @th,64,128 != {targets} drop",
        "icmpv6 type { nd-router-advert, nd-redirect } drop",
    ]


def attach_script(ports: Sequence[Port]) -> str:
    """Make the table and give each port exactly its rules (replacing what it had)."""
    lines = [_BASE]
    for port in ports:
        name = chain(port)
        lines.append(f"add chain {TABLE} {name}")
        lines.append(f"flush chain {TABLE} {name}")
        lines += [f"add rule {TABLE} {name} {rule}" for rule in port_rules(port)]
        lines.append(f'add element {TABLE} ports {{ "{port.name}" : jump {name} }}')
    return "\n".join(lines) + "\n"


def detach_script(names: Sequence[str]) -> str:
    """Remove the ports' rules; a port without rules is no error (add, then delete)."""
    lines = [_BASE]
    for name in names:
        port_chain = f"port_{name}"
        if not _PORT.match(name):
            raise NetworkError(f"{name!r} is not a port name")
        lines += [
            f"add chain {TABLE} {port_chain}",
            f'add element {TABLE} ports {{ "{name}" : jump {port_chain} }}',
            f'delete element {TABLE} ports {{ "{name}" }}',
            f"delete chain {TABLE} {port_chain}",
        ]
    return "\n".join(lines) + "\n"


def apply(script: str, nft: str = "") -> None:
    """Run ``script`` in one ``nft -f`` transaction (in this thread's network namespace)."""
    binary = nft or shutil.which("nft") or "/usr/sbin/nft"
    try:
        done = subprocess.run(
            [binary, "-f", "-"], input=script, capture_output=True, text=True, timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"nftables: cannot run {binary}: {exc}") from exc
    if done.returncode != 0:
        raise NetworkError(f"nftables refused the anti-spoofing rules: {done.stderr.strip()}")
