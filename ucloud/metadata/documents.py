"""What the metadata service answers: one identified VM's documents, by path.

Pure: ``answer(path, facts)`` turns a request path and the facts about the calling VM into
a ``Reply``. The documents:

- ``/ucloud/v1/meta``: JSON, the VM's id, name, hostname, owner, SSH keys and NICs (MAC,
  network, IPAM, prefix, address);
- ``/ucloud/v1/hostname`` and ``/ssh-keys``: plain text, one value per line, for
  ucloud-init (the guest's ``python3-minimal`` has no JSON module);
- ``/openstack``, ``/openstack/latest/meta_data.json`` (``uuid``, ``name``, ``hostname``,
  ``public_keys``), ``network_data.json``, ``vendor_data.json``, ``vendor_data2.json`` and
  ``user_data`` (404 when the VM has none): the subset of Nova's metadata API that
  cloud-init's OpenStack datasource reads, so stock cloud images work unchanged.

The answer for a VM only ever contains that VM's facts and its owner's keys it was
created with (``VmView.keys``); keys the owner removes since disappear from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import msgspec

from ucloud.errors import InputError
from ucloud.net_addr import eui64
from ucloud.projections.views import KeyView, NetView, UserView, VmView

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
OPENSTACK_VERSION = "latest"
_OPENSTACK = f"/openstack/{OPENSTACK_VERSION}/"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything about the calling VM a document may contain."""

    vm: VmView
    keys: tuple[KeyView, ...]
    nets: Mapping[str, NetView]  # the VM's networks by id (missing ones are left out)
    user_data: bytes | None = None


class NicDocument(msgspec.Struct, kw_only=True):
    mac: str
    network: str
    ipam: str
    prefix: str
    address: str


class MetaDocument(msgspec.Struct, kw_only=True):
    id: str
    name: str
    hostname: str
    owner: str
    ssh_keys: list[str]
    nics: list[NicDocument]


def hostname_of(name: str, vm: str = "") -> str:
    """A VM name as a hostname label: ``_`` becomes ``-``; no leading or trailing ``-``."""
    label = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in name)
    label = label.strip("-")[:63].lower()
    return label or f"vm-{vm.replace('-', '')[-12:]}"


def keys_of(vm: VmView, owner: UserView | None) -> tuple[KeyView, ...]:
    """The owner's keys the VM was created with, in the VM's order (removed keys are gone)."""
    if owner is None or owner.name != vm.owner:
        return ()
    by_id = {k.id: k for k in owner.keys}
    return tuple(by_id[k] for k in vm.keys if k in by_id)


def answer(method: str, path: str, facts: Facts) -> Reply:
    """The reply to ``method path`` from the VM of ``facts``."""
    if method not in ("GET", "HEAD"):
        return Reply(405, TEXT, b"only GET and HEAD\n")
    path = path.split("?", 1)[0].split("#", 1)[0]
    if len(path) > 1:
        path = path.rstrip("/")
    if path.startswith(_OPENSTACK):
        return _openstack(path[len(_OPENSTACK) :], facts)
    build = _PATHS.get(path)
    if build is None:
        return not_found()
    return build(facts)


def not_found() -> Reply:
    return Reply(404, TEXT, b"not found\n")


def forbidden() -> Reply:
    return Reply(403, TEXT, b"forbidden: this address is not a VM of this network\n")


def meta(facts: Facts) -> Reply:
    vm = facts.vm
    doc = MetaDocument(
        id=vm.id, name=vm.name, hostname=hostname_of(vm.name, vm.id), owner=vm.owner,
        ssh_keys=[k.public_key for k in facts.keys], nics=_nics(facts),
    )
    return Reply(200, JSON, _json(doc))


def ssh_keys(facts: Facts) -> Reply:
    return Reply(200, TEXT, "".join(f"{k.public_key}\n" for k in facts.keys).encode())


def hostname(facts: Facts) -> Reply:
    return Reply(200, TEXT, f"{hostname_of(facts.vm.name, facts.vm.id)}\n".encode())


def openstack_meta_data(facts: Facts) -> dict[str, object]:
    vm = facts.vm
    public: dict[str, str] = {}
    for key in facts.keys:
        name = key.name if key.name not in public else f"{key.name}-{key.id[-8:]}"
        public[name] = key.public_key
    return {
        "uuid": vm.id,
        "name": vm.name,
        "hostname": hostname_of(vm.name, vm.id),
        "project_id": vm.owner,
        "launch_index": 0,
        "availability_zone": "ucloud",
        "public_keys": public,
        "keys": [{"name": n, "type": "ssh", "data": k} for n, k in public.items()],
        "meta": {},
        "devices": [],
    }


def openstack_network_data(facts: Facts) -> dict[str, object]:
    """Nova's network_data.json: a ``phy`` link per NIC, an IPv6 network per NIC with a /64.

    IPAM ``auto`` is ``ipv6_slaac`` (router advertisements configure the address and the
    route); ``manual`` is a static ``ipv6`` network with the EUI-64 address; ``none`` has
    a link and no network.
    """
    links: list[dict[str, object]] = []
    networks: list[dict[str, object]] = []
    for index, nic in enumerate(_nics(facts)):
        link = f"nic{index}"
        links.append({"id": link, "type": "phy", "ethernet_mac_address": nic.mac})
        if nic.ipam == "auto" and nic.prefix:
            networks.append({
                "id": f"network{index}", "link": link, "network_id": nic.network,
                "type": "ipv6_slaac",
            })
        elif nic.ipam == "manual" and nic.address:
            networks.append({
                "id": f"network{index}", "link": link, "network_id": nic.network,
                "type": "ipv6", "ip_address": nic.address, "netmask": "ffff:ffff:ffff:ffff::",
                "routes": [],
            })
    return {"links": links, "networks": networks, "services": []}


def _openstack(rest: str, facts: Facts) -> Reply:
    if rest == "meta_data.json":
        return Reply(200, JSON, _json(openstack_meta_data(facts)))
    if rest == "network_data.json":
        return Reply(200, JSON, _json(openstack_network_data(facts)))
    if rest in ("vendor_data.json", "vendor_data2.json"):
        return Reply(200, JSON, b"{}")
    if rest == "user_data":
        if facts.user_data is None:
            return not_found()
        return Reply(200, OCTETS, facts.user_data)
    return not_found()


def _openstack_listing(facts: Facts) -> Reply:
    names = ["meta_data.json", "network_data.json", "vendor_data.json", "vendor_data2.json"]
    if facts.user_data is not None:
        names.append("user_data")
    return Reply(200, TEXT, "".join(f"{n}\n" for n in names).encode())


def _nics(facts: Facts) -> list[NicDocument]:
    out: list[NicDocument] = []
    for nic in facts.vm.nics:
        net = facts.nets.get(nic.network)
        prefix = net.prefix if net is not None else ""
        address = nic.address or _address(prefix, nic.mac)
        out.append(NicDocument(
            mac=nic.mac, network=nic.network, ipam=net.ipam if net is not None else "none",
            prefix=prefix, address=address,
        ))
    return out


def _address(prefix: str, mac: str) -> str:
    if not prefix:
        return ""
    try:
        return eui64(prefix, mac)
    except InputError:
        return ""


_encoder = msgspec.json.Encoder()


def _json(value: object) -> bytes:
    return _encoder.encode(value)


def _text(body: str) -> Reply:
    return Reply(200, TEXT, body.encode())


_PATHS: dict[str, Callable[[Facts], Reply]] = {
    "/ucloud/v1/meta": meta,
    "/ucloud/v1/hostname": hostname,
    "/ssh-keys": ssh_keys,
    "/openstack": lambda facts: _text(f"{OPENSTACK_VERSION}\n"),
    f"/openstack/{OPENSTACK_VERSION}": _openstack_listing,
    "/": lambda facts: _text("openstack\nssh-keys\nucloud\n"),
    "/ucloud": lambda facts: _text("v1\n"),
    "/ucloud/v1": lambda facts: _text("hostname\nmeta\n"),
}
