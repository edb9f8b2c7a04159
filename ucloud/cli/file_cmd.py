"""``ucloud file upload|list|show|delete``: your files, from which images are made.

``upload`` streams the file to the gateway (``PUT /v1/files/{name}``) without reading it
into memory; the name defaults to the file's own.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ucloud.client.args import add_client_options, emit, note, open_gateway
from ucloud.client.http import path
from ucloud.client.output import NONE, Layout, column, when
from ucloud.errors import InputError
from ucloud.images.validate import check_file_name

CHUNK = 1 << 20


def register(sub: Any) -> None:
    parser = sub.add_parser("file", help="upload and manage your files (images are made of them)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    upload = verbs.add_parser("upload", help="upload a file (replaces one of the same name)")
    upload.add_argument("file", type=Path, help="the file to upload")
    upload.add_argument("--name", help="its name among your files (default: the file's name)")
    add_client_options(upload)
    upload.set_defaults(func=_upload)
    listing = verbs.add_parser("list", help="list your files")
    add_client_options(listing)
    listing.set_defaults(func=_list)
    show = verbs.add_parser("show", help="show one file")
    show.add_argument("name", help="file name or id")
    add_client_options(show)
    show.set_defaults(func=_show)
    delete = verbs.add_parser("delete", help="delete a file")
    delete.add_argument("name", help="file name")
    add_client_options(delete)
    delete.set_defaults(func=_delete)


def _upload(args: argparse.Namespace) -> int:
    source: Path = args.file
    name = args.name or source.name
    check_file_name(name, "--name" if args.name else "file")
    if not source.is_file():
        raise InputError("file", f"{source} is not a file")
    size = source.stat().st_size
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    with source.open("rb") as handle, open_gateway(args) as gateway:
        view = gateway.request(
            "PUT", path("v1", "files", name), content=_chunks(handle), headers=headers
        )
    emit(args, view, FILE)
    return 0


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def _list(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get("/v1/files"), FILE)
    return 0


def _show(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get(path("v1", "files", args.name)), FILE)
    return 0


def _delete(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        gateway.delete(path("v1", "files", args.name))
    note(args, f"deleted file {args.name}")
    return 0


def human_bytes(value: Any) -> str:
    """``512``, ``1.5K``, ``20M``, ``2.1G`` (binary units, one decimal)."""
    if not isinstance(value, int) or value < 0:
        return NONE
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= factor:
            return f"{value / factor:.1f}".removesuffix(".0") + unit
    return str(value)


FILE = Layout(
    (
        column("id"), column("name"), column("owner"), column("size", fmt=human_bytes),
        column("sha256"), column("uploaded", "uploaded_at", when),
    ),
    listed=("name", "owner", "size", "sha256", "uploaded"),
)
