"""``ucloud net create|list|show|delete``: your networks, over the gateway.

``create NAME --ipam none|manual|auto`` asks for a network; netalloc gives it a VNI and,
for manual and auto, a /64. ``--wait`` follows it until it is ``created`` (or says why it
``failed``); ``delete --wait`` until it is gone. Delete is refused while VMs are attached.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ucloud.client.args import add_client_options, emit, note, open_gateway
from ucloud.client.http import GatewayClient, path
from ucloud.client.output import NONE, fields, table, when
from ucloud.errors import ApiError, WaitFailed

POLL_INTERVAL_S = 0.3
DEFAULT_TIMEOUT_S = 60.0
GONE = "gone"

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
    _wait_options(create, "created")
    create.set_defaults(func=_create)
    listing = verbs.add_parser("list", help="list your networks (an admin sees all)")
    add_client_options(listing)
    listing.set_defaults(func=_list)
    show = verbs.add_parser("show", help="show one network")
    show.add_argument("id", help="network id or name")
    add_client_options(show)
    show.set_defaults(func=_show)
    delete = verbs.add_parser("delete", help="delete a network (refused while VMs use it)")
    delete.add_argument("id", help="network id or name")
    _wait_options(delete, GONE)
    delete.set_defaults(func=_delete)


def _wait_options(parser: argparse.ArgumentParser, target: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"wait until the network is {target}")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"give up waiting after this many seconds "
                             f"(default {DEFAULT_TIMEOUT_S:g})")
    parser.set_defaults(target=target)
    add_client_options(parser)


def _create(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        net = gateway.post("/v1/networks", {"name": args.name, "ipam": args.ipam})
        return _finish(args, gateway, net)


def _delete(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        net = gateway.delete(path("v1", "networks", args.id))
        return _finish(args, gateway, net)


def _list(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get("/v1/networks"), render_nets)
    return 0


def _show(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get(path("v1", "networks", args.id)), render_net)
    return 0


def _finish(args: argparse.Namespace, gateway: GatewayClient, net: View) -> int:
    if not args.wait:
        emit(args, net, render_net)
        return 0
    ident = str(net["id"])
    final = follow(
        functools.partial(_fetch, gateway, ident), args.target, name=str(net.get("name")),
        first=net, timeout=args.timeout, report=functools.partial(note, args),
    )
    if final is not None:
        emit(args, final, render_net)
    elif args.output == "json":
        emit(args, {"id": ident, "status": GONE}, render_net)
    return 0


def _fetch(gateway: GatewayClient, ident: str) -> View | None:
    try:
        view: View = gateway.get(path("v1", "networks", ident))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return view


def verdict(target: str, view: View | None) -> bool | str:
    """True: the wait is over; False: go on; a string: it failed, and why."""
    if view is None:
        return True if target == GONE else "no longer exists"
    status = str(view.get("status", ""))
    if status == target:
        return True
    if status == "failed" and target != GONE:
        return f"failed: {view.get('reason') or 'no reason given'}"
    return False


def follow(
    fetch: Callable[[], View | None], target: str, *, name: str, first: View | None,
    timeout: float, report: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
) -> View | None:
    """Poll until ``verdict`` ends the wait; the last view (None when gone)."""
    deadline = clock() + timeout
    seen = ""
    view = first
    while True:
        status = GONE if view is None else str(view.get("status", ""))
        if status != seen:
            report(f"{name}: {status}" if not seen else f"{name}: {seen} -> {status}")
            seen = status
        outcome = verdict(target, view)
        if outcome is True:
            return view
        if isinstance(outcome, str):
            raise WaitFailed(f"network {name} {outcome}")
        if clock() >= deadline:
            raise WaitFailed(
                f"gave up waiting for network {name} to be {target} after {timeout:g}s "
                f"(last status: {status}); see `ucloud net show {name}`"
            )
        sleep(POLL_INTERVAL_S)
        view = fetch()


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
