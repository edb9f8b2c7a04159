"""What a host needs to run ucloud, judged from facts probed about it.

Theory of operation. ``ucloud doctor`` (``ucloud/cli/doctor_cmd.py``) probes the host once
into ``HostFacts``: the accelerator hostd would use, the programs it runs, the kernel's
networking, the versions of QEMU, free disk, whether NATS and etcd answer. ``checks``
turns the facts into one ``Check`` per need, each ``ok``, ``warn`` (works, with a
limit worth knowing) or ``fail``, with the fix to apply. Everything here is pure: no
probe, no clock; the same facts always give the same verdicts.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

Level = Literal["ok", "warn", "fail"]
MIN_QEMU = (7, 2)  # -accel, -blockdev, QMP migrate-incoming as hostd uses them
MIN_FREE_GIB = 2.0
_VERSION = re.compile(r"version (\d+)\.(\d+)")


class HostFacts(msgspec.Struct, frozen=True, kw_only=True):
    accel: str  # "kvm" or "tcg", as hostd would choose it
    accel_reason: str
    programs: dict[str, str]  # name -> path, "" when not found
    root: bool
    tun: bool  # /dev/net/tun
    bridge_module: bool
    vxlan_module: bool
    forwarding: bool
    router: bool  # host.router
    address: str  # host.address ("" none)
    address_local: bool  # it is on an interface of this host
    qemu_version: str  # first line of --version, "" when it did not run
    qemu_img_version: str
    images_dir: str
    free_gib: float
    nats_url: str
    nats_error: str  # "" when it answered
    etcd_endpoints: str
    etcd_error: str


class Check(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    level: Level
    detail: str
    fix: str = ""


def version_of(text: str) -> tuple[int, int] | None:
    found = _VERSION.search(text)
    return (int(found[1]), int(found[2])) if found else None


def checks(facts: HostFacts) -> list[Check]:
    """One verdict per need of the host, in the order to fix them."""
    return [
        _accel(facts),
        *(_program(facts, name, fix) for name, fix in _PROGRAMS),
        _version(facts.qemu_version, "qemu", "apt-get install qemu-system-x86"),
        _version(facts.qemu_img_version, "qemu-img", "apt-get install qemu-utils"),
        _networking(facts),
        _forwarding(facts),
        _address(facts),
        _disk(facts),
        _reach("nats", facts.nats_url, facts.nats_error,
               "start nats-server with -js (or `ucloud up`), or set nats.url"),
        _reach("etcd", facts.etcd_endpoints, facts.etcd_error,
               "start etcd (or `ucloud up`), or set etcd.endpoints"),
    ]


def failed(found: list[Check]) -> bool:
    return any(check.level == "fail" for check in found)


_PROGRAMS = (
    ("qemu-system-x86_64", "apt-get install qemu-system-x86 (or set host.qemu)"),
    ("qemu-img", "apt-get install qemu-utils"),
    ("nft", "apt-get install nftables"),
    ("radvd", "apt-get install radvd"),
    ("ip", "apt-get install iproute2"),
)


def _accel(facts: HostFacts) -> Check:
    if facts.accel == "kvm":
        return Check(name="accelerator", level="ok", detail=f"kvm ({facts.accel_reason})")
    return Check(
        name="accelerator", level="warn", detail=f"tcg, slow ({facts.accel_reason})",
        fix="for KVM: enable virtualisation in the firmware, load kvm_intel/kvm_amd, and "
        "delete accel.json in the data directory to probe again",
    )


def _program(facts: HostFacts, name: str, fix: str) -> Check:
    path = facts.programs.get(name, "")
    if path:
        return Check(name=name, level="ok", detail=path)
    return Check(name=name, level="fail", detail="not found on PATH", fix=fix)


def _version(text: str, name: str, fix: str) -> Check:
    version = version_of(text)
    if version is None:
        return Check(name=f"{name} version", level="fail", detail="did not run", fix=fix)
    line = text.strip().splitlines()[0]
    if version < MIN_QEMU:
        wanted = ".".join(map(str, MIN_QEMU))
        return Check(name=f"{name} version", level="fail", detail=line,
                     fix=f"install QEMU {wanted} or newer")
    return Check(name=f"{name} version", level="ok", detail=line)


def _networking(facts: HostFacts) -> Check:
    missing = [what for what, there in (
        ("root", facts.root), ("/dev/net/tun", facts.tun),
        ("the bridge module", facts.bridge_module), ("the vxlan module", facts.vxlan_module),
    ) if not there]  # fmt: skip
    if not missing:
        return Check(name="VM networking", level="ok", detail="bridges, VXLANs and taps")
    return Check(
        name="VM networking", level="fail", detail="no " + ", no ".join(missing),
        fix="run hostd as root; modprobe tun bridge vxlan",
    )


def _forwarding(facts: HostFacts) -> Check:
    if facts.forwarding:
        return Check(name="IPv6 forwarding", level="ok",
                     detail="on: a router advertises a default route")
    if not facts.router:
        return Check(name="IPv6 forwarding", level="ok", detail="off (not a router host)")
    return Check(
        name="IPv6 forwarding", level="warn",
        detail="off: VMs reach their /64 and this host, nothing beyond",
        fix="sysctl -w net.ipv6.conf.all.forwarding=1 (and route the prefix pool here)",
    )


def _address(facts: HostFacts) -> Check:
    if not facts.address:
        return Check(name="underlay address", level="ok",
                     detail="none set: networks stay on this host")
    if facts.address_local:
        return Check(name="underlay address", level="ok", detail=f"{facts.address} is here")
    return Check(
        name="underlay address", level="fail", detail=f"{facts.address} is on no interface",
        fix="add the address to the underlay interface, or correct host.address",
    )


def _disk(facts: HostFacts) -> Check:
    detail = f"{facts.free_gib:.1f} GiB free in {facts.images_dir}"
    if facts.free_gib >= MIN_FREE_GIB:
        return Check(name="image store", level="ok", detail=detail)
    return Check(name="image store", level="fail", detail=detail,
                 fix=f"free at least {MIN_FREE_GIB:g} GiB there, or set images.dir elsewhere")


def _reach(name: str, where: str, error: str, fix: str) -> Check:
    if not error:
        return Check(name=name, level="ok", detail=f"answers at {where}")
    return Check(name=name, level="fail", detail=f"not reachable: {error}", fix=fix)
