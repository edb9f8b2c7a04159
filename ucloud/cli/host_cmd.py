"""``ucloud host list|add|drain|undrain``: the hypervisors (realm admin)."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from ucloud.client.args import add_client_options, emit, open_gateway, size_arg
from ucloud.client.http import path
from ucloud.client.layouts import HOSTS


def register(sub: Any) -> None:
    parser = sub.add_parser("host", help="manage hypervisor hosts (realm admin)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    listing = verbs.add_parser("list", help="list the hosts and their use")
    add_client_options(listing)
    listing.set_defaults(func=_list)

    add = verbs.add_parser("add", help="register a host's capacity")
    add.add_argument("id", help="host id (its name)")
    add.add_argument("--cpu", required=True, type=_count, help="CPUs to offer")
    add.add_argument("--ram", required=True, type=size_arg, help="RAM to offer: GiB, or 256G")
    add.add_argument("--ssd", required=True, type=size_arg, help="SSD to offer: GiB, or 2T")
    add.add_argument("--hdd", type=size_arg, help="HDD to offer: GiB, or 8T")
    add.add_argument("--address", help="the host's underlay IPv6 address")
    add.add_argument("--router", action="store_true", help="the host routes (runs radvd)")
    add_client_options(add)
    add.set_defaults(func=_add)

    for verb, summary in (
        ("drain", "place no new VMs on a host"),
        ("undrain", "place VMs on a host again"),
    ):
        action = verbs.add_parser(verb, help=summary)
        action.add_argument("id", help="host id")
        add_client_options(action)
        action.set_defaults(func=functools.partial(_mark, verb))


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _list(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get("/v1/hosts"), HOSTS)
    return 0


def _add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"id": args.id, "cpu": args.cpu, "ram": args.ram, "ssd": args.ssd}
    if args.hdd is not None:
        body["hdd"] = args.hdd
    if args.address:
        body["address"] = args.address
    if args.router:
        body["router"] = True
    with open_gateway(args) as gateway:
        emit(args, gateway.post("/v1/hosts", body), HOSTS)
    return 0


def _mark(verb: str, args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.post(path("v1", "hosts", args.id, verb)), HOSTS)
    return 0
