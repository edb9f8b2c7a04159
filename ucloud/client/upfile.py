"""``<data-dir>/up.json``: where a running all-in-one (``ucloud up``) listens.

    {"gateway": "http://[::1]:8080", "nats": "nats://127.0.0.1:4222",
     "etcd": ["127.0.0.1:2379"], "pid": 1234, "metrics": "http://[::1]:40123/metrics"}

``ucloud up`` writes it (``write_up``) and removes it on stop; commands read it
(``read_up``) to find the servers (``locate``) and the gateway (``credentials``).
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from ucloud.errors import ConfigError

UP_FILE = "up.json"


class UpInfo(msgspec.Struct, kw_only=True):
    gateway: str = ""
    nats: str
    etcd: list[str]
    pid: int = 0
    metrics: str = ""  # the /metrics of the whole all-in-one


def read_up(data_dir: Path) -> UpInfo:
    path = data_dir / UP_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=UpInfo)
    except FileNotFoundError as exc:
        raise ConfigError("--data-dir", f"{path} not found: is `ucloud up` running there?") from exc
    except msgspec.DecodeError as exc:
        raise ConfigError("--data-dir", f"{path} is not valid: {exc}") from exc


def write_up(data_dir: Path, info: UpInfo) -> None:
    path = data_dir / UP_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(json.dumps(msgspec.to_builtins(info), indent=2).encode() + b"\n")
    tmp.replace(path)
