"""``ucloud login`` and ``ucloud logout``: get a bearer token for a TOTP code, or forget it.

``--secret-file`` holds the base32 TOTP secret (or the otpauth:// URI ``ucloud user add``
printed); the current code is computed from it. The token is stored with the gateway URL,
as the login of the current remote (or ``--remote``'s), readable by its owner only, and
never printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pyotp

from ucloud.client.args import (
    add_client_options,
    add_remote_option,
    all_in_one_of,
    open_gateway,
    target,
)
from ucloud.client.credentials import Credentials, remove_credentials, save_credentials
from ucloud.client.output import as_json
from ucloud.errors import ApiError


def register(sub: Any) -> None:
    login = sub.add_parser("login", help="log in to the gateway with a TOTP code")
    login.add_argument("--name", required=True, help="user name")
    login.add_argument("--realm", required=True, help="the user's realm")
    code = login.add_mutually_exclusive_group(required=True)
    code.add_argument("--otp", help="the current 6-digit TOTP code")
    code.add_argument(
        "--secret-file",
        type=totp_from_file,
        dest="otp_from_file",
        metavar="FILE",
        help="compute the code from the base32 TOTP secret (or otpauth:// URI) in FILE",
    )
    add_client_options(login)
    login.set_defaults(func=_login)
    logout = sub.add_parser("logout", help="forget the stored login (of the current remote)")
    add_remote_option(logout)
    logout.set_defaults(func=_logout)


def totp_from_file(name: str) -> str:
    """The current TOTP code from a secret file (argparse type: problems exit 2)."""
    try:
        text = Path(name).read_text().strip()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {name}: {exc.strerror}") from exc
    try:
        otp = pyotp.parse_uri(text) if text.startswith("otpauth://") else pyotp.TOTP(text)
        if not isinstance(otp, pyotp.TOTP):
            raise ValueError("not a TOTP")
        code: str = otp.now()
    except Exception as exc:  # pyotp raises binascii/ValueError variants on a bad secret
        raise argparse.ArgumentTypeError(f"{name} holds no valid base32 TOTP secret") from exc
    return code


def _login(args: argparse.Namespace) -> int:
    otp = args.otp if args.otp is not None else args.otp_from_file
    body = {"name": args.name, "realm": args.realm, "otp": otp}
    where = target(args)
    with open_gateway(args, authenticated=False) as gateway:
        answer = gateway.post("/v1/auth/token", body)
        url = gateway.url
    token = answer.get("token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        raise ApiError(200, "token", "the gateway answered without a token")
    expires_at = str(answer.get("expires_at") or "")
    data_dir = all_in_one_of(args, url)
    credentials = Credentials(
        url=url, token=token, name=args.name, realm=args.realm, expires_at=expires_at,
        data_dir=str(data_dir) if data_dir is not None else "",
    )
    path = save_credentials(where.directory, credentials, where.remote)
    if args.output == "json":
        shown = {"name": args.name, "realm": args.realm, "url": url, "expires_at": expires_at}
        print(as_json(shown))
    else:
        until = f" until {expires_at}" if expires_at else ""
        who = f"{args.name} (realm {args.realm})"
        print(f"logged in as {who} at {url}{until}; token kept in {path}")
    return 0


def _logout(args: argparse.Namespace) -> int:
    where = target(args)
    if remove_credentials(where.directory, where.remote):
        print(f"logged out of {where.remote}: removed its login in {where.directory}")
    else:
        print(f"not logged in to {where.remote} (no login in {where.directory})")
    return 0
