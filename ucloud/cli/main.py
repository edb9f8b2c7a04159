"""The ``ucloud`` console script: one argparse tree, each command group in its own module.

A command module exposes ``register(subparsers)`` and sets ``func`` on its parsers; a
``func`` returns the exit code. ``UcloudError`` becomes a one-line message and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ucloud.errors import UcloudError

# Command groups, each a module with register(subparsers).
_GROUPS = (
    "ucloud.cli.schemas_cmd",
    "ucloud.cli.replay_cmd",
    "ucloud.cli.login_cmd",
    "ucloud.cli.user_cmd",
    "ucloud.cli.quota_cmd",
    "ucloud.cli.key_cmd",
    "ucloud.cli.vm_cmd",
    "ucloud.cli.net_cmd",
    "ucloud.cli.order_cmd",
    "ucloud.cli.host_cmd",
    "ucloud.cli.up_cmd",
    "ucloud.cli.serve_cmd",
    "ucloud.cli.events_cmd",
    "ucloud.cli.image_cmd",
    "ucloud.cli.file_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ucloud", description="IPv6-first VM manager")
    parser.add_argument("--config", help="TOML config file (default /etc/ucloud/ucloud.toml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import importlib

    for name in _GROUPS:
        importlib.import_module(name).register(sub)
    return parser


def run_async(func: Callable[[argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    """Adapt an ``async def f(args) -> int`` command to the synchronous entry point."""

    def runner(args: argparse.Namespace) -> int:
        result: int = asyncio.run(func(args))
        return result

    return runner


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        code: int = args.func(args)
    except UcloudError as exc:
        print(f"ucloud: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
