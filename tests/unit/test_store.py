"""The gRPC target the store builds from etcd endpoints: names, IPv6 and IPv4 addresses."""

from __future__ import annotations

import pytest

from ucloud.errors import StoreError
from ucloud.store import grpc_target

RECORDS = {"etcd1.example.net": ["2001:db8::1"], "etcd2.example.net": ["192.0.2.2"],
           "etcd3.example.net": ["2001:db8::3", "192.0.2.3"]}


def resolve(host: str, port: int) -> list[str]:
    return RECORDS[host]


@pytest.mark.parametrize(
    ("endpoints", "target"),
    [
        (["127.0.0.1:2379"], "ipv4:127.0.0.1:2379"),
        (["10.0.0.1:2379", "10.0.0.2:2379"], "ipv4:10.0.0.1:2379,10.0.0.2:2379"),
        (["[::1]:2379"], "ipv6:[::1]:2379"),
        (["[2001:db8::20]:2379", "[2001:db8::21]:2379"],
         "ipv6:[2001:db8::20]:2379,[2001:db8::21]:2379"),
        (["[::1]:2379", "127.0.0.1:2380"], "ipv6:[::1]:2379,[::ffff:127.0.0.1]:2380"),
        (["etcd1.example.net:2379"], "dns:///etcd1.example.net:2379"),
        (["localhost"], "dns:///localhost:2379"),
        (["etcd1.example.net:2379", "etcd2.example.net:2379"],
         "ipv6:[2001:db8::1]:2379,[::ffff:192.0.2.2]:2379"),
        (["etcd2.example.net:1", "192.0.2.9:2"], "ipv4:192.0.2.2:1,192.0.2.9:2"),
        (["etcd3.example.net:2379", "[::1]:2379"],
         "ipv6:[2001:db8::3]:2379,[::ffff:192.0.2.3]:2379,[::1]:2379"),
    ],
)
def test_endpoints_become_one_target(endpoints: list[str], target: str) -> None:
    assert grpc_target(endpoints, resolve) == target


@pytest.mark.parametrize(
    ("endpoints", "reason"),
    [
        ([], "no etcd endpoint"),
        (["2001:db8::1:2379"], "IPv6 in brackets"),
        (["etcd:port"], "is not a number"),
        (["etcd:70000"], "out of range"),
    ],
)
def test_a_bad_endpoint_is_named(endpoints: list[str], reason: str) -> None:
    with pytest.raises(StoreError, match=reason):
        grpc_target(endpoints, resolve)
