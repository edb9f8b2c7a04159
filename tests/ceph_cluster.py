"""A single-node Ceph cluster for tests: one mon, one mgr, one memstore OSD, auth none.

Everything lives in one temporary directory on loopback: the config file, the monitor's
store, the OSD (its data is kept in memory by memstore) and the daemons' logs. Readiness is
read from the cluster itself (the monitor answers ``osd new``; ``osd stat`` reports the OSD
up and in; ``rbd pool init`` returns once the pool's placement groups are active), never
slept for. ``stop`` kills the daemons and deletes the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 90.0
POOL = "ucloud"

_CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = /dev/null
run dir = {dir}/run
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
[mon]
mon data = {dir}/mon/$cluster-$id
log file = {dir}/log/$name.log
[mgr]
mgr data = {dir}/mgr/$cluster-$id
log file = {dir}/log/$name.log
[osd]
osd data = {dir}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
log file = {dir}/log/$name.log
"""


class CephError(RuntimeError):
    """The test cluster did not come up; carries the tail of the daemons' logs."""


class CephCluster:
    """A running single-node cluster; ``conf`` is its config file, ``pool`` an RBD pool."""

    def __init__(self, directory: Path, pool: str = POOL) -> None:
        self.directory = directory
        self.conf = directory / "ceph.conf"
        self.pool = pool
        self.started_s = 0.0
        self._daemons: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def start(cls, directory: Path, pool: str = POOL, memstore_mib: int = 1024) -> CephCluster:
        """Create and start the cluster in ``directory`` (which it then owns)."""
        cluster = cls(directory, pool)
        began = time.monotonic()
        try:
            cluster._bootstrap(memstore_mib)
        except BaseException:
            cluster.stop()
            raise
        cluster.started_s = time.monotonic() - began
        return cluster

    def __enter__(self) -> CephCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def ceph(self, *args: str, timeout: float = 30.0) -> str:
        """Run the ``ceph`` command against this cluster; its stdout."""
        return self._run("ceph", "--connect-timeout", str(int(timeout)), *args, timeout=timeout)

    def rbd(self, *args: str, timeout: float = 30.0) -> str:
        return self._run("rbd", *args, timeout=timeout)

    def stop(self) -> None:
        """Kill the daemons (memstore keeps nothing worth a clean shutdown), delete the dir."""
        for daemon in self._daemons.values():
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGKILL)
        for daemon in self._daemons.values():
            daemon.wait(timeout=30)
        self._daemons.clear()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _bootstrap(self, memstore_mib: int) -> None:
        for sub in ("run", "log", "mon", "mgr", "osd/ceph-0"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        fsid, port = str(uuid.uuid4()), _free_port()
        memstore_bytes = memstore_mib << 20
        self.conf.write_text(
            _CONF.format(fsid=fsid, port=port, dir=self.directory, memstore_bytes=memstore_bytes)
        )
        monmap = self.directory / "monmap"
        self._run(
            "monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[v2:127.0.0.1:{port}]",
            str(monmap),
        )
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(monmap))
        self._spawn("mon.a", "ceph-mon", "-i", "a")
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph("osd", "new", osd_uuid, "0").strip()  # answers once the mon is up
        if osd_id != "0":
            raise CephError(f"the new OSD got id {osd_id!r}, not 0")
        self._run("ceph-osd", "--mkfs", "-i", "0", "--osd-uuid", osd_uuid)
        self._spawn("osd.0", "ceph-osd", "-i", "0")
        self._spawn("mgr.x", "ceph-mgr", "-i", "x")
        self.ceph("osd", "pool", "create", self.pool, "8", "8")  # while the OSD boots
        self._wait_osd_up()
        self.rbd("pool", "init", self.pool, timeout=60.0)

    def _wait_osd_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            self._check_daemons()
            stat = json.loads(self.ceph("osd", "stat", "--format", "json"))
            if stat["num_up_osds"] == 1 and stat["num_in_osds"] == 1:
                return
            if time.monotonic() > deadline:
                raise CephError(f"the OSD did not come up: {stat}{self._logs()}")
            time.sleep(0.1)

    def _spawn(self, name: str, *argv: str) -> None:
        log = (self.directory / "log" / f"{name}.out").open("wb")
        with log:
            self._daemons[name] = subprocess.Popen(
                [*argv, "-f", "-c", str(self.conf)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )

    def _check_daemons(self) -> None:
        for name, daemon in self._daemons.items():
            if daemon.poll() is not None:
                raise CephError(f"{name} exited with {daemon.returncode}{self._logs()}")

    def _run(self, tool: str, *args: str, timeout: float = 30.0) -> str:
        """Run a Ceph tool with this cluster's config file; its stdout."""
        argv = [tool, *args] if tool == "monmaptool" else [tool, "-c", str(self.conf), *args]
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                check=False, env={**os.environ, "CEPH_ARGS": ""},
            )
        except subprocess.TimeoutExpired as exc:
            raise CephError(f"{' '.join(argv)}: no answer in {timeout:g}s{self._logs()}") from exc
        if done.returncode != 0:
            raise CephError(f"{' '.join(argv)}: {done.stderr.strip()[-800:]}{self._logs()}")
        return done.stdout

    def _logs(self) -> str:
        tails = []
        for path in sorted((self.directory / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            if lines:
                tails.append(f"\n--- {path.name}\n" + "\n".join(lines))
        return "".join(tails)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
