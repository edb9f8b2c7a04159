"""``ucloud vm create|list|show|start|stop|delete|migrate|events|console-log|console|vnc|dns|ptr``.

The lifecycle verbs answer as soon as the gateway accepted the request (202); ``--wait``
follows the VM until it gets there (see ``ucloud.client.wait``), printing each status change.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, get_args

from ucloud.cli import vm_dns_cmd
from ucloud.cli.order_cmd import agreed_price
from ucloud.client.args import (
    add_client_options,
    emit,
    note,
    open_gateway,
    progress_printer,
    size_arg,
)
from ucloud.client.console import ESCAPE_HELP, attach_serial, vnc_url
from ucloud.client.http import GatewayClient, path
from ucloud.client.layouts import EVENTS, VMS
from ucloud.client.wait import GONE, Target, View, follow
from ucloud.errors import ApiError
from ucloud.projections.views import VmStatus

POLL_INTERVAL_S = 0.3
DEFAULT_TIMEOUT_S = 300.0
USER_DATA_READ_LIMIT = 1 << 20  # the gateway's own limit is smaller; this only bounds the read


def register(sub: Any) -> None:
    parser = sub.add_parser("vm", help="create and manage virtual machines")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    create = verbs.add_parser("create", help="create a VM")
    create.add_argument("name", help="VM name (unique among your VMs)")
    create.add_argument("--image", required=True, help="image id or name")
    create.add_argument("--cpu", required=True, type=_positive, help="virtual CPUs")
    create.add_argument("--ram", required=True, type=size_arg, help="RAM: GiB, or 512M, 2G")
    create.add_argument("--ssd", required=True, type=size_arg, help="SSD disk: GiB, or 20G, 1T")
    create.add_argument("--hdd", type=size_arg, help="HDD disk: GiB, or 100G, 2T")
    create.add_argument(
        "--net", action="append", default=[], metavar="NAME", help="network (repeatable)"
    )
    create.add_argument(
        "--key",
        action="append",
        default=None,
        metavar="NAME",
        help="SSH key id or name (repeatable; default: all your keys)",
    )
    create.add_argument("--restart", choices=("always", "never"), help="restart policy")
    create.add_argument(
        "--user-data",
        type=_user_data,
        metavar="FILE",
        help="cloud-init user data for the VM (UTF-8 text; served by the metadata service)",
    )
    create.add_argument(
        "--order", action="store_true",
        help="place the VM through an order: billed at today's price, not a later one",
    )
    _add_wait_options(create, "running")
    create.set_defaults(func=_create)

    listing = verbs.add_parser("list", help="list your VMs (an admin sees all)")
    add_client_options(listing)
    listing.set_defaults(func=_list)

    show = verbs.add_parser("show", help="show one VM")
    show.add_argument("id", help="VM id or name")
    add_client_options(show)
    show.set_defaults(func=_show)

    for verb, target, summary in (
        ("start", "running", "start a stopped VM"),
        ("stop", "stopped", "stop a VM"),
        ("delete", GONE, "delete a VM and its disks"),
    ):
        action = verbs.add_parser(verb, help=summary)
        action.add_argument("id", help="VM id or name")
        _add_wait_options(action, target)
        action.set_defaults(func=functools.partial(_lifecycle, verb))

    migrate = verbs.add_parser("migrate", help="move a VM to another host")
    migrate.add_argument("id", help="VM id or name")
    migrate.add_argument("--host", help="the host to move to (default: the scheduler picks)")
    _add_wait_options(migrate, "running")
    migrate.set_defaults(func=_migrate)

    events = verbs.add_parser("events", help="the VM's audit trail")
    events.add_argument("id", help="VM id or name")
    add_client_options(events)
    events.set_defaults(func=_events)

    console = verbs.add_parser("console-log", help="print the VM's serial console log")
    console.add_argument("id", help="VM id or name")
    console.add_argument(
        "-f", "--follow", action="store_true", help="keep printing what follows (Ctrl-C stops)"
    )
    add_client_options(console)
    console.set_defaults(func=_console_log)
    vm_dns_cmd.register(verbs)

    attach = verbs.add_parser(
        "console", help=f"attach this terminal to the VM's serial console ({ESCAPE_HELP} detaches)"
    )
    attach.add_argument("id", help="VM id or name")
    add_client_options(attach)
    attach.set_defaults(func=_console)

    vnc = verbs.add_parser(
        "vnc", help="print a URL of the VM's graphical console (single use, for 60 s)"
    )
    vnc.add_argument("id", help="VM id or name")
    vnc.add_argument(
        "--websocket", action="store_true",
        help="print the VNC WebSocket's URL (RFB in binary frames) instead of the dashboard's page",
    )
    add_client_options(vnc)
    vnc.set_defaults(func=_vnc)


def _add_wait_options(parser: argparse.ArgumentParser, target: str) -> None:
    wanted = "gone" if target == GONE else target
    parser.add_argument("--wait", action="store_true", help=f"wait until the VM is {wanted}")
    parser.add_argument(
        "--until",
        choices=get_args(VmStatus),
        metavar="STATUS",
        help=f"wait until the VM reaches STATUS instead of {wanted} (implies --wait)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_S,
        help=f"give up waiting after this many seconds (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.set_defaults(target=target)
    add_client_options(parser)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _user_data(path: str) -> str:
    """The text of FILE; the gateway checks its size (``metadata.max_user_data_bytes``)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(USER_DATA_READ_LIMIT + 1)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > USER_DATA_READ_LIMIT:
        raise argparse.ArgumentTypeError(f"{path} is larger than {USER_DATA_READ_LIMIT} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{path} is not UTF-8 text: {exc}") from exc


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "name": args.name,
        "image": args.image,
        "cpu": args.cpu,
        "ram": args.ram,
        "ssd": args.ssd,
    }
    if args.hdd is not None:
        body["hdd"] = args.hdd
    if args.net:
        body["networks"] = args.net
    if args.key is not None:
        body["keys"] = args.key
    if args.restart is not None:
        body["restart"] = args.restart
    if args.user_data is not None:
        body["user_data"] = args.user_data
    if args.order:
        body["order"] = True
    with open_gateway(args) as gateway:
        vm = gateway.post("/v1/vms", body)
        if args.order:
            note(args, agreed_price(gateway.get(path("v1", "orders", str(vm["order"])))))
        return _finish(args, gateway, vm, Target(args.until or args.target))


def _lifecycle(verb: str, args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        if verb == "delete":
            vm = gateway.delete(path("v1", "vms", args.id))
        else:
            vm = gateway.post(path("v1", "vms", args.id, verb))
        return _finish(args, gateway, vm, Target(args.until or args.target))


def _migrate(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        before = gateway.get(path("v1", "vms", args.id))
        body = {"host": args.host} if args.host else {}
        since = _last_seq(gateway, str(before["id"])) if args.wait or args.until else 0
        vm = gateway.post(path("v1", "vms", args.id, "migrate"), body)
        target = Target(args.until or args.target, away_from=str(before.get("host") or ""))
        steps = functools.partial(_new_events, gateway, str(before["id"]), [since])
        return _finish(args, gateway, vm, target, steps)


def _last_seq(gateway: GatewayClient, vm_id: str) -> int:
    lines = gateway.get(path("v1", "vms", vm_id, "events"))
    return max((int(line.get("seq") or 0) for line in lines), default=0)


def _new_events(gateway: GatewayClient, vm_id: str, since: list[int]) -> list[str]:
    """The summaries of the VM's events after ``since[0]`` (advanced): a migration's steps
    (``migration_ready host=h2 ...``) between its statuses."""
    lines = [
        line for line in gateway.get(path("v1", "vms", vm_id, "events"))
        if int(line.get("seq") or 0) > since[0]
    ]
    if lines:
        since[0] = max(int(line["seq"]) for line in lines)
    return [str(line.get("summary") or line.get("type")) for line in lines]


def _finish(
    args: argparse.Namespace, gateway: GatewayClient, vm: View, target: Target,
    steps: Callable[[], list[str]] | None = None,
) -> int:
    """Print the accepted VM, or wait for it to reach ``target`` and print where it got."""
    if not (args.wait or args.until):
        emit(args, vm, VMS)
        return 0
    vm_id = str(vm["id"])
    final = follow(
        functools.partial(_fetch, gateway, vm_id),
        target,
        name=str(vm.get("name") or vm_id),
        first=vm,
        timeout=args.timeout,
        interval=POLL_INTERVAL_S,
        report=progress_printer(args),
        steps=steps if sys.stdout.isatty() else None,
    )
    if final is not None:
        emit(args, final, VMS)
    elif args.output == "json":
        emit(args, {"id": vm_id, "status": GONE}, VMS)
    return 0


def _fetch(gateway: GatewayClient, vm_id: str) -> Mapping[str, Any] | None:
    try:
        view: Mapping[str, Any] = gateway.get(path("v1", "vms", vm_id))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return view


def _list(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get("/v1/vms"), VMS)
    return 0


def _show(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get(path("v1", "vms", args.id)), VMS)
    return 0


def _events(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get(path("v1", "vms", args.id, "events")), EVENTS)
    return 0


def _console_log(args: argparse.Namespace) -> int:
    """The console log from its start; with ``--follow``, then what the VM writes next."""
    offset = 0
    with open_gateway(args) as gateway:
        while True:
            chunk = gateway.get(f"{path('v1', 'vms', args.id, 'console')}?offset={offset}")
            sys.stdout.write(chunk["data"])
            sys.stdout.flush()
            offset = int(chunk["next"])
            if offset < int(chunk["size"]):
                continue
            if not args.follow:
                return 0
            time.sleep(POLL_INTERVAL_S)


def _console(args: argparse.Namespace) -> int:
    """The serial console in this terminal, raw, until Ctrl-a q."""
    with open_gateway(args) as gateway:
        return attach_serial(gateway, args.id)


def _vnc(args: argparse.Namespace) -> int:
    """A URL holding a fresh single-use ticket to the VM's graphical console."""
    with open_gateway(args) as gateway:
        page, websocket, granted = vnc_url(gateway, args.id)
    if args.output == "json":
        print(json.dumps({**granted, "url": page, "websocket": websocket}))
    else:
        print(websocket if args.websocket else page)
    return 0
