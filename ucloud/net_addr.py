"""MAC addresses and the IPv6 addresses derived from them (modified EUI-64, RFC 4291).

A NIC on a network with a /64 has the address ``<prefix>::<interface id>`` where the
interface id is the MAC with ``ff:fe`` in the middle and the universal/local bit flipped.
The metadata service goes the other way: source address -> interface id -> MAC -> VM.
Pure functions; bad input is an ``InputError`` naming the field.
"""

from __future__ import annotations

import ipaddress
import re

from ucloud.errors import InputError

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
LINK_LOCAL = ipaddress.IPv6Network("fe80::/64")


def normalize_mac(mac: str, field: str = "mac") -> str:
    """``mac`` in lower case with colons; ``-`` separators are accepted."""
    value = mac.strip().lower().replace("-", ":")
    if not _MAC.match(value):
        raise InputError(field, f"{mac!r} is not a MAC address (six hex bytes: 02:00:00:00:00:01)")
    return value


def interface_id(mac: str) -> int:
    """The 64-bit modified EUI-64 interface id of ``mac``."""
    octets = bytes.fromhex(normalize_mac(mac).replace(":", ""))
    eui = bytes([octets[0] ^ 0x02]) + octets[1:3] + b"\xff\xfe" + octets[3:]
    return int.from_bytes(eui, "big")


def prefix64(prefix: str, field: str = "prefix") -> ipaddress.IPv6Network:
    """``prefix`` as an IPv6 /64 network; anything else is an InputError."""
    try:
        network = ipaddress.IPv6Network(prefix, strict=True)
    except ValueError as exc:
        raise InputError(field, f"{prefix!r} is not an IPv6 network: {exc}") from exc
    if network.prefixlen != 64:
        raise InputError(field, f"{prefix!r} is a /{network.prefixlen}, not a /64")
    return network


def eui64(prefix: str, mac: str) -> str:
    """The address of ``mac`` in the /64 ``prefix``, compressed (``2001:db8::ff:fe00:1``)."""
    network = prefix64(prefix)
    return str(ipaddress.IPv6Address(int(network.network_address) | interface_id(mac)))


def link_local(mac: str) -> str:
    """The fe80::/64 address of ``mac``: what a guest's NIC uses on its bridge."""
    return str(ipaddress.IPv6Address(int(LINK_LOCAL.network_address) | interface_id(mac)))


def mac_of(address: str) -> str | None:
    """The MAC an EUI-64 ``address`` was derived from; None when it is not EUI-64."""
    try:
        value = int(ipaddress.IPv6Address(address.split("%", 1)[0]))
    except ValueError as exc:
        raise InputError("address", f"{address!r} is not an IPv6 address") from exc
    eui = (value & (2**64 - 1)).to_bytes(8, "big")
    if eui[3:5] != b"\xff\xfe":
        return None
    octets = bytes([eui[0] ^ 0x02]) + eui[1:3] + eui[5:]
    return ":".join(f"{b:02x}" for b in octets)
