"""Where the client keeps its login, and how it finds the gateway.

A login is one JSON file per remote (see ``remotes``) in ``$UCLOUD_CONFIG_DIR`` (default
``~/.config/ucloud``), mode 0600 in a 0700 directory: the token and the gateway URL it
was issued by, and the all-in-one's data directory when the gateway was found through
one (``ucloud replay`` and ``ucloud events`` find its servers there).

The gateway URL, first found wins: ``--url``; ``UCLOUD_URL``; the remote's URL; the stored
login's URL; ``--data-dir``'s ``up.json`` (its ``gateway``; without ``--data-dir``, that of
an all-in-one running on the default data directory); ``http://[::1]:8080``.
The token: ``UCLOUD_TOKEN``; else the stored one, but only when it was issued by the gateway
about to be asked, so a token is never sent to another server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from ucloud.client.remotes import CREDENTIALS_FILE, DEFAULT_REMOTE, login_path, write_private
from ucloud.client.upfile import read_up
from ucloud.errors import ConfigError, InputError, NotLoggedIn

DEFAULT_URL = "http://[::1]:8080"


@dataclass(frozen=True, kw_only=True)
class Credentials:
    url: str
    token: str = field(repr=False)
    name: str = ""
    realm: str = ""
    expires_at: str = ""
    data_dir: str = ""  # the running all-in-one the gateway was found through, if any


def config_dir(env: Mapping[str, str]) -> Path:
    if env.get("UCLOUD_CONFIG_DIR"):
        return Path(env["UCLOUD_CONFIG_DIR"])
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".config" / "ucloud"


def load_credentials(directory: Path, remote: str = DEFAULT_REMOTE) -> Credentials | None:
    """The stored login of ``remote``, or None when there is none."""
    path = login_path(directory, remote)
    try:
        return msgspec.json.decode(path.read_bytes(), type=Credentials)
    except FileNotFoundError:
        return None
    except msgspec.DecodeError as exc:
        raise ConfigError(str(path), f"not a valid login ({exc}); run `ucloud login`") from exc


def save_credentials(
    directory: Path, credentials: Credentials, remote: str = DEFAULT_REMOTE
) -> Path:
    """Write the login readable by its owner only, replacing any earlier one atomically."""
    return write_private(login_path(directory, remote), msgspec.json.encode(credentials))


def remove_credentials(directory: Path, remote: str = DEFAULT_REMOTE) -> bool:
    """Forget the stored login of ``remote``; False when there was none."""
    with contextlib.suppress(FileNotFoundError):
        login_path(directory, remote).unlink()
        return True
    return False


def resolve_url(
    flag: str | None,
    env: Mapping[str, str],
    stored: Credentials | None,
    data_dir: Path | None,
    remote_url: str = "",
) -> str:
    """The gateway to talk to (see the module docstring for the order)."""
    if flag:
        return checked_url(flag, "--url")
    if env.get("UCLOUD_URL"):
        return checked_url(env["UCLOUD_URL"], "UCLOUD_URL")
    if remote_url:
        return checked_url(remote_url, "remotes.json")
    if stored is not None and stored.url:
        return checked_url(stored.url, CREDENTIALS_FILE)
    if data_dir is not None:
        gateway = read_up(data_dir).gateway
        if not gateway:
            raise ConfigError("--data-dir", f"{data_dir} names no gateway: is it running there?")
        return checked_url(gateway, "--data-dir")
    return DEFAULT_URL


def resolve_token(
    env: Mapping[str, str], stored: Credentials | None, url: str, remote: str = DEFAULT_REMOTE
) -> str:
    """The bearer token for ``url``; NotLoggedIn says why there is none."""
    if env.get("UCLOUD_TOKEN"):
        return env["UCLOUD_TOKEN"]
    of = "" if remote == DEFAULT_REMOTE else f" of remote {remote}"
    if stored is None or not stored.token:
        raise NotLoggedIn(
            f"no stored login{of} in {config_dir(env)} and UCLOUD_TOKEN is not set"
        )
    if stored.url.rstrip("/") != url:
        raise NotLoggedIn(f"the stored login{of} is for {stored.url}, not {url}")
    return stored.token


def checked_url(url: str, source: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
        raise InputError(source, f"{url!r} is not an http:// or https:// URL")
    return url
