"""``ucloud remote add|list|switch|remove``: named gateways, each with its own login.

``ucloud login --remote NAME`` (or ``login`` with NAME current) logs in to one; every client
command takes ``--remote NAME``, else talks to the current remote. ``UCLOUD_URL`` and
``UCLOUD_TOKEN`` (for CI) win over the current remote, ``--remote`` wins over them.
"""

from __future__ import annotations

import argparse
from typing import Any

from ucloud.client.args import add_output_options, emit, environment
from ucloud.client.credentials import (
    checked_url,
    config_dir,
    load_credentials,
    remove_credentials,
)
from ucloud.client.output import Layout, column
from ucloud.client.remotes import (
    DEFAULT_REMOTE,
    checked_name,
    load_remotes,
    save_remotes,
    with_remote,
    without_remote,
)
from ucloud.errors import NotFound, Refused

REMOTES = Layout((
    column("current"), column("name"), column("url"), column("login"), column("expires_at"),
))


def register(sub: Any) -> None:
    parser = sub.add_parser("remote", help="named gateways, each with its own login")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="name a gateway")
    add.add_argument("name", help="a name for the gateway (1-63 letters, digits, - or _)")
    add.add_argument("url", help="its URL, http:// or https://")
    add.add_argument("--switch", action="store_true", help="and make it the current remote")
    add.set_defaults(func=_add)
    listing = verbs.add_parser("list", help="the remotes, the current one marked *")
    add_output_options(listing)
    listing.set_defaults(func=_list)
    switch = verbs.add_parser("switch", help="make a remote the current one")
    switch.add_argument("name", help="the remote")
    switch.set_defaults(func=_switch)
    remove = verbs.add_parser("remove", help="forget a remote and its login")
    remove.add_argument("name", help="the remote")
    remove.set_defaults(func=_remove)


def _add(args: argparse.Namespace) -> int:
    directory = config_dir(environment())
    remotes = load_remotes(directory)
    name = checked_name(args.name)
    if name in remotes.remotes:
        raise Refused("remote", f"{name!r} exists (`ucloud remote remove {name}` first)")
    remotes = with_remote(remotes, name, checked_url(args.url, "url"))
    if args.switch:
        remotes = type(remotes)(current=name, remotes=remotes.remotes)
    save_remotes(directory, remotes)
    print(f"added remote {name} at {remotes.remotes[name].url}"
          + ("; it is current" if args.switch else ""))
    return 0


def _list(args: argparse.Namespace) -> int:
    directory = config_dir(environment())
    remotes = load_remotes(directory)
    names = sorted(set(remotes.remotes) | {DEFAULT_REMOTE})
    rows = []
    for name in names:
        stored = load_credentials(directory, name)
        remote = remotes.remotes.get(name)
        url = remote.url if remote else (stored.url if stored else "")
        if name == DEFAULT_REMOTE and not url and remotes.current != name:
            continue  # no default remote was ever used
        rows.append({
            "current": "*" if name == remotes.current else "",
            "name": name,
            "url": url,
            "login": f"{stored.name}@{stored.realm}" if stored and stored.token else "",
            "expires_at": stored.expires_at if stored else "",
        })
    emit(args, rows, REMOTES)
    return 0


def _switch(args: argparse.Namespace) -> int:
    directory = config_dir(environment())
    remotes = load_remotes(directory)
    if args.name != DEFAULT_REMOTE and args.name not in remotes.remotes:
        raise NotFound("remote", f"no remote named {args.name!r} (see `ucloud remote list`)")
    save_remotes(directory, type(remotes)(current=args.name, remotes=remotes.remotes))
    print(f"current remote: {args.name}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    directory = config_dir(environment())
    remotes = load_remotes(directory)
    known = args.name in remotes.remotes
    logged_out = remove_credentials(directory, checked_name(args.name))
    if not known and not logged_out:
        raise NotFound("remote", f"no remote named {args.name!r} (see `ucloud remote list`)")
    save_remotes(directory, without_remote(remotes, args.name))
    print(f"removed remote {args.name} and its login")
    return 0
