"""``ucloud key add|list|delete``: the SSH public keys installed into one's VMs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ucloud.client.args import add_client_options, emit, note, open_gateway
from ucloud.client.http import path
from ucloud.client.layouts import KEYS


def register(sub: Any) -> None:
    parser = sub.add_parser("key", help="manage your SSH public keys")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="add an SSH public key")
    add.add_argument("name", help="a name for the key")
    add.add_argument("file", type=public_key, metavar="FILE|-", help="public key file, - for stdin")
    add_client_options(add)
    add.set_defaults(func=_add)
    listing = verbs.add_parser("list", help="list your keys")
    add_client_options(listing)
    listing.set_defaults(func=_list)
    delete = verbs.add_parser("delete", help="delete a key")
    delete.add_argument("id", help="key id")
    add_client_options(delete)
    delete.set_defaults(func=_delete)


def public_key(name: str) -> str:
    """The one-line public key in a file or on stdin (argparse type: problems exit 2)."""
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {name}: {exc}") from exc
    if "PRIVATE KEY" in text:
        raise argparse.ArgumentTypeError(f"{name} is a private key: give the .pub file")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise argparse.ArgumentTypeError(f"{name} must hold exactly one public key line")
    return lines[0]


def _add(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        key = gateway.post("/v1/keys", {"name": args.name, "public_key": args.file})
    emit(args, key, KEYS)
    return 0


def _list(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get("/v1/keys"), KEYS)
    return 0


def _delete(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        gateway.delete(path("v1", "keys", args.id))
    note(args, f"deleted key {args.id}")
    return 0
