"""The ``ucloud`` console script: one argparse tree, each command group in its own module.

A command module exposes ``register(subparsers)`` and sets ``func`` on its parsers; a
``func`` returns the exit code. A ``UcloudError`` becomes a one-line message and the exit
code of its cause (``ucloud.errors.ExitCode``, listed in ``ucloud --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ucloud.errors import ExitCode, UcloudError, exit_code

# Command groups, each a module with register(subparsers).
_GROUPS = (
    "ucloud.cli.schemas_cmd",
    "ucloud.cli.replay_cmd",
    "ucloud.cli.login_cmd",
    "ucloud.cli.remote_cmd",
    "ucloud.cli.completion_cmd",
    "ucloud.cli.user_cmd",
    "ucloud.cli.quota_cmd",
    "ucloud.cli.key_cmd",
    "ucloud.cli.vm_cmd",
    "ucloud.cli.net_cmd",
    "ucloud.cli.order_cmd",
    "ucloud.cli.host_cmd",
    "ucloud.cli.up_cmd",
    "ucloud.cli.down_cmd",
    "ucloud.cli.doctor_cmd",
    "ucloud.cli.serve_cmd",
    "ucloud.cli.events_cmd",
    "ucloud.cli.image_cmd",
    "ucloud.cli.file_cmd",
)


# What each exit code means, for the epilog of ``ucloud --help`` (and the README).
EXIT_CODES_HELP = {
    ExitCode.OK: "done",
    ExitCode.FAILED: "the operation failed (e.g. the VM waited for failed)",
    ExitCode.USAGE: "wrong command line, argument or config",
    ExitCode.NOT_FOUND: "no such resource (or not yours)",
    ExitCode.CONFLICT: "refused in the current state, or changed by someone else first",
    ExitCode.AUTH: "not logged in, login refused, or not allowed",
    ExitCode.UNREACHABLE: "the gateway or the servers cannot be reached or found",
    ExitCode.TIMEOUT: "--wait gave up after --timeout",
    ExitCode.SERVER: "the gateway or a server failed",
}
# Groups with a ``list`` verb: a not-found message points at it.
_LISTED = frozenset({"vm", "net", "image", "file", "key", "user", "host", "order"})


def epilog() -> str:
    lines = [f"  {int(code)}  {text}" for code, text in EXIT_CODES_HELP.items()]
    return "exit codes:\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ucloud", description="IPv6-first VM manager", epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    if argv is None:  # the shell asking for completions: answered, then exit
        from ucloud.cli.completion_cmd import complete

        complete(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        code: int = args.func(args)
    except UcloudError as exc:
        code = exit_code(exc)
        hint = ""
        if code == ExitCode.NOT_FOUND and args.command in _LISTED:
            hint = f" (see `ucloud {args.command} list`)"
        print(f"ucloud: {exc}{hint}", file=sys.stderr)
        return int(code)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
