"""The anti-spoofing rules of a VM port, as pure text (tables); nft runs them elsewhere."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.errors import InputError, NetworkError
from ucloud.hostd.antispoof import (
    Port,
    attach_script,
    chain,
    detach_script,
    port_of,
    port_rules,
)
from ucloud.hostd.plumbing import NicPlan
from ucloud.net_addr import eui64

VM = "01a1fcda-6510-76a1-8d0f-a91bf9304ce6"


def plan(prefix: str = "2001:db8:0:1::/64", mac: str = "02:11:22:33:44:55") -> NicPlan:
    return NicPlan(vm=VM, index=0, network="n", vni=7, prefix=prefix, ipam="auto", mac=mac)


@pytest.mark.parametrize(
    ("prefix", "mac", "addresses"),
    [
        ("2001:db8:0:1::/64", "02:11:22:33:44:55",
         ("fe80::11:22ff:fe33:4455", "2001:db8:0:1:11:22ff:fe33:4455")),
        ("", "02:11:22:33:44:55", ("fe80::11:22ff:fe33:4455",)),  # IPAM none: link-local only
        ("fd00::/64", "02-AA-BB-CC-DD-EE", ("fe80::aa:bbff:fecc:ddee", "fd00::aa:bbff:fecc:ddee")),
    ],
)
def test_a_port_may_use_its_link_local_and_eui64_addresses(
    prefix: str, mac: str, addresses: tuple[str, ...]
) -> None:
    port = port_of(plan(prefix, mac))
    assert port.name == plan().tap and port.mac == mac.lower().replace("-", ":")
    assert port.addresses == addresses


def test_the_rules_of_a_port_in_order() -> None:
    port = port_of(plan())
    targets = "{ 0xfe80000000000000001122fffe334455, 0x20010db800000001001122fffe334455 }"
    assert port_rules(port) == [
        "ether saddr != 02:11:22:33:44:55 drop",
        "ether type { 8021q, 8021ad } drop",
        "ip6 saddr != { fe80::11:22ff:fe33:4455, 2001:db8:0:1:11:22ff:fe33:4455, :: } drop",
        "ip6 saddr :: meta l4proto != ipv6-icmp drop",
        "ip6 saddr :: icmpv6 type != "
        "{ nd-neighbor-solicit, mld-listener-report, mld2-listener-report } drop",
        f"ip6 saddr :: icmpv6 type nd-neighbor-solicit @th,64,128 != {targets} drop",
        f"icmpv6 type nd-neighbor-advert @th,64,128 != {targets} drop",
        "icmpv6 type { nd-router-advert, nd-redirect } drop",
    ]


def test_attach_replaces_what_a_port_had_and_detach_tolerates_absence() -> None:
    port = port_of(plan())
    script = attach_script([port])
    name = chain(port)
    assert script.index(f"flush chain bridge ucloud {name}") < script.index(
        f"add rule bridge ucloud {name} ether saddr"
    )
    element = f'add element bridge ucloud ports {{ "{port.name}" : jump {name} }}'
    assert script.rstrip().endswith(element)
    assert "iifname vmap @ports" in script
    gone = detach_script([port.name])
    # the element and chain are added before they are deleted: absent ones are no error
    added = gone.index(f"add chain bridge ucloud {name}")
    assert added < gone.index(f"delete chain bridge ucloud {name}")
    assert gone.index('add element bridge ucloud ports { "') < gone.index("delete element")


@pytest.mark.parametrize("name", ["", "tap x", "tap;drop", "a" * 16, 'tap"'])
def test_bad_port_names_are_refused(name: str) -> None:
    with pytest.raises(NetworkError):
        Port(name=name, mac="02:00:00:00:00:01", addresses=())
    with pytest.raises(NetworkError):
        detach_script([name])


def test_a_bad_mac_or_prefix_is_an_input_error() -> None:
    with pytest.raises(InputError):
        port_of(plan(mac="02:00:00:00:00"))
    with pytest.raises(InputError):
        port_of(plan(prefix="2001:db8::/48"))


@given(st.binary(min_size=5, max_size=5), st.integers(min_value=0, max_value=2**64 - 1))
def test_the_eui64_address_is_always_allowed(tail: bytes, subnet: int) -> None:
    mac = ":".join(f"{b:02x}" for b in (0x02, *tail))
    prefix = str(ipaddress.IPv6Network((subnet << 64, 64)))
    rules = "\n".join(port_rules(port_of(plan(prefix, mac))))
    assert eui64(prefix, mac) in rules
    assert f"0x{int(ipaddress.IPv6Address(eui64(prefix, mac))):032x}" in rules
