"""The service's answers from a mirror filled by hand (no etcd), and its log throttle."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from ucloud.config import Config
from ucloud.events.types import Resources
from ucloud.metadata.server import MetadataService, Throttle
from ucloud.metadata.userdata import UserData
from ucloud.net_addr import link_local
from ucloud.projections.mirror import Mirror
from ucloud.projections.views import (
    KeyView,
    NetView,
    NicView,
    UserView,
    VmView,
    encode_value,
    mac_key,
    net_key,
    user_key,
    vm_key,
)

MAC = "02:00:00:00:00:2a"
KEY = KeyView(id="k1", name="laptop", public_key="ssh-ed25519 AAAA alice@laptop")


def service() -> MetadataService:
    store: Any = None  # never touched: nothing starts the watches
    mirror = Mirror(store, "/p/")
    user_data = UserData(store, "/s/")
    for key, value in [
        (user_key("alice"), UserView(name="alice", realm="users", keys=(KEY,))),
        (net_key("n1"), NetView(id="n1", owner="alice", name="lan", ipam="auto",
                                status="created", vni=7, prefix="2001:db8::/64")),
        (vm_key("v1"), VmView(id="v1", owner="alice", name="web", image="i", status="running",
                              spec=Resources(cpu=1, ram_mib=1, ssd_mib=1), keys=("k1",),
                              nics=(NicView(network="n1", mac=MAC),))),
        (mac_key(MAC), "v1"),
    ]:
        mirror.apply(key, encode_value(value))
    user_data.apply("v1", b"#cloud-config\n")
    return MetadataService(Config(), mirror, user_data, clock=lambda: 100.0)


def test_answers_the_vm_its_source_address_names() -> None:
    svc = service()
    reply = svc.handle("GET", "/ucloud/v1/meta", link_local(MAC) + "%br7", 7)
    assert reply.status == 200 and json.loads(reply.body)["ssh_keys"] == [KEY.public_key]
    assert svc.handle("GET", "/openstack/latest/user_data", link_local(MAC), 7).body == (
        b"#cloud-config\n"
    )
    assert svc.served == 2 and svc.refused == 0


def test_follows_the_mirror() -> None:
    svc = service()
    svc.mirror.apply(mac_key(MAC), None)  # the VM was deleted: its index went
    assert svc.handle("GET", "/ssh-keys", link_local(MAC), 7).status == 403


def test_refusals_are_403_and_logged_once_per_source_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    svc = service()
    caplog.set_level(logging.WARNING, logger="ucloud.metadata.service")
    for _ in range(3):
        reply = svc.handle("GET", "/ssh-keys", link_local(MAC), 8)
        assert reply.status == 403 and b"forbidden" in reply.body
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"metadata: refused GET /ssh-keys from {link_local(MAC)} on br8: request from "
        f"{link_local(MAC)} (MAC {MAC}, VM v1) arrived on br8, but that NIC is on br7"
    ]
    assert svc.refused == 3


def test_throttle() -> None:
    throttle = Throttle(10.0)
    key = ("fe80::1", "why")
    assert throttle.allow(key, 0.0) == 0
    assert throttle.allow(key, 5.0) is None
    assert throttle.allow(key, 9.9) is None
    assert throttle.allow(("fe80::2", "why"), 9.9) == 0
    assert throttle.allow(key, 10.0) == 2  # two held back since the last line
    assert throttle.allow(key, 10.5) is None
