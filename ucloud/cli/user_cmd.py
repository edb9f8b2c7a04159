"""``ucloud user add|list``: realm admins create users and hand out their TOTP secrets."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import parse_qs, urlparse

from ucloud.client.args import add_client_options, emit, open_gateway
from ucloud.client.layouts import USERS

DEFAULT_REALM = "users"


def register(sub: Any) -> None:
    parser = sub.add_parser("user", help="manage users (realm admin)")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="create a user and show its TOTP secret, once")
    add.add_argument("name", help="user name")
    add.add_argument("--realm", default=DEFAULT_REALM, help=f"realm (default {DEFAULT_REALM})")
    add_client_options(add)
    add.set_defaults(func=_add)
    listing = verbs.add_parser("list", help="list the users")
    add_client_options(listing)
    listing.set_defaults(func=_list)


def totp_secret(otpauth_uri: str) -> str:
    """The base32 secret inside an ``otpauth://totp/...?secret=...`` URI ("" if none)."""
    values = parse_qs(urlparse(otpauth_uri).query).get("secret", [])
    return values[0] if values else ""


def _add(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        user = gateway.post("/v1/users", {"name": args.name, "realm": args.realm})
    emit(args, user, _render_new_user)
    return 0


def _render_new_user(user: dict[str, Any]) -> str:
    uri = str(user.get("otpauth_uri", ""))
    return "\n".join([
        f"created user {user.get('name')} in realm {user.get('realm')}",
        f"otpauth URI: {uri}",
        f"TOTP secret: {totp_secret(uri)}",
        "This is shown once: hand it to the user now (a file for `ucloud login --secret-file`,",
        "or the URI as a QR code for an authenticator app).",
    ])


def _list(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get("/v1/users"), USERS)
    return 0
