"""``ucloud schemas write|check``: the JSON Schemas of the events, kept in ``schemas/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ucloud.events.codec import schema_drift, write_schemas

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "schemas"


def register(sub: Any) -> None:
    parser = sub.add_parser("schemas", help="write or check the events' JSON Schemas")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    write = verbs.add_parser("write", help="write schemas/ from the event Structs")
    write.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    write.set_defaults(func=_write)
    check = verbs.add_parser("check", help="exit 1 when schemas/ differs from the code")
    check.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    check.set_defaults(func=_check)


def _write(args: argparse.Namespace) -> int:
    written = write_schemas(args.dir)
    print(f"wrote {len(written)} schemas to {args.dir}")
    return 0


def _check(args: argparse.Namespace) -> int:
    drift = schema_drift(args.dir)
    if drift:
        print(f"schemas out of date in {args.dir}: {', '.join(drift)}", file=sys.stderr)
        print("run: ucloud schemas write", file=sys.stderr)
        return 1
    print(f"schemas up to date ({args.dir})")
    return 0
