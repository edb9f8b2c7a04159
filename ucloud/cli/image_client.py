"""``ucloud image create|list|show|delete``: images made from your files, over the gateway.

``create --file F --name N`` asks for an image of one of your uploaded files; imagescan
validates and converts it. ``--wait`` follows the image until it is ``created`` (or says
why it ``failed``); ``delete --wait`` until it is gone. The verbs join the ``image`` group
through ``register_verbs``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from ucloud.cli.file_cmd import human_bytes
from ucloud.client.output import NONE, fields, table, when
from ucloud.client.resource import Resource
from ucloud.client.wait import GONE

View = Mapping[str, Any]


def register_verbs(verbs: Any) -> None:
    create = verbs.add_parser("create", help="make an image from one of your files")
    create.add_argument("--file", required=True, help="your file (name or id), e.g. my.qcow2")
    create.add_argument("--name", required=True, help="the image's name")
    create.add_argument("--public", action="store_true", help="visible to all (admin only)")
    create.add_argument("--store", choices=("fs", "rbd"), default="fs",
                        help="where the image is kept (default fs)")
    IMAGES.add_wait_options(create, "created")
    create.set_defaults(func=_create)
    IMAGES.add_reads(verbs, listing_help="list public images and yours")
    delete = verbs.add_parser("delete", help="delete an image (refused while VMs use it)")
    delete.add_argument("id", help="image id or name")
    IMAGES.add_wait_options(delete, GONE)
    delete.set_defaults(func=IMAGES.delete)


def _create(args: argparse.Namespace) -> int:
    body = {"file": args.file, "name": args.name, "store": args.store, "public": args.public}
    return IMAGES.create(args, body)


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


IMAGES = Resource(
    noun="image", collection="images", render_one=render_image, render_many=render_images,
    timeout_s=1800.0, poll_s=0.5,
)
