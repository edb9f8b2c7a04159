"""The production shape, for tests and benchmarks: a whole cluster on namespaces.

``Cluster`` (a context manager) builds, on one IPv6 underlay of network namespaces
(``tests.multihost``), three control nodes ``c1``..``c3`` and ``hosts`` hypervisor hosts
``h1``.. (host 1 routes the VM networks). Each control node runs a nats-server of one
JetStream cluster (routes to the other two, stream replicas 3) and an etcd member of one
3-member cluster, both listening on the node's underlay address, and some of the services
as separate ``ucloud --config FILE serve <service>`` processes (``PLACEMENT``): two
gateways, two projectors, two schedulers, two dispatchers, netalloc, filescan, imagescan.
Each host runs ``hostd`` and ``metadata`` (the metadata service answers on the VM bridges,
which only a host has). The hosts share one filesystem image store. ``hollow`` more hosts
run hostd alone, with ``bench/hollow_qemu.py`` as their QEMU: VMs without guests, for
load tests (``bench.chaos``).

Every process reads a config file listing all three nats-servers and etcd members; the
file of a node's processes lists that node's own servers first, and clients take the
servers in that order, so gateway 1 talks to nats-server 1 and etcd member 1 until they
fail. ``Cluster.servers_of(process)`` says which servers a process really is connected
to, read from the kernel (its established TCP connections), not assumed.

A process is up when it says READY=1 over ``$NOTIFY_SOCKET`` (a unix datagram socket of
the harness per process), a gateway also when it answers ``/healthz``. Logs go to one file
per process in the cluster's temporary directory; a failure shows their tails. Fault
helpers: ``kill``/``restart`` a process, ``kill_nats``/``kill_etcd`` (and ``restart_*``)
of a node, ``partition``/``heal`` a node (nftables drops everything but loopback in its
namespace). Leaving the block kills everything it started (services, hostd's QEMU and
radvd, servers) and removes the namespaces, links and temporary directory.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import msgspec

from tests.integration.hostd_harness import kill_all, settings_text
from tests.multihost import (
    Namespace,
    Namespaces,
    Underlay,
    cluster_config,
    host_config,
    sh,
    ucloud_binary,
)
from tests.tls import Pair, Pki
from ucloud.config import Config
from ucloud.hostd.radvd import RadvdSupervisor
from ucloud.servers import EmbeddedEtcd, EmbeddedNats, EtcdCluster, NatsCluster, ServerTls

CONTROL = (1, 2, 3)
NATS_PORT, NATS_MONITOR_PORT, NATS_ROUTE_PORT = 4222, 8222, 6222
ETCD_PORT, ETCD_PEER_PORT = 2379, 2380
ETCD_NAME = "etcd.cluster.test"  # the one name every member's certificate holds (gRPC checks one)
GATEWAY_PORT = 8080
# service processes on the control nodes, in start order after gateway 1
PLACEMENT: tuple[tuple[str, int], ...] = (
    ("gateway", 1), ("gateway", 2), ("projector", 1), ("projector", 2), ("scheduler", 2),
    ("scheduler", 3), ("dispatcher", 3), ("dispatcher", 1), ("netalloc", 1),
    ("filescan", 2), ("imagescan", 3),
)  # fmt: skip
HOST_SERVICES = ("hostd", "metadata")
READY_TIMEOUT_S = 60.0
HOLLOW_QEMU = Path(__file__).parents[1] / "bench" / "hollow_qemu.py"


class Process:
    """One ``ucloud serve <service>`` in a node's namespace, with its log and notify socket."""

    def __init__(self, name: str, service: str, node: Node, settings: Path, run: Path) -> None:
        self.name = name
        self.service = service
        self.node = node
        self.settings = settings
        self.log = run / f"{name}.log"
        self.notify_path = run / f"{name}.sock"
        self.popen: subprocess.Popen[bytes] | None = None
        self._notify: socket.socket | None = None
        self.said_ready = False
        self.terminated = False

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        """Start it; ``wait_ready`` waits for its READY=1."""
        self._close_notify()
        self.said_ready = self.terminated = False
        self.notify_path.unlink(missing_ok=True)
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(self.notify_path))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UCLOUD_", "NOTIFY_"))}
        env["NOTIFY_SOCKET"] = str(self.notify_path)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                ["ip", "netns", "exec", self.node.space.name, ucloud_binary(), "--config",
                 str(self.settings), "serve", self.service],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True,
            )  # fmt: skip

    def ready(self) -> bool:
        """Whether READY=1 has arrived (reads what is pending, does not wait)."""
        while not self.said_ready and self._notify is not None:
            if not select.select([self._notify], [], [], 0)[0]:
                break
            self.said_ready = b"READY=1" in self._notify.recv(4096).split(b"\n")
        return self.said_ready

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: the process dies as in a crash."""
        if self.alive():
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait()

    def terminate(self) -> None:
        """SIGTERM (once): a clean stop begins (``stop`` waits for it)."""
        if self.alive() and not self.terminated:
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout: float = 20) -> None:
        self.terminate()
        if self.popen is not None and self.popen.returncode is None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_notify()

    def _close_notify(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def output(self, tail: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else ""


@dataclass
class Node:
    """A namespace on the underlay: a control node (servers, services) or a host."""

    name: str
    space: Namespace
    address: str
    settings: Path
    nats: EmbeddedNats | None = None
    etcd: EmbeddedEtcd | None = None
    config: Config | None = None


class Cluster:
    """Three control nodes and ``hosts`` hosts, started on enter, all gone on exit."""

    def __init__(self, hosts: int = 2, *, fsync: bool = False, tls: bool = False,
                 hollow: int = 0,
                 hollow_capacity: tuple[int, int, int] = (64, 8192, 65536)) -> None:  # fmt: skip
        self.host_count = hosts
        # hollow hosts (after the real ones): hostd runs VMs without guests (the load
        # tests' hollow QEMU), with capacity (cpu, ram_mib, ssd_mib) and no metadata service
        self.hollow_count = hollow
        self.hollow_capacity = hollow_capacity
        self.fsync = fsync  # etcd's fsync and nats-server's sync_interval always
        # TLS on both engines: clients, nats routes and etcd peers, all verified by a CA of
        # the cluster's own; every process shows a client certificate
        self.tls = tls
        self.pki: Pki | None = None
        self.client: Pair | None = None
        self.directory = Path(tempfile.mkdtemp(prefix="ucc", dir="/tmp"))  # short: sockets
        self.made = Namespaces()
        self.underlay: Underlay | None = None
        self.control: dict[int, Node] = {}
        self.hosts: list[Node] = []
        self.processes: dict[str, Process] = {}
        self.config = Config()
        self.started_in_s = 0.0

    # --- starting ---------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self._show_logs()
            self.close()
            raise
        self.started_in_s = time.monotonic() - began
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if exc is not None:
            self._show_logs()
        self.close()

    def _start(self) -> None:
        self.underlay = Underlay(self.made)
        for n in CONTROL:
            space, address = self.underlay.node(f"c{n}", 100 + n)
            self.control[n] = Node(f"c{n}", space, address, self.directory / f"c{n}.toml")
        self._launch_servers()
        self.config = self._base_config()
        for n, node in self.control.items():
            node.config = self._near(self.config, n)
            node.config = msgspec.structs.replace(node.config, gateway=msgspec.structs.replace(
                node.config.gateway, listen=f"[{node.address}]:{GATEWAY_PORT}"))
            node.settings.write_text(settings_text(node.config))
        for n in range(1, self.host_count + self.hollow_count + 1):
            space, address = self.underlay.host(n)
            mine = host_config(self._near(self.config, 1 + (n - 1) % len(CONTROL)),
                               self.directory, n, address, n == 1)
            mine = msgspec.structs.replace(mine, host=msgspec.structs.replace(
                mine.host, console_listen=f"[{address}]:0"))
            if n > self.host_count:
                cpu, ram, ssd = self.hollow_capacity
                mine = msgspec.structs.replace(mine, host=msgspec.structs.replace(
                    mine.host, qemu=str(HOLLOW_QEMU), cpu=cpu, ram_mib=ram, ssd_mib=ssd,
                    hdd_mib=0))
            node = Node(f"h{n}", space, address, self.directory / f"h{n}.toml", config=mine)
            node.settings.write_text(settings_text(mine))
            self.hosts.append(node)
        # gateway 1 first: it creates the stream and user admin, which others then find
        first, *rest = self._plan()
        self._start_and_wait([first])
        self._start_and_wait(rest)
        self._wait_hosts_registered()

    def _launch_servers(self) -> None:
        nodes = self.control.values()
        routes = {n.name: f"nats://[{n.address}]:{NATS_ROUTE_PORT}" for n in nodes}
        scheme = "https" if self.tls else "http"
        peers = {n.name: f"{scheme}://[{n.address}]:{ETCD_PEER_PORT}" for n in nodes}
        if self.tls:
            self.pki = Pki.create(self.directory / "pki")
            self.client = self.pki.issue("ucloud-client", ["localhost"])
        for node in nodes:
            wrapper = ["ip", "netns", "exec", node.space.name]
            tls = None
            if self.pki is not None:
                pair = self.pki.issue(node.name, [node.address, ETCD_NAME, "localhost"])
                tls = ServerTls(pair.cert, pair.key, self.pki.ca, verify_clients=True)
            node.nats = EmbeddedNats(
                self.directory / node.name / "nats", node.address,
                sync="always" if self.fsync else None, port=NATS_PORT,
                monitor_port=NATS_MONITOR_PORT, server_name=node.name, wrapper=wrapper,
                cluster=NatsCluster("ucloud", NATS_ROUTE_PORT,
                                    [r for name, r in routes.items() if name != node.name]),
                tls=tls,
            ).launch()
            node.etcd = EmbeddedEtcd(
                self.directory / node.name / "etcd", node.address, fsync=self.fsync,
                client_port=ETCD_PORT, peer_port=ETCD_PEER_PORT, member=node.name,
                cluster=EtcdCluster(peers, token=f"ucloud-{self.made.tag}"), wrapper=wrapper,
                tls=tls,
            ).launch()
        for node in nodes:
            assert node.nats is not None and node.etcd is not None
            node.nats.wait_ready()
            node.etcd.wait_ready()

    def _base_config(self) -> Config:
        assert self.underlay is not None
        base = cluster_config(self.directory, self.underlay, "", "")
        shared = self.directory / "shared"
        nats, etcd = msgspec.structs.replace(base.nats, replicas=3), base.etcd
        if self.pki is not None and self.client is not None:
            files = {"ca_file": str(self.pki.ca), "cert_file": str(self.client.cert),
                     "key_file": str(self.client.key)}
            nats = msgspec.structs.replace(nats, **files)
            etcd = msgspec.structs.replace(etcd, server_name=ETCD_NAME, **files)
        return msgspec.structs.replace(
            base, data_dir=str(self.directory / "data"), nats=nats, etcd=etcd,
            images=msgspec.structs.replace(
                base.images, dir=str(shared / "images"), disks_dir=str(shared / "disks"),
                files_dir=str(shared / "files"), shared=True, settle_s=0.5,
                scan_interval_s=0.5),
        )  # fmt: skip

    def _near(self, config: Config, n: int) -> Config:
        """``config`` listing control node ``n``'s servers first, then the others."""
        order = [n, *(m for m in CONTROL if m != n)]
        nats = [self.control[m].nats for m in order]
        etcd = [self.control[m].etcd for m in order]
        return msgspec.structs.replace(
            config,
            nats=msgspec.structs.replace(config.nats, url=",".join(s.url for s in nats if s)),
            etcd=msgspec.structs.replace(config.etcd, endpoints=[s.endpoint for s in etcd if s]),
        )

    def _plan(self) -> list[Process]:
        run = self.directory / "run"
        run.mkdir(exist_ok=True)
        planned: list[Process] = []
        counts: dict[str, int] = {}
        for service, n in PLACEMENT:
            counts[service] = counts.get(service, 0) + 1
            name = f"{service}{counts[service]}"
            node = self.control[n]
            planned.append(Process(name, service, node, node.settings, run))
        for host in self.hosts:
            for service in HOST_SERVICES if not self.is_hollow(host) else ("hostd",):
                planned.append(Process(f"{service}-{host.name}", service, host, host.settings,
                                       run))
        for process in planned:
            self.processes[process.name] = process
        return planned

    def _start_and_wait(self, processes: list[Process]) -> None:
        for process in processes:
            process.start()
        self._wait_ready(processes)

    def _wait_ready(self, processes: list[Process]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = list(processes)
        while waiting:
            for process in list(waiting):
                if process.ready() and (process.service != "gateway" or self._healthz(process)):
                    waiting.remove(process)
                elif not process.alive():
                    raise AssertionError(f"{process.name} ended:\n{process.output()}")
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in waiting)
                raise AssertionError(f"not ready within {READY_TIMEOUT_S:g}s: {names}")
            time.sleep(0.05)

    def _healthz(self, process: Process) -> bool:
        url = self.gateway_url(process.name)
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _wait_hosts_registered(self) -> None:
        """Until the projection holds every host (hostd registered it)."""
        prefix = self.config.etcd.prefix
        wanted = {f"{prefix}host/{h.config.host.id}" for h in self.hosts if h.config}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not wanted <= set(self.etcd_keys(prefix + "host/")):
            self.check()
            assert time.monotonic() < deadline, "the hosts did not register"
            time.sleep(0.1)

    # --- looking -----------------------------------------------------------------------

    def is_hollow(self, host: Node) -> bool:
        return host.config is not None and host.config.host.qemu == str(HOLLOW_QEMU)

    def gateway_url(self, name: str = "gateway1") -> str:
        node = self.processes[name].node
        return f"http://[{node.address}]:{GATEWAY_PORT}"

    @property
    def admin_secret_file(self) -> Path:
        return Path(self.config.gateway.bootstrap_admin_file)

    def etcd_keys(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, from the first live etcd member (its JSON gateway)."""
        body = json.dumps({
            "key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode(prefix[:-1].encode() + bytes([ord(prefix[-1]) + 1]))
            .decode(),
            "keys_only": True,
        }).encode()  # fmt: skip
        for node in self.control.values():
            if node.etcd is None or not node.etcd.running:
                continue
            request = urllib.request.Request(f"{node.etcd.url}/v3/kv/range", data=body)
            context = node.etcd.tls.context() if node.etcd.tls is not None else None
            try:
                with urllib.request.urlopen(request, timeout=3, context=context) as resp:
                    kvs = json.loads(resp.read()).get("kvs", [])
            except (urllib.error.URLError, OSError):
                continue
            return [base64.b64decode(kv["key"]).decode() for kv in kvs]
        raise AssertionError("no etcd member answers")

    def servers_of(self, name: str) -> tuple[set[str], set[str]]:
        """The control nodes whose nats-server and whose etcd member the process ``name``
        is connected to now (its established TCP connections, as the kernel has them)."""
        process = self.processes[name]
        out = process.node.space.sh("ss", "-Htnp", "state", "established")
        nats, etcd = set(), set()
        by_address = {node.address: node.name for node in self.control.values()}
        for line in out.splitlines():
            if not re.search(rf"pid={process.pid},", line):
                continue
            peer = line.split()[3]  # local, peer without the state column
            address, _, port = peer.rpartition(":")
            node = by_address.get(address.strip("[]"))
            if node and int(port) == NATS_PORT:
                nats.add(node)
            elif node and int(port) == ETCD_PORT:
                etcd.add(node)
        return nats, etcd

    def check(self) -> None:
        """Every process still runs; else an AssertionError with its log."""
        for process in self.processes.values():
            if process.popen is not None and not process.alive():
                raise AssertionError(f"{process.name} ended:\n{process.output()}")

    def _show_logs(self) -> None:
        for process in self.processes.values():
            print(f"--- {process.name} ({'running' if process.alive() else 'ended'}) ---")
            print(process.output(1500))
        for node in self.control.values():
            for server in (node.nats, node.etcd):
                log = server.directory / f"{server.name}.log" if server else None
                if log is not None and log.exists():
                    print(f"--- {server.name} of {node.name} ---")  # type: ignore[union-attr]
                    print(log.read_text(errors="replace")[-1500:])

    # --- faults ------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def restart(self, name: str) -> None:
        process = self.processes[name]
        process.stop()
        self._start_and_wait([process])

    def kill_nats(self, node: str) -> None:
        server = self._node(node).nats
        assert server is not None
        server.kill()

    def kill_etcd(self, node: str) -> None:
        server = self._node(node).etcd
        assert server is not None
        server.kill()

    def restart_nats(self, node: str) -> None:
        server = self._node(node).nats
        assert server is not None
        server.stop()
        server.start()

    def restart_etcd(self, node: str) -> None:
        server = self._node(node).etcd
        assert server is not None
        server.stop()
        server.start()

    def partition(self, node: str) -> None:
        """Cut ``node`` off the underlay: its namespace drops every packet but loopback's."""
        rules = (
            "table inet ucloud_partition {\n"
            "  chain input { type filter hook input priority -300; policy drop;\n"
            "    iif lo accept; }\n"
            "  chain output { type filter hook output priority -300; policy drop;\n"
            "    oif lo accept; }\n"
            "}\n"
        )
        space = self._node(node).space
        sh("ip", "netns", "exec", space.name, "nft", "-f", str(self._write(node, rules)))

    def heal(self, node: str) -> None:
        self._node(node).space.sh("nft", "delete", "table", "inet", "ucloud_partition")

    def _write(self, node: str, rules: str) -> Path:
        path = self.directory / f"partition-{node}.nft"
        path.write_text(rules)
        return path

    def _node(self, name: str) -> Node:
        return next(n for n in (*self.control.values(), *self.hosts) if n.name == name)

    # --- ending ------------------------------------------------------------------------

    def close(self) -> None:
        """Everything this cluster started ends; everything it made is removed."""
        for process in self.processes.values():  # all at once: they stop side by side
            process.terminate()
        for process in self.processes.values():
            process.stop()
        for host in self.hosts:
            if host.config is not None:
                kill_all(Path(host.config.host.runtime_dir))
                radvd = RadvdSupervisor(Path(host.config.data_dir).absolute() / "radvd")
                for vni in radvd.adopt_all():
                    radvd.stop(vni)
        for node in self.control.values():
            for server in (node.nats, node.etcd):
                if server is not None:
                    server.stop()
        self.made.close()
        shutil.rmtree(self.directory, ignore_errors=True)
