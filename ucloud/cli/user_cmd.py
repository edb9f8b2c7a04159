"""``ucloud user add|list|show|disable|enable|delete`` (realm admin) and ``rotate-totp``.

Realm admins create users and hand out their TOTP secrets, disable and enable them, and
delete them (``--cascade``: with everything they own). Any user replaces her own TOTP
secret with ``rotate-totp`` (giving her current code).
"""

from __future__ import annotations

import argparse
import getpass
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
    show = verbs.add_parser("show", help="a user and what it owns")
    show.add_argument("name", help="user name")
    add_client_options(show)
    show.set_defaults(func=_show)
    for verb, text in (("disable", "refuse the user's tokens and logins (its VMs keep running)"),
                       ("enable", "let a disabled user in again")):
        switch = verbs.add_parser(verb, help=text)
        switch.add_argument("name", help="user name")
        add_client_options(switch)
        switch.set_defaults(func=_switch, action=verb)
    delete = verbs.add_parser("delete", help="delete a user (refused while it owns anything)")
    delete.add_argument("name", help="user name")
    delete.add_argument("--cascade", action="store_true",
                        help="first delete its VMs, networks, images and files, and wait")
    add_client_options(delete)
    delete.set_defaults(func=_delete)
    rotate = verbs.add_parser("rotate-totp", help="replace your own TOTP secret")
    rotate.add_argument("--otp", help="your current one-time password (default: asked)")
    add_client_options(rotate)
    rotate.set_defaults(func=_rotate)


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


def _show(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        emit(args, gateway.get(f"/v1/users/{args.name}"), _render_shown)
    return 0


def _render_shown(shown: dict[str, Any]) -> str:
    user, owns = shown.get("user", {}), shown.get("owns", {})
    lines = [
        f"user {user.get('name')} in realm {user.get('realm')}"
        + (" (disabled)" if user.get("disabled") else ""),
    ]
    for kind in ("vms", "networks", "images", "files", "keys"):
        names = owns.get(kind, [])
        lines.append(f"{kind + ':':10} {', '.join(names) if names else '-'}")
    return "\n".join(lines)


def _switch(args: argparse.Namespace) -> int:
    with open_gateway(args) as gateway:
        user = gateway.post(f"/v1/users/{args.name}/{args.action}")
    emit(args, user, lambda u: f"user {u.get('name')} {args.action}d")
    return 0


def _delete(args: argparse.Namespace) -> int:
    path = f"/v1/users/{args.name}" + ("?cascade=true" if args.cascade else "")
    with open_gateway(args) as gateway:
        gateway.delete(path)
    emit(args, {"name": args.name, "deleted": True}, lambda u: f"user {u['name']} deleted")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    otp = args.otp or getpass.getpass("current one-time password: ").strip()
    with open_gateway(args) as gateway:
        user = gateway.post("/v1/me/totp", {"otp": otp})
    emit(args, user, _render_rotated)
    return 0


def _render_rotated(user: dict[str, Any]) -> str:
    uri = str(user.get("otpauth_uri", ""))
    return "\n".join([
        f"new TOTP secret of {user.get('name')} in realm {user.get('realm')}",
        f"otpauth URI: {uri}",
        f"TOTP secret: {totp_secret(uri)}",
        "The old secret no longer works. This is shown once: put it in your authenticator",
        "(or the file for `ucloud login --secret-file`) now.",
    ])
