"""``ucloud net create|list|show|delete``: your networks, over the gateway.

``create NAME --ipam none|manual|auto`` asks for a network; netalloc gives it a VNI and,
for manual and auto, a /64. ``--wait`` follows it until it is ``created`` (or says why it
``failed``); ``delete --wait`` until it is gone. Delete is refused while VMs are attached.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from ucloud.client.output import NONE, fields, table, when
from ucloud.client.resource import Resource
from ucloud.client.wait import GONE

View = Mapping[str, Any]


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


def render_nets(nets: Sequence[View]) -> str:
    return table(
        ("ID", "NAME", "OWNER", "STATUS", "IPAM", "VNI", "PREFIX"),
        ((str(n.get("id", NONE)), str(n.get("name", NONE)), str(n.get("owner", NONE)),
          str(n.get("status", NONE)), str(n.get("ipam", NONE)), str(n.get("vni") or NONE),
          str(n.get("prefix") or NONE)) for n in nets),
    )


def render_net(net: View) -> str:
    status = str(net.get("status", NONE))
    if net.get("reason"):
        status = f"{status} ({net['reason']})"
    return fields([
        ("id", str(net.get("id", NONE))),
        ("name", str(net.get("name", NONE))),
        ("owner", str(net.get("owner", NONE))),
        ("status", status),
        ("ipam", str(net.get("ipam", NONE))),
        ("vni", str(net.get("vni") or NONE)),
        ("prefix", str(net.get("prefix") or NONE)),
        ("created", when(net.get("created_at"))),
    ])


NETWORKS = Resource(
    noun="net", collection="networks", render_one=render_net, render_many=render_nets,
    timeout_s=60.0, poll_s=0.3,
)
