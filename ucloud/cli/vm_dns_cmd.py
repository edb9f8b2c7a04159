"""``ucloud vm dns add|remove|list`` and ``ucloud vm ptr set``: a VM's DNS names.

A name gets an AAAA record for each of the VM's addresses in the zone it is in (one the
operator offers, ``[dns] zones``); the PTR of each address points to the name its owner
set, else to the VM's first name, else to ``<vm>.<owner>.<default zone>``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ucloud.client.args import add_client_options, emit, open_gateway
from ucloud.client.http import path


def register(verbs: Any) -> None:
    """Adds ``dns`` and ``ptr`` to the verbs of ``ucloud vm``."""
    dns = verbs.add_parser("dns", help="the VM's DNS names (AAAA and default PTR records)")
    actions = dns.add_subparsers(dest="dns_verb", metavar="ACTION", required=True)
    for verb, summary, func in (
        ("add", "give the VM a DNS name, e.g. web.alice.vm.example.net", _add),
        ("remove", "take a DNS name from the VM", _remove),
    ):
        action = actions.add_parser(verb, help=summary)
        action.add_argument("id", help="VM id or name")
        action.add_argument("name", help="the full DNS name")
        add_client_options(action)
        action.set_defaults(func=func)
    listing = actions.add_parser("list", help="the VM's DNS names and reverse names")
    listing.add_argument("id", help="VM id or name")
    add_client_options(listing)
    listing.set_defaults(func=_list)

    ptr = verbs.add_parser("ptr", help="the reverse names (PTR) of the VM's addresses")
    ptr_actions = ptr.add_subparsers(dest="ptr_verb", metavar="ACTION", required=True)
    set_ = ptr_actions.add_parser("set", help="set the PTR name of one of the VM's addresses")
    set_.add_argument("id", help="VM id or name")
    set_.add_argument("address", help="one of the VM's IPv6 addresses")
    set_.add_argument("name", nargs="?", default="", help="the name (none: back to the default)")
    add_client_options(set_)
    set_.set_defaults(func=_ptr_set)


def render_names(vm: Mapping[str, Any]) -> str:
    lines = [f"name  {name}" for name in vm.get("dns") or ()]
    for nic in vm.get("nics") or ():
        if nic.get("address"):
            lines.append(f"ptr   {nic['address']} -> {nic.get('ptr') or '(default)'}")
    return "\n".join(lines) or "(no names, no addresses)"


def _add(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.post(path("v1", "vms", args.id, "dns"), {"name": args.name}),
             render_names)
    return 0


def _remove(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.delete(path("v1", "vms", args.id, "dns", args.name)), render_names)
    return 0


def _list(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get(path("v1", "vms", args.id)), render_names)
    return 0


def _ptr_set(args: argparse.Namespace) -> int:
    body = {"address": args.address, "name": args.name}
    with open_gateway(args) as gateway:
        emit(args, gateway.request("PUT", path("v1", "vms", args.id, "ptr"), body), render_names)
    return 0
