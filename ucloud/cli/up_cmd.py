"""``ucloud up``: everything on one machine, with all its data under one directory.

The data directory (``--data-dir``, default ``default_data_dir()``) holds::

    up.lock       locked (flock) while ``ucloud up`` runs there; holds its pid
    ucloud.toml   the settings of this all-in-one, written on the first start
    nats/         the embedded nats-server: JetStream store, log, ports
    etcd/         the embedded etcd: data, log, ports
    dns/          the TSIG key of DNS updates; knot/: the embedded knotd (when enabled)
    servers.json  pids of the embedded servers while they run
    up.json       where the running all-in-one listens (``UpInfo``); gone when stopped

Start: lock, stop leftovers of a run that was killed, nats-server, etcd, the stream, the
process's ``/metrics`` (``metrics.listen``, else a free port on ``[::1]``), every
registered service under the supervisor, ``up.json``, one line on stdout. SIGINT/SIGTERM:
``up.json`` goes, then the services, the connections, nats-server and etcd; the lock last.
Starting again on the same directory resumes the same stream and the same etcd data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import tomli_w

from ucloud import config as config_mod
from ucloud.cli.main import run_async
from ucloud.client.locate import default_data_dir
from ucloud.client.upfile import UP_FILE, UpInfo, write_up
from ucloud.config import Config
from ucloud.dns import service as dns_service
from ucloud.dns.updates import split_listen, tsig_key
from ucloud.errors import ServerError
from ucloud.logsetup import add_log_option, configure
from ucloud.metrics import ProcessMetrics, listening
from ucloud.servers import EmbeddedEtcd, EmbeddedKnot, EmbeddedNats
from ucloud.services import SERVICES
from ucloud.supervisor import Supervisor, connected, stop_on_signals

log = logging.getLogger(__name__)

LOCK_FILE = "up.lock"
SETTINGS_FILE = "ucloud.toml"
SERVERS_FILE = "servers.json"
EMBEDDED_MAX_TXN_OPS = 4096  # what EmbeddedEtcd passes to etcd as --max-txn-ops
GATEWAY_WAIT_S = 15.0  # how long "up" waits for the gateway to listen before saying so
METRICS_LISTEN = "[::1]:0"  # /metrics of the whole all-in-one when metrics.listen is unset


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "up",
        help="run everything on this machine (embedded nats-server and etcd, every service)",
        description="Run everything on this machine. Data (event log, etcd, settings) lives "
        "in the data directory; starting again on it resumes where it stopped.",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help=f"data directory (default {default_data_dir()}); settings in DIR/{SETTINGS_FILE} "
        "unless --config is given",
    )
    add_log_option(parser)
    parser.set_defaults(func=run_async(up))


async def up(args: argparse.Namespace) -> int:
    data_dir: Path = (args.data_dir or default_data_dir()).expanduser().absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    with hold_lock(data_dir), stop_on_signals() as stop:
        (data_dir / UP_FILE).unlink(missing_ok=True)
        stop_leftovers(data_dir)
        settings = Path(args.config) if args.config else ensure_settings(data_dir)
        base = config_mod.load(settings)
        configure(args.log_format or base.log.format, verbose=args.verbose, service="up")
        nats = EmbeddedNats(data_dir / "nats", sync=base.nats.sync)
        etcd = EmbeddedEtcd(data_dir / "etcd")
        knot: EmbeddedKnot | None = None
        try:
            await asyncio.to_thread(nats.start)
            _record_servers(data_dir, nats, etcd)
            if not stop.is_set():
                await asyncio.to_thread(etcd.start)
                _record_servers(data_dir, nats, etcd)
            config = with_servers(base, data_dir, nats.url, [etcd.endpoint])
            if not stop.is_set() and dns_service.enabled(config):
                knot = await asyncio.to_thread(embedded_knot(config).start)
                _record_servers(data_dir, nats, etcd, knot)
            if not stop.is_set():
                await _serve_all(config, data_dir, stop)
        finally:
            (data_dir / UP_FILE).unlink(missing_ok=True)
            nats.stop()
            etcd.stop()
            if knot is not None:
                knot.stop()
            (data_dir / SERVERS_FILE).unlink(missing_ok=True)
    log.info("ucloud up on %s stopped", data_dir)
    return 0


async def _serve_all(config: Config, data_dir: Path, stop: asyncio.Event) -> None:
    async with connected(config, "ucloud-up") as (event_log, store):
        await event_log.ensure_stream()
        metrics = ProcessMetrics(event_log)
        names = [n for n in SERVICES if n != "dns" or dns_service.enabled(config)]
        supervisor = Supervisor(config, event_log, store, names, metrics=metrics)
        async with listening(metrics, config.metrics.listen or METRICS_LISTEN) as metrics_url:
            await _supervise(config, data_dir, stop, supervisor, metrics_url)


async def _supervise(
    config: Config, data_dir: Path, stop: asyncio.Event, supervisor: Supervisor, metrics: str
) -> None:
    running = supervisor.start()
    try:
        gateway = gateway_url(config.gateway.listen) if "gateway" in running else ""
        if gateway and not await _answers(gateway, GATEWAY_WAIT_S, stop):
            log.warning("the gateway does not answer at %s yet; see the log above", gateway)
        info = UpInfo(
            gateway=gateway,
            nats=config.nats.url,
            etcd=list(config.etcd.endpoints),
            pid=os.getpid(),
            metrics=metrics,
        )
        write_up(data_dir, info)
        print(up_line(info, data_dir), flush=True)
        await stop.wait()
        log.info("stopping")
        (data_dir / UP_FILE).unlink(missing_ok=True)
    finally:
        await supervisor.stop()


async def _answers(url: str, timeout_s: float, stop: asyncio.Event) -> bool:
    """Whether something accepts TCP connections at ``url`` within ``timeout_s``."""
    address = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(address.hostname, address.port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


def up_line(info: UpInfo, data_dir: Path) -> str:
    gateway = info.gateway or "(no gateway service yet)"
    return (
        f"ucloud is up: gateway {gateway}, nats {info.nats}, etcd {','.join(info.etcd)}, "
        f"data {data_dir} (Ctrl-C stops)"
    )


def gateway_url(listen: str) -> str:
    """The URL to reach a gateway listening on ``listen`` (``[::]:8080`` -> ``[::1]``)."""
    host, _, port = listen.rpartition(":")
    host = {"[::]": "[::1]", "0.0.0.0": "127.0.0.1", "": "[::1]"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def embedded_knot(config: Config) -> EmbeddedKnot:
    """The all-in-one's knotd: every zone of ``[dns]`` at ``dns.server``."""
    host, port = split_listen(config.dns.server)
    zones = dns_service.zones_of(config)
    return EmbeddedKnot(
        config.paths.dns / "knot", host, port, tsig_key(dns_service.key_file(config)),
        [*zones.forward, *zones.reverse], dns_service.nameserver(config),
    )


def with_servers(base: Config, data_dir: Path, nats_url: str, endpoints: list[str]) -> Config:
    raw: dict[str, Any] = msgspec.to_builtins(base)
    raw["data_dir"] = str(data_dir)
    raw["nats"]["url"] = nats_url
    raw["etcd"]["endpoints"] = endpoints
    raw["host"]["router"] = True  # the only host routes the VM networks
    return config_mod.decode(raw)


# --- the lock and leftovers -------------------------------------------------------------


@contextlib.contextmanager
def hold_lock(data_dir: Path) -> Iterator[None]:
    """Hold ``up.lock`` for the block; another ``ucloud up`` on the directory is refused."""
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ServerError(
                f"ucloud up is already running on {data_dir} (pid {holder}); "
                "stop it first or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _record_servers(
    data_dir: Path, nats: EmbeddedNats, etcd: EmbeddedEtcd, knot: EmbeddedKnot | None = None
) -> None:
    children: list[tuple[str, EmbeddedNats | EmbeddedEtcd | EmbeddedKnot | None]] = [
        ("nats", nats), ("etcd", etcd), ("knot", knot)
    ]
    pids = {
        name: child.process.pid
        for name, child in children
        if child is not None and child.process is not None
    }
    (data_dir / SERVERS_FILE).write_text(json.dumps(pids) + "\n")


def stop_leftovers(data_dir: Path, timeout_s: float = 15.0) -> None:
    """Stop servers that a killed ``ucloud up`` on this directory left running.

    Only pids from ``servers.json`` whose command line names this directory are touched;
    we hold the lock, so no live ``ucloud up`` owns them.
    """
    path = data_dir / SERVERS_FILE
    try:
        pids: dict[str, int] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return
    for name, pid in pids.items():
        if not _runs_on(pid, data_dir):
            continue
        log.warning("stopping %s (pid %d) left running by an earlier ucloud up", name, pid)
        _terminate(pid, data_dir, timeout_s)
    path.unlink(missing_ok=True)


def _runs_on(pid: int, data_dir: Path) -> bool:
    """Whether ``pid`` is a live process whose command line names ``data_dir``.

    An exited process (even a zombie nobody reaps) has an empty command line.
    """
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(str(data_dir).encode() in arg for arg in argv)


def _terminate(pid: int, data_dir: Path, timeout_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _runs_on(pid, data_dir):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.05)


# --- the settings file ------------------------------------------------------------------


def ensure_settings(data_dir: Path) -> Path:
    """``DIR/ucloud.toml``, written with the all-in-one's settings when it does not exist."""
    path = data_dir / SETTINGS_FILE
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(render_settings(all_in_one_settings(data_dir)))
        tmp.replace(path)
        log.info("wrote %s", path)
    return path


def all_in_one_settings(data_dir: Path) -> dict[str, Any]:
    """What the all-in-one sets differently from the defaults, and where the gateway listens.

    Only keys that ``Config`` has are written (it refuses unknown ones). ``nats.url`` and
    ``etcd.endpoints`` are not: ``ucloud up`` picks them at each start (see ``up.json``).
    Defaults derived from the machine (host id from the hostname) are left to follow it.
    """
    defaults: dict[str, Any] = msgspec.to_builtins(Config())
    wanted: dict[str, dict[str, Any]] = {
        "etcd": {"max_txn_ops": EMBEDDED_MAX_TXN_OPS},
        "gateway": {
            "listen": defaults["gateway"]["listen"],
            "bootstrap_admin_file": str(data_dir / "admin.otp"),
        },
    }
    settings: dict[str, Any] = {"data_dir": str(data_dir)}
    for section, values in wanted.items():
        known = {k: v for k, v in values.items() if k in defaults.get(section, {})}
        if known:
            settings[section] = known
    return settings


_HEADER = """\
# Settings of the ucloud all-in-one on this directory, written by `ucloud up` on its first
# start. Edit and restart `ucloud up`; UCLOUD_<SECTION>__<KEY> variables override them.
# Every setting and its default: README.md, "Configuration". nats.url and etcd.endpoints
# are chosen at each start: see up.json while it runs.
"""


def render_settings(settings: Mapping[str, Any]) -> str:
    """The settings as a TOML file with the explanatory header (keys with None left out)."""
    return _HEADER + "\n" + tomli_w.dumps(_without_none(settings))


def _without_none(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value if v is not None]
    return value
