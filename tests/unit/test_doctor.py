"""The verdicts of ``ucloud doctor`` over probed facts (pure)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from ucloud.doctor import HostFacts, checks, failed, version_of

GOOD = HostFacts(
    accel="kvm", accel_reason="the tiny guest came up in 2.0s",
    programs={n: f"/usr/bin/{n}" for n in ("qemu-system-x86_64", "qemu-img", "nft", "radvd",
                                           "ip")},
    root=True, tun=True, bridge_module=True, vxlan_module=True, forwarding=True, router=True,
    address="2001:db8::1", address_local=True,
    qemu_version="QEMU emulator version 7.2.22\n", qemu_img_version="qemu-img version 8.1.0",
    images_dir="/var/lib/ucloud/images", free_gib=60.0,
    nats_url="nats://127.0.0.1:4222", nats_error="", etcd_endpoints="127.0.0.1:2379",
    etcd_error="",
)


def test_a_good_host_is_all_ok() -> None:
    found = checks(GOOD)
    assert {c.level for c in found} == {"ok"} and not failed(found)


@pytest.mark.parametrize(("change", "name", "level", "fix"), [
    ({"accel": "tcg", "accel_reason": "no /dev/kvm"}, "accelerator", "warn", "kvm_intel"),
    ({"programs": {**GOOD.programs, "radvd": ""}}, "radvd", "fail", "apt-get install radvd"),
    ({"qemu_version": ""}, "qemu version", "fail", "qemu-system-x86"),
    ({"qemu_img_version": "qemu-img version 6.2.0"}, "qemu-img version", "fail", "7.2"),
    ({"tun": False, "root": False}, "VM networking", "fail", "modprobe"),
    ({"forwarding": False}, "IPv6 forwarding", "warn", "sysctl -w"),
    ({"address_local": False}, "underlay address", "fail", "host.address"),
    ({"free_gib": 0.5}, "image store", "fail", "images.dir"),
    ({"nats_error": "connection refused"}, "nats", "fail", "nats.url"),
    ({"etcd_error": "no answer within 5s"}, "etcd", "fail", "etcd.endpoints"),
])
def test_each_lack_is_named_with_its_fix(
    change: dict[str, Any], name: str, level: str, fix: str
) -> None:
    found = {c.name: c for c in checks(msgspec.structs.replace(GOOD, **change))}
    assert found[name].level == level and fix in found[name].fix
    assert failed(list(found.values())) == (level == "fail")
    assert sum(c.level != "ok" for c in found.values()) == 1


def test_forwarding_off_is_fine_off_a_router_and_no_address_is_fine() -> None:
    facts = msgspec.structs.replace(GOOD, forwarding=False, router=False, address="",
                                    address_local=False)
    assert {c.level for c in checks(facts)} == {"ok"}


@pytest.mark.parametrize(("text", "version"), [
    ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)", (7, 2)),
    ("qemu-img version 10.0.0", (10, 0)),
    ("", None),
])
def test_version_of(text: str, version: tuple[int, int] | None) -> None:
    assert version_of(text) == version
