"""``ucloud quota show [USER]`` and ``ucloud quota set USER --vms N ...`` (set: realm admin).

Limits of 0 are unlimited; ``set`` changes only the limits it is given, and -1 puts one
back to the configured default. IPv4 addresses and DNS names are shown, not enforced yet.
"""

from __future__ import annotations

import argparse
from typing import Any

from ucloud.client.args import add_client_options, emit, open_gateway

LIMITS = ("vms", "cores", "ram_mib", "ssd_mib", "hdd_mib", "networks", "ipv4", "dns_names")


def register(sub: Any) -> None:
    parser = sub.add_parser("quota", help="per-user limits and use")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    show = verbs.add_parser("show", help="limits and use: yours, a user's (admin: everyone's)")
    show.add_argument("user", nargs="?", help="user name (default: yours; admin: all)")
    add_client_options(show)
    show.set_defaults(func=_show)
    change = verbs.add_parser("set", help="override a user's limits (admin)")
    change.add_argument("user", help="user name")
    for name in LIMITS:
        change.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, metavar="N",
                            help=f"{name} (0: unlimited, -1: the default)")
    add_client_options(change)
    change.set_defaults(func=_set)


def _show(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        found = gateway.get(f"/v1/quotas/{args.user}" if args.user else "/v1/quotas")
    emit(args, found, render_quotas)
    return 0


def _set(args: argparse.Namespace) -> int:
    body = {name: getattr(args, name) for name in LIMITS if getattr(args, name) is not None}
    with open_gateway(args) as gateway:
        emit(args, gateway.request("PUT", f"/v1/quotas/{args.user}", body), render_quotas)
    return 0


def render_quotas(found: Any) -> str:
    """One table per user: each limit, its use, and whether it is enforced."""
    blocks = []
    for quota in found if isinstance(found, list) else [found]:
        limits, used = quota.get("limits", {}), quota.get("used", {})
        enforced = set(quota.get("enforced", []))
        lines = [f"user {quota.get('user')}", f"  {'LIMIT':10} {'USED':>10} {'OF':>10}"]
        for name in LIMITS:
            cap = limits.get(name, 0)
            note = "" if name in enforced else "  (not enforced yet)"
            lines.append(f"  {name:10} {used.get(name, 0):>10} {cap or 'unlimited':>10}{note}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
