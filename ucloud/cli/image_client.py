"""``ucloud image create|list|show|delete``: images made from your files, over the gateway.

``create --file F --name N`` asks for an image of one of your uploaded files; imagescan
validates and converts it. ``--wait`` follows the image until it is ``created`` (or says
why it ``failed``); ``delete --wait`` until it is gone. The verbs join the ``image`` group
through ``register_verbs``.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ucloud.cli.file_cmd import human_bytes
from ucloud.client.args import add_client_options, emit, note, open_gateway
from ucloud.client.http import GatewayClient, path
from ucloud.client.output import NONE, fields, table, when
from ucloud.errors import ApiError, WaitFailed

POLL_INTERVAL_S = 0.5
DEFAULT_TIMEOUT_S = 1800.0
GONE = "gone"

View = Mapping[str, Any]


def register_verbs(verbs: Any) -> None:
    create = verbs.add_parser("create", help="make an image from one of your files")
    create.add_argument("--file", required=True, help="your file (name or id), e.g. my.qcow2")
    create.add_argument("--name", required=True, help="the image's name")
    create.add_argument("--public", action="store_true", help="visible to all (admin only)")
    create.add_argument("--store", choices=("fs", "rbd"), default="fs",
                        help="where the image is kept (default fs)")
    _wait_options(create, "created")
    create.set_defaults(func=_create)
    listing = verbs.add_parser("list", help="list public images and yours")
    add_client_options(listing)
    listing.set_defaults(func=_list)
    show = verbs.add_parser("show", help="show one image")
    show.add_argument("id", help="image id or name")
    add_client_options(show)
    show.set_defaults(func=_show)
    delete = verbs.add_parser("delete", help="delete an image (refused while VMs use it)")
    delete.add_argument("id", help="image id or name")
    _wait_options(delete, GONE)
    delete.set_defaults(func=_delete)


def _wait_options(parser: argparse.ArgumentParser, target: str) -> None:
    parser.add_argument("--wait", action="store_true", help=f"wait until the image is {target}")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"give up waiting after this many seconds "
                             f"(default {DEFAULT_TIMEOUT_S:g})")
    parser.set_defaults(target=target)
    add_client_options(parser)


def _create(args: argparse.Namespace) -> int:
    body = {"file": args.file, "name": args.name, "store": args.store, "public": args.public}
    with open_gateway(args) as gateway:
        image = gateway.post("/v1/images", body)
        return _finish(args, gateway, image)


def _delete(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        image = gateway.delete(path("v1", "images", args.id))
        return _finish(args, gateway, image)


def _list(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get("/v1/images"), render_images)
    return 0


def _show(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get(path("v1", "images", args.id)), render_image)
    return 0


def _finish(args: argparse.Namespace, gateway: GatewayClient, image: View) -> int:
    if not args.wait:
        emit(args, image, render_image)
        return 0
    ident = str(image["id"])
    final = follow(
        functools.partial(_fetch, gateway, ident), args.target, name=str(image.get("name")),
        first=image, timeout=args.timeout, report=functools.partial(note, args),
    )
    if final is not None:
        emit(args, final, render_image)
    elif args.output == "json":
        emit(args, {"id": ident, "status": GONE}, render_image)
    return 0


def _fetch(gateway: GatewayClient, ident: str) -> View | None:
    try:
        view: View = gateway.get(path("v1", "images", ident))
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
    if status == "failed":
        return f"failed: {view.get('reason') or 'no reason given'}"
    if status == "deleting" and target != GONE:
        return "is being deleted"
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
            raise WaitFailed(f"image {name} {outcome}")
        if clock() >= deadline:
            raise WaitFailed(
                f"gave up waiting for image {name} to be {target} after {timeout:g}s "
                f"(last status: {status}); see `ucloud image show {name}`"
            )
        sleep(POLL_INTERVAL_S)
        view = fetch()


def render_images(images: Sequence[View]) -> str:
    return table(
        ("ID", "NAME", "OWNER", "STATUS", "SIZE", "PUBLIC", "STORE"),
        ((str(i.get("id", NONE)), str(i.get("name", NONE)), str(i.get("owner", NONE)),
          str(i.get("status", NONE)), human_bytes(i.get("size")) if i.get("size") else NONE,
          "yes" if i.get("public") else "no", str(i.get("store", NONE))) for i in images),
    )


def render_image(image: View) -> str:
    status = str(image.get("status", NONE))
    if image.get("reason"):
        status = f"{status} ({image['reason']})"
    size = image.get("size")
    return fields([
        ("id", str(image.get("id", NONE))),
        ("name", str(image.get("name", NONE))),
        ("owner", str(image.get("owner", NONE))),
        ("status", status),
        ("public", "yes" if image.get("public") else "no"),
        ("store", str(image.get("store", NONE))),
        ("file", str(image.get("file", NONE))),
        ("size", f"{human_bytes(size)} ({size} bytes)" if size else NONE),
        ("checksum", str(image.get("checksum") or NONE)),
        ("created", when(image.get("created_at"))),
    ])
