"""Configuration: one msgspec Struct decoded from TOML plus ``UCLOUD_*`` overrides.

Built once in ``main`` and passed down; nothing else reads the environment for settings.

Overrides: ``UCLOUD_<SECTION>__<KEY>=value`` sets ``[section] key`` and ``UCLOUD_<KEY>``
sets a top-level key. Each value is read as its field's type: a string field takes the
text as it is (``UCLOUD_HOST__ID=42`` is the id "42"), any other field a TOML value (``3``,
``true``, ``["a"]``). Variables that name no key are left alone unless they use the ``__``
form, which must name a real key (client variables such as ``UCLOUD_URL`` share the
prefix).

``Config.paths`` resolves the directories that default to a place under ``data_dir``; every
module reads them there.
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
    # JetStream sync_interval of the nats-server ``ucloud up`` starts: "always" fsyncs each
    # event before it is acknowledged; an interval ("10ms") trades that for appends/s.
    sync: Annotated[str, msgspec.Meta(pattern=r"^(always|([0-9]+(ns|us|ms|s|m|h))+)$")] = "always"
    # Who ucloud is to NATS, beside user:password@ or token@ in the URL: a credentials file
    # (user JWT and NKey seed) or an NKey seed file; the CA file that server certificates
    # are verified with ("": the system's trust store) and a client certificate and key.
    # Every connection uses them, the log reader's too. Files, never secrets, here.
    credentials: str = ""
    nkey_seed: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    def __post_init__(self) -> None:
        if self.credentials and self.nkey_seed:
            raise ValueError("set credentials or nkey_seed, not both")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")


class EtcdConfig(_Section):
    endpoints: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:2379"])
    prefix: str = "/ucloud/v1/"
    # Operations per transaction: 128 is what a stock etcd accepts (--max-txn-ops); the
    # embedded etcd of ``ucloud up`` accepts 4096.
    max_txn_ops: int = 128
    # TOTP secrets, replay guards and the token signing key: outside the projection prefix
    # (rebuilds wipe that) and outside the event log.
    secrets_prefix: str = "/ucloud/secret/v1/"
    # TLS to the members: the CA file that verifies them ("" with an https:// endpoint: the
    # system's roots), a client certificate and key for --client-cert-auth, and the name
    # every member's certificate is checked against ("": the first endpoint's host).
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    # etcd user authentication: the password is read from password_file, never kept here.
    user: str = ""
    password_file: str = ""

    def __post_init__(self) -> None:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        if self.user and not self.password_file:
            raise ValueError("user needs password_file (the password is never in the config)")


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
    # How long ``DELETE /v1/users/<name>?cascade=true`` waits for each kind of resource to go.
    cascade_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0


_Limit = Annotated[int, msgspec.Meta(ge=0)]


class QuotasConfig(_Section):
    """Every user's default limits (0: unlimited); the admin overrides them per user.

    ``ipv4`` and ``dns_names`` are declared for the resources that will count against them;
    nothing enforces them yet.
    """

    vms: _Limit = 0
    cores: _Limit = 0
    ram_mib: _Limit = 0
    ssd_mib: _Limit = 0
    hdd_mib: _Limit = 0
    networks: _Limit = 0
    ipv4: _Limit = 0
    dns_names: _Limit = 0


class SchedulerConfig(_Section):
    policy: Literal["pack", "spread"] = "spread"
    # Tries at one placement while other schedulers keep taking the chosen host first.
    conflict_retries: Annotated[int, msgspec.Meta(ge=1)] = 16
    # How long a scheduler waits for its capacity ledger to catch up after a conflict.
    catch_up_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # A host down this long has its VMs evacuated (shared disks) or marked lost (local).
    evacuate_after_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0


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
    # VMs under QEMU: runtime directories (default <data_dir>/vms), accelerator ("auto"
    # boots the tiny guest under KVM once and caches whether it came up), CPU model (a
    # named model; "host" is refused), seconds between system_powerdown and quit
    runtime_dir: str = ""
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    cpu_model: Annotated[str, msgspec.Meta(pattern=r"^(?!host$)[A-Za-z0-9][A-Za-z0-9._-]*$")] = (
        "max"
    )
    qemu: str = "qemu-system-x86_64"
    stop_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    # a VM that dies unasked is restarted after these delays (the last repeats); a run of
    # restart_stable_s seconds starts the count afresh
    restart_backoff_s: list[Annotated[float, msgspec.Meta(ge=0)]] = msgspec.field(
        default_factory=lambda: [1.0, 2.0, 5.0, 10.0, 30.0, 60.0]
    )
    restart_stable_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # the serial console endpoint the gateway proxies to (port 0: any free port); in a
    # cluster, the host's underlay address
    console_listen: str = "[::1]:0"
    # live migration out of this host: QEMU's bandwidth cap and longest pause of the guest,
    # and how long a migration may take before it is cancelled (the VM stays here)
    migration_max_bandwidth_mib_s: Annotated[int, msgspec.Meta(ge=1)] = 1024
    migration_downtime_ms: Annotated[int, msgspec.Meta(ge=1)] = 100
    migration_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 600.0

    def __post_init__(self) -> None:
        if self.address:
            try:
                ipaddress.IPv6Address(self.address)
            except ValueError as exc:
                raise ValueError(f"address {self.address!r} is not an IPv6 address") from exc


VNI_LIMIT = (1 << 24) - 1  # a VXLAN network identifier has 24 bits
_IFNAME = r"^[A-Za-z0-9_.-]{1,15}$"  # a Linux interface name


class NetworkConfig(_Section):
    """VM networks: VNIs and /64s to allocate from, and how hosts carry the VXLANs."""

    vni_min: Annotated[int, msgspec.Meta(ge=1, le=VNI_LIMIT)] = 1
    vni_max: Annotated[int, msgspec.Meta(ge=1, le=VNI_LIMIT)] = VNI_LIMIT
    # where the /64s of IPAM manual and auto networks come from (a ULA /48 by default)
    prefix_pool: str = "fd75:636c:6f75::/48"
    # VXLAN multicast groups: this prefix with the VNI in its last 24 bits (ff05::<vni>)
    group_prefix: str = "ff05::/104"
    # the underlay interface; "" is the one holding host.address, and without that the
    # networks stay on this host (no VXLAN peers)
    underlay: Annotated[str, msgspec.Meta(pattern=r"^$|" + _IFNAME)] = ""
    ttl: Annotated[int, msgspec.Meta(ge=1, le=255)] = 16  # hop limit of VXLAN multicast
    mtu: Annotated[int, msgspec.Meta(ge=1280, le=65000)] = 1500  # VM side; underlay >= +70
    rdnss: list[str] = msgspec.field(default_factory=list)  # DNS servers in router adverts

    def __post_init__(self) -> None:
        if self.vni_min > self.vni_max:
            raise ValueError(f"vni_min {self.vni_min} is above vni_max {self.vni_max}")
        try:
            pool = ipaddress.IPv6Network(self.prefix_pool, strict=True)
        except ValueError as exc:
            raise ValueError(f"prefix_pool {self.prefix_pool!r}: {exc}") from exc
        if pool.prefixlen > 64:
            raise ValueError(f"prefix_pool {self.prefix_pool!r} is smaller than a /64")
        try:
            group = ipaddress.IPv6Network(self.group_prefix, strict=True)
        except ValueError as exc:
            raise ValueError(f"group_prefix {self.group_prefix!r}: {exc}") from exc
        if not group.is_multicast or group.prefixlen > 104:
            raise ValueError(
                f"group_prefix {self.group_prefix!r} must be multicast with room for a VNI "
                "(a /104 or larger)"
            )
        for server in self.rdnss:
            try:
                ipaddress.IPv6Address(server)
            except ValueError as exc:
                raise ValueError(f"rdnss {server!r} is not an IPv6 address") from exc


_DNS_NAME = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class DnsConfig(_Section):
    """Names of VMs: the zones offered to users, the limit, and the authoritative server
    (knotd) that the ``dns`` service updates by RFC 2136 signed with TSIG."""

    # None: run the dns service (and, in ``ucloud up``, knotd) when knotd is installed
    enabled: bool | None = None
    zones: list[Annotated[str, msgspec.Meta(pattern=_DNS_NAME)]] = msgspec.field(
        default_factory=lambda: ["vm.test"]
    )
    default_zone: str = ""  # of generated reverse names <vm>.<owner>.<zone>; "" the first
    max_names_per_user: Annotated[int, msgspec.Meta(ge=0)] = 16
    server: str = "[::1]:8053"  # where knotd answers and takes updates
    tsig_key_file: str = ""  # "<name> <base64 secret>"; default <data_dir>/dns/tsig.key
    nameserver: str = ""  # the zones' NS and SOA primary; default ns.<default zone>
    ttl: Annotated[int, msgspec.Meta(ge=0)] = 300

    def __post_init__(self) -> None:
        if self.default_zone and self.default_zone not in self.zones:
            raise ValueError(f"default_zone {self.default_zone!r} is not one of zones")

    @property
    def zone(self) -> str:
        """The default zone ("" when none is offered)."""
        return self.default_zone or (self.zones[0] if self.zones else "")


class MetadataConfig(_Section):
    """The metadata service: on ``fe80::a9fe:a9fe`` of each VM bridge, and ``address``."""

    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 80
    address: str = ""  # a global IPv6 address to listen on too; empty: link-local only
    bridge_poll_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0  # how often it looks for bridges
    # user data of `vm create --user-data`: kept in etcd under the secrets prefix
    max_user_data_bytes: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)] = 64 << 10

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


class MetricsConfig(_Section):
    # where the process serves /metrics (ADDRESS:PORT, port 0: any free port); empty: no
    # listener (`ucloud serve`: several may share a machine), `ucloud up`: [::1]:0
    listen: str = ""


class LogConfig(_Section):
    # how services log to stderr: "text" for people, "json" one object a line for collectors
    format: Literal["text", "json"] = "text"


class BillingConfig(_Section):
    # The price table of ``ucloud replay billing`` and quotes (TOML; see the sample).
    prices: str = str(SAMPLE_PRICES)


class ImagesConfig(_Section):
    """Uploaded files and the image store. Empty paths mean a directory under ``data_dir``."""

    dir: str = ""  # the filesystem store: <dir>/<image id>.raw (default <data_dir>/images)
    disks_dir: str = ""  # VM disks of the filesystem store (default <data_dir>/disks)
    # disks_dir (and dir) is one filesystem every host mounts at the same path: VMs on the
    # filesystem store may then migrate and be evacuated, as VMs on RBD always may
    shared: bool = False
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
    # the Ceph RBD store: its pool, the cluster's config file ("" is /etc/ceph/ceph.conf)
    # and the cephx user (client.<ceph_client>) it connects as
    rbd_pool: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")] = "rbd"
    ceph_conf: str = ""
    ceph_client: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")] = (
        "admin"
    )

    def shared_store(self, kind: str) -> bool:
        """Whether VM disks of the store ``kind`` reach every host (migration, evacuation)."""
        return kind == "rbd" or (kind == "fs" and self.shared)


class Paths(msgspec.Struct, frozen=True, kw_only=True):
    """The directories of a configuration, absolute, with the defaults under ``data_dir``."""

    data: Path  # data_dir
    files: Path  # uploads (images.files_dir)
    images: Path  # the filesystem store's base images (images.dir)
    disks: Path  # the filesystem store's VM disks (images.disks_dir)
    runtime: Path  # VM runtime directories under QEMU (host.runtime_dir)
    builtin_images: Path  # built guest images, as ``ucloud image build`` keeps them
    radvd: Path  # router advertisement daemons of networks with IPAM "auto"
    dns: Path  # the TSIG key of DNS updates, and the embedded knotd of ``ucloud up``


BUILTIN_IMAGES = Path("images") / "builtin"  # under data_dir


class Config(_Section):
    data_dir: str = "/var/lib/ucloud"
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    etcd: EtcdConfig = msgspec.field(default_factory=EtcdConfig)
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    host: HostConfig = msgspec.field(default_factory=HostConfig)
    network: NetworkConfig = msgspec.field(default_factory=NetworkConfig)
    consumer: ConsumerConfig = msgspec.field(default_factory=ConsumerConfig)
    billing: BillingConfig = msgspec.field(default_factory=BillingConfig)
    images: ImagesConfig = msgspec.field(default_factory=ImagesConfig)
    metadata: MetadataConfig = msgspec.field(default_factory=MetadataConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    dns: DnsConfig = msgspec.field(default_factory=DnsConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    quotas: QuotasConfig = msgspec.field(default_factory=QuotasConfig)

    @property
    def paths(self) -> Paths:
        data = Path(self.data_dir).absolute()

        def under(setting: str, default: str) -> Path:
            return Path(setting).absolute() if setting else data / default

        return Paths(
            data=data,
            files=under(self.images.files_dir, "files"),
            images=under(self.images.dir, "images"),
            disks=under(self.images.disks_dir, "disks"),
            runtime=under(self.host.runtime_dir, "vms"),
            builtin_images=data / BUILTIN_IMAGES,
            radvd=data / "radvd",
            dns=data / "dns",
        )


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
    for name, text in env.items():
        if not name.startswith("UCLOUD_"):
            continue
        rest = name[len("UCLOUD_") :].lower()
        if "__" in rest:
            section, key = rest.split("__", 1)
            fields = _SECTIONS.get(section)
            if fields is None:
                raise ConfigError(name, f"no config section {section!r}")
            if key not in fields:
                raise ConfigError(f"{section}.{key}", f"unknown key (from {name})")
            raw.setdefault(section, {})[key] = _value(text, fields[key])
        elif rest in _TOP:
            raw[rest] = _value(text, _TOP[rest])


def _fields(struct: msgspec.inspect.StructType) -> dict[str, msgspec.inspect.Type]:
    return {f.encode_name: f.type for f in struct.fields}


_CONFIG = msgspec.inspect.type_info(Config)
assert isinstance(_CONFIG, msgspec.inspect.StructType)
_SECTIONS = {
    name: _fields(kind)
    for name, kind in _fields(_CONFIG).items()
    if isinstance(kind, msgspec.inspect.StructType)
}
_TOP = {
    name: kind
    for name, kind in _fields(_CONFIG).items()
    if not isinstance(kind, msgspec.inspect.StructType)
}


def _value(text: str, kind: msgspec.inspect.Type) -> Any:
    """The override as its field's type: a string field takes the text itself."""
    if isinstance(kind, msgspec.inspect.StrType) or (
        isinstance(kind, msgspec.inspect.LiteralType)
        and all(isinstance(v, str) for v in kind.values)
    ):
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # not a TOML value: decode refuses it, naming the key


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
