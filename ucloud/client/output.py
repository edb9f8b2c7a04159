"""What the CLI prints: aligned tables for people, the gateway's JSON for scripts.

Renderers take the decoded JSON (views as the gateway sends them) and return text; they
tolerate missing fields, since a newer gateway may add or an older one lack a field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ucloud.client.sizes import format_mib

Json = Any
Renderer = Callable[[Json], str]
NONE = "-"


def as_json(data: Json) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def render(data: Json, output: str, renderer: Renderer) -> str:
    """``-o json``: the JSON as the gateway sent it; otherwise the human rendering."""
    return as_json(data) if output == "json" else renderer(data)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    lines = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def fields(pairs: Iterable[tuple[str, str]]) -> str:
    """``key:  value`` lines with the values aligned."""
    items = list(pairs)
    width = max((len(key) for key, _ in items), default=0) + 1
    return "\n".join(f"{key + ':':<{width}}  {value}".rstrip() for key, value in items)


def size(value: Any) -> str:
    return format_mib(value) if isinstance(value, int) and value > 0 else NONE


def _spec(view: Mapping[str, Any], key: str = "spec") -> Mapping[str, Any]:
    spec = view.get(key)
    return spec if isinstance(spec, Mapping) else {}


def _text(value: Any) -> str:
    return NONE if value in (None, "", [], ()) else str(value)


def when(value: Any) -> str:
    """A timestamp to the second: ``2026-11-21T06:22:43.130182Z`` -> ``2026-11-21T06:22:43Z``."""
    if not isinstance(value, str) or not value:
        return _text(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if moment.tzinfo is not None else "")


def render_vms(vms: Sequence[Mapping[str, Any]]) -> str:
    headers = ("ID", "NAME", "OWNER", "STATUS", "CPU", "RAM", "SSD", "HDD", "HOST")
    rows = []
    for vm in vms:
        spec = _spec(vm)
        rows.append((
            _text(vm.get("id")), _text(vm.get("name")), _text(vm.get("owner")),
            _text(vm.get("status")), _text(spec.get("cpu")), size(spec.get("ram_mib")),
            size(spec.get("ssd_mib")), size(spec.get("hdd_mib")), _text(vm.get("host")),
        ))
    return table(headers, rows)


def render_vm(vm: Mapping[str, Any]) -> str:
    spec = _spec(vm)
    status = _text(vm.get("status"))
    if vm.get("reason"):
        status = f"{status} ({vm['reason']})"
    nics = [
        " ".join(str(nic.get(key)) for key in ("network", "mac", "address") if nic.get(key))
        for nic in vm.get("nics") or ()
        if isinstance(nic, Mapping)
    ]
    return fields([
        ("id", _text(vm.get("id"))),
        ("name", _text(vm.get("name"))),
        ("owner", _text(vm.get("owner"))),
        ("status", status),
        ("host", _text(vm.get("host"))),
        ("cpu", _text(spec.get("cpu"))),
        ("ram", size(spec.get("ram_mib"))),
        ("ssd", size(spec.get("ssd_mib"))),
        ("hdd", size(spec.get("hdd_mib"))),
        ("image", _text(vm.get("image"))),
        ("restart", _text(vm.get("restart"))),
        ("nics", ", ".join(nics) or NONE),
        ("keys", ", ".join(str(key) for key in vm.get("keys") or ()) or NONE),
        ("created", when(vm.get("created_at"))),
        ("updated", when(vm.get("updated_at"))),
    ])


def render_hosts(hosts: Sequence[Mapping[str, Any]]) -> str:
    headers = ("ID", "STATE", "CPU", "RAM", "SSD", "HDD", "VMS", "FLAGS", "ADDRESS")
    rows = []
    for host in hosts:
        capacity, used = _spec(host, "capacity"), _spec(host, "used")
        flags = [flag for flag in ("drained", "router") if host.get(flag)]
        rows.append((
            _text(host.get("id")), _text(host.get("state")),
            f"{used.get('cpu', 0)}/{capacity.get('cpu', 0)}",
            *(_usage(used.get(k), capacity.get(k)) for k in ("ram_mib", "ssd_mib", "hdd_mib")),
            str(len(host.get("vms") or ())), ",".join(flags) or NONE, _text(host.get("address")),
        ))
    return table(headers, rows)


def _usage(used: Any, capacity: Any) -> str:
    """``6G/64G``: used of capacity (``0/-`` when the host has none of it)."""
    return f"{size(used) if used else '0'}/{size(capacity)}"


def render_host(host: Mapping[str, Any]) -> str:
    return render_hosts([host])


def render_keys(keys: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ("ID", "NAME", "KEY"),
        ((_text(k.get("id")), _text(k.get("name")), short_key(str(k.get("public_key", ""))))
         for k in keys),
    )


def render_key(key: Mapping[str, Any]) -> str:
    return render_keys([key])


def short_key(public_key: str) -> str:
    """``ssh-ed25519 AAAAC3Nz…mQ7x alice@laptop``: type, ends of the blob, comment."""
    parts = public_key.split(maxsplit=2)
    if len(parts) < 2:
        return public_key or NONE
    blob = parts[1] if len(parts[1]) <= 20 else f"{parts[1][:8]}…{parts[1][-8:]}"
    return " ".join([parts[0], blob, *parts[2:]])


def render_users(users: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ("NAME", "REALM", "KEYS", "CREATED"),
        ((_text(u.get("name")), _text(u.get("realm")), str(len(u.get("keys") or ())),
          when(u.get("created_at"))) for u in users),
    )


def render_events(lines: Sequence[Mapping[str, Any]]) -> str:
    return table(
        ("SEQ", "AT", "ACTOR", "TYPE", "SUMMARY"),
        ((_text(e.get("seq")), when(e.get("at")), _text(e.get("actor")), _text(e.get("type")),
          _text(e.get("summary"))) for e in lines),
    )
