"""What the client commands share: ``--url``, ``--remote``, ``--data-dir``, ``-o``/``-c``,
opening the gateway, printing answers and progress.

Only the command layer reads the environment; it hands a mapping to the pure resolution
in ``credentials``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ucloud.client.credentials import (
    Credentials,
    config_dir,
    load_credentials,
    resolve_token,
    resolve_url,
)
from ucloud.client.http import GatewayClient, quiet_http_logging
from ucloud.client.locate import add_server_options, default_data_dir
from ucloud.client.output import FORMATS, Layout, Renderer, render
from ucloud.client.remotes import chosen, load_remotes
from ucloud.client.sizes import parse_size, wire_size
from ucloud.client.upfile import UP_FILE, read_up

QUICK_TIMEOUT_S = 2.0


def add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="gateway URL (default: UCLOUD_URL, then the remote's)")
    add_remote_option(parser)
    add_server_options(parser)
    add_output_options(parser)


def add_remote_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--remote", metavar="NAME",
        help="the remote to talk to, with its login (default: the current one; "
        "it wins over UCLOUD_URL and UCLOUD_TOKEN)",
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=FORMATS, default="table",
        help="table for people (default); json, yaml, csv or bare values for scripts",
    )
    parser.add_argument(
        "-c", "--column", action="append", default=[], dest="columns", metavar="COLUMN",
        help="show only this column (repeatable; in this order)",
    )


def size_arg(text: str) -> str:
    """argparse type of a size: a typo is a usage error (exit 2) before anything is sent."""
    try:
        return wire_size(parse_size(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def environment() -> Mapping[str, str]:
    return os.environ


@dataclass(frozen=True)
class Target:
    """The gateway a command talks to: its URL, the remote it is, and that remote's login."""

    url: str
    remote: str
    stored: Credentials | None
    directory: Path
    env: Mapping[str, str]


def target(args: argparse.Namespace) -> Target:
    """Resolve ``--url``, ``--remote`` and the environment (see ``credentials``)."""
    env = environment()
    flag = getattr(args, "remote", None)
    if flag:  # an explicit remote: its own URL and login, not the CI variables'
        env = {k: v for k, v in env.items() if k not in ("UCLOUD_URL", "UCLOUD_TOKEN")}
    directory = config_dir(env)
    remotes = load_remotes(directory)
    name = chosen(remotes, flag, env)
    stored = load_credentials(directory, name)
    remote = remotes.remotes.get(name)
    data_dir = getattr(args, "data_dir", None) or _running_all_in_one()
    url = resolve_url(
        getattr(args, "url", None), env, stored, data_dir, remote.url if remote else ""
    )
    return Target(url, name, stored, directory, env)


def open_gateway(
    args: argparse.Namespace, *, authenticated: bool = True, quick: bool = False
) -> GatewayClient:
    """A client of the gateway the arguments and the environment point at, logged in;
    ``quick``: a short timeout and no retries (shell completion must not hang)."""
    if not getattr(args, "verbose", False):
        quiet_http_logging()
    where = target(args)
    token = None
    if authenticated:
        token = resolve_token(where.env, where.stored, where.url, where.remote)
    if quick:
        return GatewayClient(where.url, token, timeout=QUICK_TIMEOUT_S, retry_delays=())
    return GatewayClient(where.url, token)


def all_in_one_of(args: argparse.Namespace, url: str) -> Path | None:
    """The data directory of the running all-in-one whose gateway is ``url``, if any."""
    data_dir = args.data_dir or _running_all_in_one()
    if data_dir is None or not (data_dir / UP_FILE).exists():
        return None
    gateway = read_up(data_dir).gateway.rstrip("/")
    return data_dir.absolute() if gateway == url else None


def _running_all_in_one() -> Path | None:
    """The default data directory when a ``ucloud up`` runs there (it has an up.json)."""
    running = default_data_dir()
    return running if (running / UP_FILE).exists() else None


def emit(args: argparse.Namespace, data: Any, shape: Layout | Renderer) -> None:
    """Print an answer in the ``-o`` format, a table fitted to the terminal's width."""
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print(render(data, args.output, shape, getattr(args, "columns", ()), width))


def note(args: argparse.Namespace, text: str) -> None:
    """A message for people: stdout with tables, stderr otherwise (stdout stays parseable)."""
    print(text, file=sys.stdout if args.output == "table" else sys.stderr, flush=True)


def progress_printer(args: argparse.Namespace) -> Callable[[str], None]:
    """Where ``--wait`` prints its progress lines: like ``note`` when stdout is a terminal;
    nowhere when it is not (a script gets the result only)."""
    if not sys.stdout.isatty():
        return lambda line: None
    return lambda line: note(args, line)
