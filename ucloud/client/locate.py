"""What server-side commands share: finding the servers, the ``--data-dir`` option.

A running all-in-one (``ucloud up``) writes ``<data-dir>/up.json``::

    {"gateway": "http://[::1]:8080", "nats": "nats://127.0.0.1:4222",
     "etcd": ["127.0.0.1:2379"], "pid": 1234, "metrics": "http://[::1]:40123/metrics"}

``--data-dir DIR`` points a command at it; otherwise the config file is used, and without
one, the all-in-one running on the default data directory (``default_data_dir()``).

The commands that read the log for a user (``replay``, ``events``) look further, as the
gateway commands do (``find_servers``): then at the data directory the stored login found
its gateway through (``ucloud login --data-dir DIR``); finding none of these is one error
naming where they looked, not a connection to a default address that is not there.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import msgspec

from ucloud import config as config_mod
from ucloud.client import credentials
from ucloud.client.upfile import UP_FILE, read_up
from ucloud.config import Config
from ucloud.errors import NoServers


def add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, help="use the all-in-one running on this data directory"
    )





def find_servers(args: argparse.Namespace) -> Config:
    """``server_config``, but without a config file, ``--data-dir`` or ``UCLOUD_NATS__*``
    variables only a running all-in-one: on the default data directory or the login's."""
    if getattr(args, "data_dir", None) is not None or getattr(args, "config", None):
        return server_config(args)
    if not _no_config_file() or any(
        name.startswith(("UCLOUD_NATS__", "UCLOUD_ETCD__")) for name in os.environ
    ):
        return server_config(args)
    looked = [default_data_dir()]
    stored = credentials.load_credentials(credentials.config_dir(os.environ))
    if stored is not None and stored.data_dir and Path(stored.data_dir) not in looked:
        looked.append(Path(stored.data_dir))
    for data_dir in looked:
        if (data_dir / UP_FILE).exists():
            args.data_dir = data_dir
            return server_config(args)
    where = " nor ".join(str(d / UP_FILE) for d in looked)
    raise NoServers(f"no {where}")


def server_config(args: argparse.Namespace) -> Config:
    """The config of the servers to talk to: from ``--data-dir`` (up.json) or the file."""
    path = Path(args.config) if getattr(args, "config", None) else None
    data_dir: Path | None = getattr(args, "data_dir", None)
    if data_dir is None and path is None and _no_config_file():
        running = default_data_dir()
        data_dir = running if (running / UP_FILE).exists() else None
    if data_dir is None:
        return config_mod.load(path)
    base = config_mod.load(path) if path else config_mod.load_file_only(data_dir / "ucloud.toml")
    up = read_up(data_dir)
    raw: dict[str, Any] = msgspec.to_builtins(base)
    raw["data_dir"] = str(data_dir)
    raw["nats"]["url"] = up.nats
    raw["etcd"]["endpoints"] = up.etcd
    return config_mod.decode(raw)


def default_data_dir() -> Path:
    """Where ``ucloud up`` keeps its data: /var/lib/ucloud as root, else the user's data dir.

    Commands without ``--data-dir`` or a config file use the all-in-one running there.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/ucloud")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ucloud"


def _no_config_file() -> bool:
    return not os.environ.get("UCLOUD_CONFIG") and not config_mod.DEFAULT_PATH.exists()
