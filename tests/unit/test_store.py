"""The gRPC target the store gives etcd3aio for IPv6 endpoints."""

from __future__ import annotations

import pytest

from ucloud.errors import StoreError
from ucloud.store import grpc_target


@pytest.mark.parametrize(
    ("endpoints", "target"),
    [
        (["127.0.0.1:2379"], ""),
        (["10.0.0.1:2379", "10.0.0.2:2379"], ""),
        (["[::1]:2379"], "ipv6:[::1]:2379"),
        (["[2001:db8::20]:2379", "[2001:db8::21]:2379"],
         "ipv6:[2001:db8::20]:2379,[2001:db8::21]:2379"),
    ],
)
def test_ipv6_endpoints_get_the_ipv6_scheme(endpoints: list[str], target: str) -> None:
    assert grpc_target(endpoints) == target


def test_a_mix_is_refused_with_the_endpoints_named() -> None:
    with pytest.raises(StoreError, match=r"\[::1\]:2379, 127.0.0.1:2379"):
        grpc_target(["[::1]:2379", "127.0.0.1:2379"])
