"""``ucloud image create|list|show|delete``: images made from your files, over the gateway.

``create --file F --name N`` asks for an image of one of your uploaded files; imagescan
validates and converts it. ``--wait`` follows the image until it is ``created`` (or says
why it ``failed``); ``delete --wait`` until it is gone. The verbs join the ``image`` group
through ``register_verbs``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ucloud.cli.file_cmd import human_bytes
from ucloud.client.output import NONE, Layout, column, when
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


def _size(value: object) -> str:
    return human_bytes(value) if value else NONE


IMAGE = Layout(
    (
        column("id"), column("name"), column("owner"), column("status"),
        column("public", fmt=lambda public: "yes" if public else "no"),
        column("store"), column("file"),
        column("size", fmt=_size),  # the value: bytes
        column("checksum"), column("reason"),
        column("created", "created_at", when),
    ),
    listed=("id", "name", "owner", "status", "size", "public", "store"),
)


IMAGES = Resource(
    noun="image", collection="images", layout=IMAGE,
    timeout_s=1800.0, poll_s=0.5,
)
