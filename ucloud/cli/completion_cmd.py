"""Shell completion: ``ucloud completion bash|zsh`` prints the script, argcomplete answers.

The script (argcomplete's, for the ``ucloud`` executable) calls ``ucloud`` back with the
command line in ``COMP_LINE``; ``main`` hands the argparse tree to argcomplete, which
completes commands and options from it. The names of your VMs, networks, images, files,
keys, hosts and orders are asked of the gateway, with the login of the current remote (or
``--remote``/``--url`` on the line), within a short timeout: no answer completes nothing.
Remote names come from ``remotes.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

import argcomplete
from argcomplete.shell_integration import shellcode

from ucloud.client.args import environment, open_gateway
from ucloud.client.credentials import config_dir
from ucloud.client.remotes import DEFAULT_REMOTE, load_remotes

SHELLS = ("bash", "zsh")
# Command group -> the gateway collection its ids and names are of.
COLLECTIONS = {
    "vm": "vms", "net": "networks", "image": "images", "file": "files", "key": "keys",
    "host": "hosts", "order": "orders",
}
# Verbs whose positional names something new, not something that exists.
_NEW = frozenset({"create", "add", "upload", "build", "import"})

Completer = Callable[..., Iterable[str]]


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "completion", help="print the shell completion script (bash or zsh)",
        description="Print the completion script; e.g. `source <(ucloud completion bash)` "
        "in ~/.bashrc, or `ucloud completion zsh > ~/.zfunc/_ucloud`.",
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell")
    parser.set_defaults(func=_print)


def _print(args: argparse.Namespace) -> int:
    print(shellcode(["ucloud"], shell=args.shell), end="")
    return 0


def complete(parser: argparse.ArgumentParser) -> None:
    """When the shell asks (``_ARGCOMPLETE`` set), print the completions and exit."""
    attach_completers(parser)
    argcomplete.autocomplete(parser, always_complete_options=False)


def attach_completers(parser: argparse.ArgumentParser) -> None:
    """Name completers on the positional ids and names of existing resources and remotes."""
    for group, group_parser in _subparsers(parser).items():
        for verb, verb_parser in _subparsers(group_parser).items():
            if verb in _NEW:
                continue
            for action in verb_parser._actions:
                if action.option_strings or action.dest not in ("id", "name"):
                    continue
                if group in COLLECTIONS:
                    action.completer = names_of(COLLECTIONS[group])  # type: ignore[attr-defined]
                elif group == "remote":
                    action.completer = remote_names  # type: ignore[attr-defined]


def names_of(collection: str) -> Completer:
    def completer(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
        try:
            with open_gateway(parsed_args, quick=True) as gateway:
                views = gateway.get(f"/v1/{collection}")
        except Exception:  # completion says nothing rather than a traceback into the shell
            return []
        names = [str(v.get("name") or v.get("id") or "") for v in views if isinstance(v, dict)]
        return sorted({n for n in names if n.startswith(prefix)})

    return completer


def remote_names(prefix: str, **_: Any) -> list[str]:
    remotes = load_remotes(config_dir(environment()))
    return sorted(n for n in {DEFAULT_REMOTE, *remotes.remotes} if n.startswith(prefix))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
