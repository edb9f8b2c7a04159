"""The columns of the gateway's views as the CLI shows them (see ``ucloud.client.output``).

One ``Layout`` per kind of view; the ``render_*`` functions are their table renderings.
Commands with views of their own (networks, images, files, orders) keep their layouts
beside them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ucloud.client.output import NONE, Layout, View, column, derived, dig, size, when


def _nics(view: View) -> str:
    nics = [
        " ".join(str(nic.get(key)) for key in ("network", "mac", "address") if nic.get(key))
        for nic in view.get("nics") or ()
        if isinstance(nic, Mapping)
    ]
    return ", ".join(nics) or NONE


def _joined(key: str) -> Any:
    return lambda view: ", ".join(str(item) for item in view.get(key) or ()) or NONE


VMS = Layout(
    (
        column("id"), column("name"), column("owner"),
        column("status"),
        column("host"),
        column("cpu", "spec.cpu"),
        column("ram", "spec.ram_mib", size), column("ssd", "spec.ssd_mib", size),
        column("hdd", "spec.hdd_mib", size),
        column("image"), column("restart"), column("reason"),
        derived("nics", _nics), derived("keys", _joined("keys")),
        column("order"),
        column("created", "created_at", when), column("updated", "updated_at", when),
    ),
    listed=("id", "name", "owner", "status", "cpu", "ram", "ssd", "hdd", "host"),
)


def _usage(key: str) -> Any:
    """``6G/64G``: used of capacity (``0/-`` when the host has none of it)."""

    def cell(host: View) -> str:
        used, capacity = dig(host, ("used", key)), dig(host, ("capacity", key))
        if key == "cpu":
            return f"{used or 0}/{capacity or 0}"
        return f"{size(used) if used else '0'}/{size(capacity)}"

    return cell


def _flags(host: View) -> str:
    return ",".join(flag for flag in ("drained", "router") if host.get(flag)) or NONE


HOSTS = Layout(
    (
        column("id"), column("state"),
        derived("cpu", _usage("cpu"), "capacity.cpu"),
        derived("ram", _usage("ram_mib"), "capacity.ram_mib"),
        derived("ssd", _usage("ssd_mib"), "capacity.ssd_mib"),
        derived("hdd", _usage("hdd_mib"), "capacity.hdd_mib"),
        derived("vms", lambda host: str(len(host.get("vms") or ()))),
        derived("flags", _flags),
        column("address"),
    ),
)


def short_key(public_key: str) -> str:
    """``ssh-ed25519 AAAAC3Nz…mQ7x alice@laptop``: type, ends of the blob, comment."""
    parts = public_key.split(maxsplit=2)
    if len(parts) < 2:
        return public_key or NONE
    blob = parts[1] if len(parts[1]) <= 20 else f"{parts[1][:8]}…{parts[1][-8:]}"
    return " ".join([parts[0], blob, *parts[2:]])


KEYS = Layout(
    (column("id"), column("name"), column("key", "public_key", lambda k: short_key(str(k or "")))),
)
USERS = Layout(
    (
        column("name"), column("realm"),
        derived("keys", lambda user: str(len(user.get("keys") or ()))),
        column("created", "created_at", when),
    ),
)
EVENTS = Layout(
    (
        column("seq"), column("at", fmt=when), column("actor"), column("type"),
        column("summary"),
    ),
)


def render_vms(vms: Sequence[View]) -> str:
    return VMS.many(vms)


def render_vm(vm: View) -> str:
    return VMS.one(vm)


def render_hosts(hosts: Sequence[View]) -> str:
    return HOSTS.many(hosts)


def render_keys(keys: Sequence[View]) -> str:
    return KEYS.many(keys)


def render_users(users: Sequence[View]) -> str:
    return USERS.many(users)


def render_events(lines: Sequence[View]) -> str:
    return EVENTS.many(lines)
