"""``ucloud replay audit|billing|rebuild``: read the log from the start.

Each verb lives in its own module exposing ``register(verbs)``.
"""

from __future__ import annotations

import importlib
from typing import Any

_VERBS: tuple[str, ...] = (
    "ucloud.cli.replay_rebuild",
    "ucloud.cli.replay_audit",
    "ucloud.cli.replay_billing",
    "ucloud.cli.replay_state",
)


def register(sub: Any) -> None:
    parser = sub.add_parser("replay", help="read the event log from the start")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in _VERBS:
        importlib.import_module(name).register(verbs)
