"""MACs and EUI-64 addresses: known values, bad input, and the round trip."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.errors import InputError
from ucloud.net_addr import eui64, interface_id, link_local, mac_of, normalize_mac


@pytest.mark.parametrize(
    ("prefix", "mac", "address"),
    [
        ("2001:db8::/64", "52:54:00:12:34:56", "2001:db8::5054:ff:fe12:3456"),
        ("2001:db8:1:2::/64", "02:00:00:00:00:01", "2001:db8:1:2:0:ff:fe00:1"),
        ("2001:db8:1:2::/64", "02-00-00-00-00-01", "2001:db8:1:2:0:ff:fe00:1"),
        ("fd00:a:b:c::/64", "AA:BB:CC:DD:EE:FF", "fd00:a:b:c:a8bb:ccff:fedd:eeff"),
    ],
)
def test_eui64_known_values(prefix: str, mac: str, address: str) -> None:
    assert eui64(prefix, mac) == address
    assert mac_of(address) == normalize_mac(mac)


def test_link_local_and_interface_id() -> None:
    assert link_local("52:54:00:12:34:56") == "fe80::5054:ff:fe12:3456"
    assert interface_id("52:54:00:12:34:56") == 0x505400FFFE123456
    assert mac_of("fe80::5054:ff:fe12:3456%br100") == "52:54:00:12:34:56"


@pytest.mark.parametrize(
    ("prefix", "mac", "field", "reason"),
    [
        ("2001:db8::/48", "02:00:00:00:00:01", "prefix", "not a /64"),
        ("2001:db8::1/64", "02:00:00:00:00:01", "prefix", "not an IPv6 network"),
        ("10.0.0.0/24", "02:00:00:00:00:01", "prefix", "not an IPv6 network"),
        ("2001:db8::/64", "02:00:00:00:01", "mac", "not a MAC address"),
        ("2001:db8::/64", "zz:00:00:00:00:01", "mac", "not a MAC address"),
    ],
)
def test_bad_input_names_the_field(prefix: str, mac: str, field: str, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        eui64(prefix, mac)
    assert caught.value.field == field and reason in caught.value.reason


def test_addresses_that_are_not_eui64() -> None:
    assert mac_of("2001:db8::1") is None
    with pytest.raises(InputError, match="address"):
        mac_of("not-an-address")


@given(mac=st.binary(min_size=6, max_size=6), net=st.integers(0, 2**64 - 1))
def test_round_trip(mac: bytes, net: int) -> None:
    text = ":".join(f"{b:02x}" for b in mac)
    prefix = str(ipaddress.IPv6Network((net << 64, 64)))
    address = eui64(prefix, text)
    assert ipaddress.IPv6Address(address) in ipaddress.IPv6Network(prefix)
    assert mac_of(address) == text
