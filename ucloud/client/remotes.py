"""Named gateways (remotes), each with its own login, and which one is current.

``remotes.json`` in the config directory holds each remote's URL and the current one's
name; a remote's login is ``logins/NAME.json`` beside it. The remote ``default`` keeps its
login in ``credentials.json``, so a login stored before remotes existed is still found: it is
the login of ``default``, whose URL is that login's unless ``remote add default URL`` set one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

from ucloud.errors import ConfigError, InputError

REMOTES_FILE = "remotes.json"
DEFAULT_REMOTE = "default"
CREDENTIALS_FILE = "credentials.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class Remote(msgspec.Struct, frozen=True, kw_only=True):
    url: str


class Remotes(msgspec.Struct, frozen=True, kw_only=True):
    current: str = DEFAULT_REMOTE
    remotes: dict[str, Remote] = msgspec.field(default_factory=dict)


def checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError("remote", f"{name!r}: use 1-63 letters, digits, '-' or '_'")
    return name


def login_path(directory: Path, remote: str) -> Path:
    """Where the login of ``remote`` is kept."""
    if remote == DEFAULT_REMOTE:
        return directory / CREDENTIALS_FILE
    return directory / "logins" / f"{checked_name(remote)}.json"


def load_remotes(directory: Path) -> Remotes:
    path = directory / REMOTES_FILE
    try:
        return msgspec.json.decode(path.read_bytes(), type=Remotes)
    except FileNotFoundError:
        return Remotes()
    except msgspec.DecodeError as exc:
        raise ConfigError(str(path), f"not a valid list of remotes ({exc})") from exc


def save_remotes(directory: Path, remotes: Remotes) -> Path:
    return write_private(directory / REMOTES_FILE, msgspec.json.encode(remotes))


def write_private(path: Path, data: bytes) -> Path:
    """Write readable by the owner only (in a 0700 directory), replacing atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, msgspec.json.format(data) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def chosen(remotes: Remotes, flag: str | None, env: Mapping[str, str]) -> str:
    """The remote a command talks to: ``--remote``, ``UCLOUD_REMOTE``, else the current one.
    A named remote must exist (``default`` always does)."""
    name = flag or env.get("UCLOUD_REMOTE") or remotes.current
    if name != DEFAULT_REMOTE and name not in remotes.remotes:
        raise ConfigError("--remote", f"no remote named {name!r} (see `ucloud remote list`)")
    return name


def with_remote(remotes: Remotes, name: str, url: str) -> Remotes:
    return msgspec.structs.replace(
        remotes, remotes={**remotes.remotes, checked_name(name): Remote(url=url)}
    )


def without_remote(remotes: Remotes, name: str) -> Remotes:
    left = {key: value for key, value in remotes.remotes.items() if key != name}
    current = DEFAULT_REMOTE if remotes.current == name else remotes.current
    return Remotes(current=current, remotes=left)
