"""Secured servers for tests: a certificate authority, NKey users, and nats-server and
etcd that require TLS and authentication.

Everything is made in the test's own directory: openssl signs server and client
certificates with a CA of the test (valid one day, for ``localhost``, ``127.0.0.1`` and
``::1`` unless other names are given), ``nkeys`` makes user seeds. ``nats_tls_conf`` and
``etcd_tls_args`` are the pieces a cluster of several servers puts in each member's
configuration; ``SecureNats`` and ``SecureEtcd`` are one server each, started and ready.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import nkeys

from tests.capabilities import missing
from ucloud.servers import find_binary, free_port

LOCAL = ("localhost", "127.0.0.1", "::1")
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        missing("openssl is not installed: no certificates for TLS servers")
    return path


@dataclass(frozen=True)
class Pair:
    """A certificate and its key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    """A certificate authority of the test: ``ca`` is its certificate (the CA file)."""

    directory: Path
    ca: Path
    ca_key: Path

    @classmethod
    def create(cls, directory: Path) -> Pki:
        directory.mkdir(parents=True, exist_ok=True)
        ca, key = directory / "ca.pem", directory / "ca.key"
        subprocess.run(
            [_openssl(), "req", "-x509", *_CURVE, "-keyout", str(key), "-out", str(ca),
             "-days", "1", "-subj", "/CN=ucloud test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            check=True, capture_output=True,
        )
        return cls(directory, ca, key)

    def issue(self, name: str, hosts: Sequence[str] = LOCAL) -> Pair:
        """A certificate with common name ``name`` for ``hosts`` (names and addresses),
        good for servers and clients alike."""
        pair = Pair(self.directory / f"{name}.pem", self.directory / f"{name}.key")
        request = self.directory / f"{name}.csr"
        sans = ",".join(f"IP:{h}" if _is_address(h) else f"DNS:{h}" for h in hosts)
        extensions = self.directory / f"{name}.ext"
        extensions.write_text(
            f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        )
        subprocess.run(
            [_openssl(), "req", *_CURVE, "-keyout", str(pair.key), "-out", str(request),
             "-subj", f"/CN={name}"],
            check=True, capture_output=True,
        )
        subprocess.run(
            [_openssl(), "x509", "-req", "-in", str(request), "-CA", str(self.ca),
             "-CAkey", str(self.ca_key), "-CAcreateserial", "-days", "1",
             "-extfile", str(extensions), "-out", str(pair.cert)],
            check=True, capture_output=True,
        )
        return pair


def _is_address(host: str) -> bool:
    return ":" in host or host.replace(".", "").isdigit()


@dataclass(frozen=True)
class NkeyUser:
    """An NKey user: the seed file a client is configured with, and the public key the
    server lists."""

    seed_file: Path
    public: str


def nkey_user(directory: Path, name: str = "user") -> NkeyUser:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = directory / f"{name}.nk"
    path.write_bytes(seed + b"\n")
    path.chmod(0o600)
    return NkeyUser(path, nkeys.from_seed(bytearray(seed)).public_key.decode())


def nats_tls_conf(pki: Pki, server: Pair, *, verify_clients: bool = False) -> str:
    """nats-server's ``tls`` block: its certificate, and clients verified with the CA."""
    verify = "\n  verify: true" if verify_clients else ""
    return (
        f'tls {{\n  cert_file: "{server.cert}"\n  key_file: "{server.key}"\n'
        f'  ca_file: "{pki.ca}"{verify}\n  timeout: 5\n}}\n'
    )


def nats_nkey_conf(users: Sequence[NkeyUser]) -> str:
    """nats-server's ``authorization`` block admitting only these NKey users."""
    listed = ", ".join(f'{{ nkey: "{u.public}" }}' for u in users)
    return f"authorization {{ users = [ {listed} ] }}\n"


def etcd_tls_args(pki: Pki, server: Pair, *, verify_clients: bool = True) -> list[str]:
    """etcd's client TLS flags (listen and advertise ``https://`` URLs with them)."""
    args = ["--cert-file", str(server.cert), "--key-file", str(server.key),
            "--trusted-ca-file", str(pki.ca)]
    return [*args, "--client-cert-auth"] if verify_clients else args


class SecureNats:
    """A nats-server (JetStream) on loopback requiring TLS and, with ``users``, NKeys."""

    def __init__(self, directory: Path, pki: Pki, *, users: Sequence[NkeyUser] = (),
                 verify_clients: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        run = directory / "run"
        run.mkdir(parents=True)
        server = pki.issue("nats-server")
        conf = directory / "nats.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\nports_file_dir: "{run}"\n'
            f'jetstream {{ store_dir: "{directory / "js"}" }}\n'
            + nats_tls_conf(pki, server, verify_clients=verify_clients)
            + (nats_nkey_conf(users) if users else "")
        )
        with (directory / "nats.log").open("wb") as output:
            self.process = subprocess.Popen([find_binary("nats-server"), "-c", str(conf)],
                                            stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not any(run.glob("*.ports")):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"nats-server: {(directory / 'nats.log').read_text()}")
            time.sleep(0.01)

    def url(self, host: str = "localhost") -> str:
        return f"tls://{host}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)

    def __enter__(self) -> SecureNats:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


class SecureEtcd:
    """A single-member etcd on loopback serving clients over TLS (verifying their
    certificates with ``verify_clients``); ``endpoint(host)`` names it."""

    def __init__(self, directory: Path, pki: Pki, *, verify_clients: bool = True) -> None:
        self.directory = directory
        self.port, peer_port = free_port(), free_port()
        server = pki.issue("etcd-server")
        self.url = f"https://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{peer_port}"
        both = f"{self.url},https://[::1]:{self.port}"  # IPv4 and IPv6 loopback
        argv = [
            find_binary("etcd"), "--name", "secure", "--data-dir", str(directory / "data"),
            "--listen-client-urls", both, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"secure={peer}", "--unsafe-no-fsync",
            "--logger", "zap", "--log-level", "info",
            *etcd_tls_args(pki, server, verify_clients=verify_clients),
        ]
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / "etcd.log").open("wb") as output:
            self.process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        # etcd's readiness signal: the line it logs once it serves clients
        while b"serving client traffic securely" not in (directory / "etcd.log").read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"etcd: {(directory / 'etcd.log').read_text()}")
            time.sleep(0.02)

    def endpoint(self, host: str = "localhost") -> str:
        return f"{host}:{self.port}" if ":" not in host else f"[{host}]:{self.port}"

    def enable_auth(self, pki: Pki, client: Pair, password: str) -> None:
        """Add user ``root`` with ``password`` (role root) and turn authentication on,
        with etcdctl over TLS as ``client``."""
        tls = ["--endpoints", self.url, "--cacert", str(pki.ca), "--cert", str(client.cert),
               "--key", str(client.key)]
        etcdctl = find_binary("etcdctl")
        for command in (["user", "add", f"root:{password}"], ["role", "add", "root"],
                        ["user", "grant-role", "root", "root"], ["auth", "enable"]):
            subprocess.run([etcdctl, *tls, *command], check=True, capture_output=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(15)
        shutil.rmtree(self.directory / "data", ignore_errors=True)

    def __enter__(self) -> SecureEtcd:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
