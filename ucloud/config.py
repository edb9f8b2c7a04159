"""Configuration: one msgspec Struct decoded from TOML plus ``UCLOUD_*`` overrides.

Built once in ``main`` and passed down; nothing else reads the environment for settings.

Overrides: ``UCLOUD_<SECTION>__<KEY>=value`` sets ``[section] key`` and ``UCLOUD_<KEY>``
sets a top-level key. Values are read as TOML values (``3``, ``true``, ``["a"]``) and
otherwise taken as strings. Variables that name no key are left alone unless they use the
``__`` form, which must name a real key (client variables such as ``UCLOUD_URL`` share the
prefix).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ucloud.errors import ConfigError

DEFAULT_PATH = Path("/etc/ucloud/ucloud.toml")
SAMPLE_PRICES = Path(__file__).resolve().parent / "replay" / "prices.sample.toml"


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class NatsConfig(_Section):
    url: str = "nats://127.0.0.1:4222"
    stream: str = "UCLOUD_EVENTS"
    subject_root: str = "ucloud.evt"
    replicas: int = 1
    duplicate_window_s: float = 120.0


class EtcdConfig(_Section):
    endpoints: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:2379"])
    prefix: str = "/ucloud/v1/"
    # Operations per transaction: 128 is what a stock etcd accepts (--max-txn-ops); the
    # embedded etcd of ``ucloud up`` accepts 4096.
    max_txn_ops: int = 128
    # TOTP secrets, replay guards and the token signing key: outside the projection prefix
    # (rebuilds wipe that) and outside the event log.
    secrets_prefix: str = "/ucloud/secret/v1/"


class GatewayConfig(_Section):
    listen: str = "[::1]:8080"
    token_lifetime_s: int = 3600
    token_key_file: str = ""
    max_request_bytes: int = 1 << 20
    # When set and user ``admin`` does not exist, create it (realm admin) at start and write
    # its TOTP secret to this file (mode 0600).
    bootstrap_admin_file: str = ""
    # How long an answer waits for the projection to show what the request appended.
    read_your_writes_s: float = 10.0
    # Failed logins allowed per user and per source address within the window, then 429.
    login_failures: int = 5
    login_window_s: float = 60.0


class SchedulerConfig(_Section):
    policy: Literal["pack", "spread"] = "spread"
    # Tries at one placement while other schedulers keep taking the chosen host first.
    conflict_retries: Annotated[int, msgspec.Meta(ge=1)] = 16
    # How long a scheduler waits for its capacity ledger to catch up after a conflict.
    catch_up_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0


def default_host_id() -> str:
    """The machine's hostname as a subject token: ``node1.example.org`` -> ``node1-example-org``."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()).strip("-")[:128]
    return name or "host"


_Amount = Annotated[int, msgspec.Meta(ge=0)]


class HostConfig(_Section):
    """This machine as a host. Capacity left out is detected (CPUs, MemTotal, data_dir disk)."""

    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")] = msgspec.field(
        default_factory=default_host_id
    )
    cpu: Annotated[int, msgspec.Meta(ge=1)] | None = None
    ram_mib: _Amount | None = None
    ssd_mib: _Amount | None = None
    hdd_mib: _Amount | None = None
    address: str = ""  # underlay IPv6 address (VXLAN source); empty: none yet
    router: bool = False  # runs radvd for networks with IPAM "auto"
    lease_ttl_s: Annotated[int, msgspec.Meta(ge=2)] = 10  # liveness: down after this long

    def __post_init__(self) -> None:
        if self.address:
            try:
                ipaddress.IPv6Address(self.address)
            except ValueError as exc:
                raise ValueError(f"address {self.address!r} is not an IPv6 address") from exc


class ConsumerConfig(_Section):
    batch: int = 64
    ack_wait_s: float = 30.0
    max_deliver: int = 10
    backoff_s: list[float] = msgspec.field(default_factory=lambda: [1.0, 5.0, 30.0])


class BillingConfig(_Section):
    # The price table of ``ucloud replay billing`` and quotes (TOML; see the sample).
    prices: str = str(SAMPLE_PRICES)


class ImagesConfig(_Section):
    """Uploaded files and the image store. Empty paths mean a directory under ``data_dir``."""

    dir: str = ""  # the filesystem store: <dir>/<image id>.raw (default <data_dir>/images)
    disks_dir: str = ""  # VM disks of the filesystem store (default <data_dir>/disks)
    files_dir: str = ""  # uploads, <files_dir>/<owner>/<name> (default <data_dir>/files)
    max_virtual_size_gib: Annotated[int, msgspec.Meta(ge=1)] = 256
    max_upload_bytes: Annotated[int, msgspec.Meta(ge=1)] = 64 << 30
    # filescan: how often it looks, and how long a file must stay unchanged to be complete
    scan_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    settle_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    # built-in images registered as public images of admin (built first when not cached)
    builtin: list[Literal["tiny", "debian-12"]] = msgspec.field(
        default_factory=lambda: ["tiny", "debian-12"]
    )


class Config(_Section):
    data_dir: str = "/var/lib/ucloud"
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    etcd: EtcdConfig = msgspec.field(default_factory=EtcdConfig)
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    host: HostConfig = msgspec.field(default_factory=HostConfig)
    consumer: ConsumerConfig = msgspec.field(default_factory=ConsumerConfig)
    billing: BillingConfig = msgspec.field(default_factory=BillingConfig)
    images: ImagesConfig = msgspec.field(default_factory=ImagesConfig)


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any), apply overrides, and decode; ConfigError names the key."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    chosen = path or (Path(env["UCLOUD_CONFIG"]) if env.get("UCLOUD_CONFIG") else None)
    if chosen is None and DEFAULT_PATH.exists():
        chosen = DEFAULT_PATH
    if chosen is not None:
        try:
            raw = tomllib.loads(chosen.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(str(chosen), "no such file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(chosen), f"not valid TOML: {exc}") from exc
    apply_overrides(raw, env)
    return decode(raw)


def load_file_only(path: Path) -> Config:
    """The file at ``path`` if it exists (no environment, no default path), else defaults."""
    if not path.exists():
        return Config()
    return load(path, {})


def decode(raw: Mapping[str, Any]) -> Config:
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(*_key_and_reason(str(exc))) from exc


def apply_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    top = set(Config.__struct_fields__)
    for name, value in env.items():
        if not name.startswith("UCLOUD_"):
            continue
        rest = name[len("UCLOUD_") :].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            if section not in top:
                raise ConfigError(name, f"no config section {section!r}")
            raw.setdefault(section, {})[key] = _value(value)
        elif rest in top and not isinstance(getattr(_DEFAULTS, rest), _Section):
            raw[rest] = _value(value)




_DEFAULTS = Config()


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _key_and_reason(message: str) -> tuple[str, str]:
    """Turn msgspec's "reason - at `$.a.b`" into ("a.b", "reason")."""
    match = re.match(r"(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", message)
    assert match is not None
    reason, path = match["reason"], (match["path"] or "").lstrip(".")
    unknown = re.match(r"Object contains unknown field `(?P<f>[^`]+)`", reason)
    if unknown:
        path = f"{path}.{unknown['f']}" if path else unknown["f"]
        reason = "unknown key"
    return path or "(top)", reason
