"""radvd for the networks a router host serves: one supervised radvd per IPAM auto network.

Theory of operation. ``radvd_conf`` (pure) says what one network's bridge advertises: its
/64 on-link and for SLAAC, the link MTU, the DNS servers (RDNSS) and, only when the host
forwards IPv6, itself as default router (a router lifetime of 0 otherwise: the VMs reach
the /64 and the router, nothing beyond). ``RadvdSupervisor`` keeps one ``radvd --nodaemon``
per VNI with ``<dir>/<vni>.conf``, ``.pid`` and ``.log``:

- ``ensure(vni, text)`` writes the config when it changed; a running radvd rereads it
  (SIGHUP), a missing one is started;
- ``stop(vni)`` ends it (SIGTERM, SIGKILL after a grace period) and removes its files;
- ``check(now)`` starts again each radvd that died, no sooner than its backoff allows
  (doubling from 1 s up to 60 s; a run of a minute resets it).

radvd runs in a session of its own and outlives hostd, as VMs do: a restarted hostd adopts
a radvd whose pid file names a live process started with its config.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ucloud.errors import NetworkError

log = logging.getLogger(__name__)

MAX_INTERVAL_S = 30  # unsolicited adverts at most this far apart (VMs also solicit them)
MIN_INTERVAL_S = 10
ROUTER_LIFETIME_S = 1800
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
STABLE_S = 60.0
STOP_WAIT_S = 5.0


def radvd_conf(
    bridge: str, prefix: str, *, mtu: int, rdnss: Sequence[str], default_router: bool
) -> str:
    """The radvd config advertising ``prefix`` (a /64) on ``bridge``."""
    lines = [
        f"interface {bridge} {{",
        "\tAdvSendAdvert on;",
        f"\tMinRtrAdvInterval {MIN_INTERVAL_S};",
        f"\tMaxRtrAdvInterval {MAX_INTERVAL_S};",
        f"\tAdvDefaultLifetime {ROUTER_LIFETIME_S if default_router else 0};",
        f"\tAdvLinkMTU {mtu};",
        f"\tprefix {prefix} {{",
        "\t\tAdvOnLink on;",
        "\t\tAdvAutonomous on;",
        "\t};",
    ]
    if rdnss:
        lines += [f"\tRDNSS {' '.join(rdnss)} {{", "\t};"]
    lines.append("};")
    return "\n".join(lines) + "\n"


@dataclass
class _Daemon:
    vni: int
    process: subprocess.Popen[bytes] | None = None  # None: adopted from an earlier hostd
    pid: int = 0
    started: float = 0.0
    failures: int = 0
    next_start: float = 0.0
    reported: bool = field(default=False, repr=False)


class RadvdSupervisor:
    """One radvd per VNI, with its files under ``directory``."""

    def __init__(self, directory: Path, binary: str = "") -> None:
        self.directory = directory
        self.binary = binary or shutil.which("radvd") or "/usr/sbin/radvd"
        self.daemons: dict[int, _Daemon] = {}

    def paths(self, vni: int) -> tuple[Path, Path, Path]:
        base = self.directory / str(vni)
        return base.with_suffix(".conf"), base.with_suffix(".pid"), base.with_suffix(".log")

    def running(self) -> list[int]:
        """The VNIs whose radvd is alive."""
        return sorted(vni for vni, daemon in self.daemons.items() if self._alive(daemon))

    def ensure(self, vni: int, text: str, now: float | None = None) -> None:
        """radvd for ``vni`` runs with config ``text``."""
        now = time.monotonic() if now is None else now
        conf, _, _ = self.paths(vni)
        self.directory.mkdir(parents=True, exist_ok=True)
        changed = not conf.exists() or conf.read_text() != text
        if changed:
            tmp = conf.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(conf)
        daemon = self.daemons.get(vni) or self._adopt(vni)
        if daemon is not None and self._alive(daemon):
            if changed:
                log.info("radvd for vni %d: config changed, reloading", vni)
                os.kill(daemon.pid, signal.SIGHUP)
            return
        daemon = daemon or _Daemon(vni)
        self.daemons[vni] = daemon
        if now >= daemon.next_start:
            self._start(daemon, now)

    def check(self, now: float | None = None) -> None:
        """Start again each radvd that died, once its backoff has passed."""
        now = time.monotonic() if now is None else now
        for daemon in list(self.daemons.values()):
            if self._alive(daemon):
                continue
            if not daemon.reported:
                daemon.reported = True
                ran = now - daemon.started
                daemon.failures = 1 if ran >= STABLE_S else daemon.failures + 1
                delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (daemon.failures - 1))
                daemon.next_start = now + delay
                _, _, logfile = self.paths(daemon.vni)
                log.warning("radvd for vni %d died (see %s); starting again in %gs",
                            daemon.vni, logfile, delay)
            if now >= daemon.next_start:
                self._start(daemon, now)

    def stop(self, vni: int) -> None:
        """No radvd for ``vni``; its files are gone."""
        daemon = self.daemons.pop(vni, None) or self._adopt(vni)
        if daemon is not None and self._alive(daemon):
            self._terminate(daemon)
        for path in self.paths(vni):
            path.unlink(missing_ok=True)

    def adopt_all(self) -> list[int]:
        """Adopt the radvd processes an earlier hostd left; the VNIs of those alive."""
        if not self.directory.is_dir():
            return []
        for conf in self.directory.glob("*.conf"):
            if conf.stem.isdigit() and int(conf.stem) not in self.daemons:
                daemon = self._adopt(int(conf.stem))
                if daemon is not None:
                    self.daemons[daemon.vni] = daemon
        return self.running()

    # --- processes ----------------------------------------------------------------------

    def _start(self, daemon: _Daemon, now: float) -> None:
        conf, pidfile, logfile = self.paths(daemon.vni)
        pidfile.unlink(missing_ok=True)
        with logfile.open("ab") as out:
            try:
                daemon.process = subprocess.Popen(
                    [self.binary, "--nodaemon", "--config", str(conf), "--pidfile", str(pidfile),
                     "--logmethod", "stderr"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                )
            except OSError as exc:
                raise NetworkError(f"radvd: cannot run {self.binary}: {exc}") from exc
        daemon.pid = daemon.process.pid
        daemon.started = now
        daemon.reported = False
        log.info("radvd for vni %d started (pid %d)", daemon.vni, daemon.pid)

    def _adopt(self, vni: int) -> _Daemon | None:
        conf, pidfile, _ = self.paths(vni)
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _runs_with(pid, conf):
            return None
        log.info("radvd for vni %d adopted (pid %d)", vni, pid)
        return _Daemon(vni, None, pid, time.monotonic())

    def _alive(self, daemon: _Daemon) -> bool:
        if daemon.process is not None:
            return daemon.process.poll() is None
        conf, _, _ = self.paths(daemon.vni)
        return _runs_with(daemon.pid, conf)

    def _terminate(self, daemon: _Daemon) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        while self._alive(daemon) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._alive(daemon):
            with contextlib.suppress(ProcessLookupError):
                os.kill(daemon.pid, signal.SIGKILL)
            if daemon.process is not None:
                daemon.process.wait(STOP_WAIT_S)
        log.info("radvd for vni %d stopped", daemon.vni)


def _runs_with(pid: int, conf: Path) -> bool:
    """Whether ``pid`` is a live process whose command line names ``conf``."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(conf).encode() in argv
