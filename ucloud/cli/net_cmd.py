"""``ucloud net create|list|show|delete``: your networks, over the gateway.

``create NAME --ipam none|manual|auto`` asks for a network; netalloc gives it a VNI and,
for manual and auto, a /64. ``--wait`` follows it until it is ``created`` (or says why it
``failed``); ``delete --wait`` until it is gone. Delete is refused while VMs are attached.
"""

from __future__ import annotations

import argparse
from typing import Any

from ucloud.client.output import NONE, Layout, column, when
from ucloud.client.resource import Resource
from ucloud.client.wait import GONE


def register(sub: Any) -> None:
    parser = sub.add_parser("net", help="create and manage networks")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="create a network")
    create.add_argument("name", help="network name (unique among your networks)")
    create.add_argument(
        "--ipam", choices=("none", "manual", "auto"), default="none",
        help="none: layer 2 only; manual: a /64; auto: a /64 and router adverts (SLAAC)",
    )
    NETWORKS.add_wait_options(create, "created")
    create.set_defaults(func=_create)
    NETWORKS.add_reads(verbs, listing_help="list your networks (an admin sees all)")
    delete = verbs.add_parser("delete", help="delete a network (refused while VMs use it)")
    delete.add_argument("id", help="network id or name")
    NETWORKS.add_wait_options(delete, GONE)
    delete.set_defaults(func=NETWORKS.delete)


def _create(args: argparse.Namespace) -> int:
    return NETWORKS.create(args, {"name": args.name, "ipam": args.ipam})


NET = Layout(
    (
        column("id"), column("name"), column("owner"), column("status"), column("ipam"),
        column("vni", fmt=lambda vni: str(vni or NONE)), column("prefix"), column("reason"),
        column("created", "created_at", when),
    ),
    listed=("id", "name", "owner", "status", "ipam", "vni", "prefix"),
)


NETWORKS = Resource(
    noun="net", collection="networks", layout=NET,
    timeout_s=60.0, poll_s=0.3,
)
