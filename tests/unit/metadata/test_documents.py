"""The documents of the metadata service: paths, shapes, and whose keys they carry."""

from __future__ import annotations

import json

import pytest

from ucloud.events.types import Resources
from ucloud.metadata.documents import Facts, answer, hostname_of, keys_of
from ucloud.projections.views import KeyView, NetView, NicView, UserView, VmView

SPEC = Resources(cpu=1, ram_mib=512, ssd_mib=1024)
KEY_1 = KeyView(id="k1", name="laptop", public_key="ssh-ed25519 AAAA1 alice@laptop")
KEY_2 = KeyView(id="k2", name="phone", public_key="ssh-ed25519 AAAA2 alice@phone")
KEY_3 = KeyView(id="k3", name="laptop", public_key="ssh-rsa AAAA3 alice@old")
ALICE = UserView(name="alice", realm="users", keys=(KEY_1, KEY_2, KEY_3))
NETS = {
    "n-auto": NetView(id="n-auto", owner="alice", name="lan", ipam="auto", status="created",
                      vni=7, prefix="2001:db8:0:7::/64"),
    "n-manual": NetView(id="n-manual", owner="alice", name="static", ipam="manual",
                        status="created", vni=8, prefix="2001:db8:0:8::/64"),
    "n-none": NetView(id="n-none", owner="alice", name="l2", ipam="none", status="created",
                      vni=9),
}
VM = VmView(
    id="0190-vm", owner="alice", name="web_1", spec=SPEC, image="img", status="running",
    keys=("k3", "k1", "gone"),
    nics=(
        NicView(network="n-auto", mac="02:00:00:00:00:01",
                address="2001:db8:0:7:0:ff:fe00:1"),
        NicView(network="n-manual", mac="02:00:00:00:00:02"),
        NicView(network="n-none", mac="02:00:00:00:00:03"),
    ),
)


def facts(user_data: bytes | None = None) -> Facts:
    return Facts(vm=VM, keys=keys_of(VM, ALICE), nets=NETS, user_data=user_data)


def get(path: str, user_data: bytes | None = None, method: str = "GET") -> tuple[int, bytes]:
    reply = answer(method, path, facts(user_data))
    return reply.status, reply.body


def test_keys_are_the_vms_own_in_its_order_and_removed_ones_are_gone() -> None:
    assert keys_of(VM, ALICE) == (KEY_3, KEY_1)
    assert keys_of(VM, UserView(name="bob", realm="users", keys=(KEY_1,))) == ()
    assert keys_of(VM, None) == ()


@pytest.mark.parametrize(
    ("name", "hostname"),
    [("web", "web"), ("web_1", "web-1"), ("Web-2", "web-2"), ("_x_", "x"), ("___", "vm-0190vm")],
)
def test_hostname_of(name: str, hostname: str) -> None:
    assert hostname_of(name, "0190-vm") == hostname


def test_ucloud_meta() -> None:
    status, body = get("/ucloud/v1/meta")
    doc = json.loads(body)
    assert status == 200
    assert doc["id"] == "0190-vm" and doc["name"] == "web_1" and doc["hostname"] == "web-1"
    assert doc["owner"] == "alice"
    assert doc["ssh_keys"] == [KEY_3.public_key, KEY_1.public_key]
    assert doc["nics"] == [
        {"mac": "02:00:00:00:00:01", "network": "n-auto", "ipam": "auto",
         "prefix": "2001:db8:0:7::/64", "address": "2001:db8:0:7:0:ff:fe00:1"},
        {"mac": "02:00:00:00:00:02", "network": "n-manual", "ipam": "manual",
         "prefix": "2001:db8:0:8::/64", "address": "2001:db8:0:8:0:ff:fe00:2"},
        {"mac": "02:00:00:00:00:03", "network": "n-none", "ipam": "none", "prefix": "",
         "address": ""},
    ]


def test_plain_text_endpoints() -> None:
    assert get("/ssh-keys") == (200, f"{KEY_3.public_key}\n{KEY_1.public_key}\n".encode())
    assert get("/ucloud/v1/hostname") == (200, b"web-1\n")
    assert get("/ucloud/v1/hostname/?x=1") == (200, b"web-1\n")


def test_openstack_meta_data() -> None:
    assert get("/openstack") == (200, b"latest\n")
    assert get("/openstack/") == (200, b"latest\n")
    status, body = get("/openstack/latest/meta_data.json")
    doc = json.loads(body)
    assert status == 200
    assert (doc["uuid"], doc["name"], doc["hostname"]) == ("0190-vm", "web_1", "web-1")
    # two keys named "laptop": both are there, under distinct names
    assert doc["public_keys"] == {"laptop": KEY_3.public_key, "laptop-k1": KEY_1.public_key}
    assert [k["data"] for k in doc["keys"]] == [KEY_3.public_key, KEY_1.public_key]


def test_openstack_network_data() -> None:
    status, body = get("/openstack/latest/network_data.json")
    doc = json.loads(body)
    assert status == 200
    assert [link["ethernet_mac_address"] for link in doc["links"]] == [
        "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
    ]
    assert all(link["type"] == "phy" for link in doc["links"])
    auto, manual = doc["networks"]  # IPAM none: a link without a network
    assert (auto["link"], auto["type"], auto["network_id"]) == ("nic0", "ipv6_slaac", "n-auto")
    assert (manual["link"], manual["type"], manual["ip_address"]) == (
        "nic1", "ipv6", "2001:db8:0:8:0:ff:fe00:2"
    )
    assert manual["netmask"] == "ffff:ffff:ffff:ffff::"


def test_user_data_only_when_there_is_some() -> None:
    assert get("/openstack/latest/user_data")[0] == 404
    assert b"user_data" not in get("/openstack/latest")[1]
    assert get("/openstack/latest/user_data", b"#cloud-config\n") == (200, b"#cloud-config\n")
    assert b"user_data\n" in get("/openstack/latest", b"x")[1]


@pytest.mark.parametrize(
    "path",
    ["/nope", "/openstack/2012-08-10/meta_data.json", "/openstack/latest/password", "/ssh"],
)
def test_unknown_paths_are_404(path: str) -> None:
    assert get(path)[0] == 404


def test_only_get_and_head() -> None:
    assert get("/ssh-keys", method="POST")[0] == 405
    reply = answer("HEAD", "/ssh-keys", facts())
    assert reply.status == 200 and reply.body  # the transport leaves the body out
