"""``ucloud image ...``: the built-in guest images (``build``); client verbs join this group.

``ucloud image build tiny|debian`` assembles the image from Debian's packages on this
machine (root, minutes for ``debian``) into ``<data_dir>/images/builtin`` unless
``--cache-dir`` says otherwise, and prints the path of the qcow2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from ucloud import config as config_mod
from ucloud.cli import image_client
from ucloud.client import locate as common
from ucloud.imagebuild import NAMES, build
from ucloud.imagebuild.groups import stop_with_parent


def register(sub: Any) -> None:
    parser = sub.add_parser("image", help="guest images")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    image_client.register_verbs(verbs)  # create, list, show, delete (over the gateway)
    b = verbs.add_parser(
        "build",
        help="build a built-in image (tiny, debian) from Debian's packages",
        description="Build a built-in image from Debian's packages; reuse the cached one "
        "unless its recipe changed.",
    )
    b.add_argument("name", choices=NAMES, help="which image")
    b.add_argument(
        "--cache-dir", type=Path, help="where images are kept (default <data-dir>/images/builtin)"
    )
    b.add_argument("--data-dir", type=Path, help="data directory (default: the config's)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    # A service running the build passes its pid: the build stops when that process dies.
    b.add_argument("--stop-with-parent", type=int, metavar="PID", help=argparse.SUPPRESS)
    b.set_defaults(func=_build)


def cache_dir(args: argparse.Namespace) -> Path:
    """``--cache-dir``, else ``<data dir>/images/builtin``: --data-dir, config, default."""
    if args.cache_dir is not None:
        return Path(args.cache_dir)
    if args.data_dir is not None:
        return Path(args.data_dir) / config_mod.BUILTIN_IMAGES
    config_path = Path(args.config) if getattr(args, "config", None) else None
    no_file = not os.environ.get("UCLOUD_CONFIG") and not config_mod.DEFAULT_PATH.exists()
    if config_path is None and no_file:
        return common.default_data_dir() / config_mod.BUILTIN_IMAGES
    return config_mod.load(config_path).paths.builtin_images


def _build(args: argparse.Namespace) -> int:
    # A service stopping the build sends SIGTERM: unwind, so that the command running is
    # stopped with its whole process group and the scratch tree is removed (groups.py).
    signal.signal(signal.SIGTERM, _terminated)
    if args.stop_with_parent is not None:
        stop_with_parent(args.stop_with_parent)
    path = build(args.name, cache_dir(args), force=args.force, progress=_progress)
    print(path)
    return 0


def _terminated(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM must not cut the cleanup short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
