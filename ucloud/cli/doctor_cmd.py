"""``ucloud doctor``: whether this host has what ucloud needs, and the fix of what it lacks.

    ucloud doctor [--data-dir D] [--timeout S] [-o table|json]

The probes are real and read-only but one: the accelerator is chosen as hostd chooses it
(``hostd.service.accelerator``: under ``host.accel = auto`` a boot of the tiny guest under
KVM, cached in the data directory). The verdicts come from ``ucloud.doctor``. Exit 1 when
a check fails; a warning (TCG, no IPv6 forwarding on a router) is not a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from ucloud import config as config_mod
from ucloud.cli.main import run_async
from ucloud.client.locate import add_server_options, server_config
from ucloud.config import Config
from ucloud.doctor import HostFacts, checks, failed
from ucloud.errors import ConfigError, ExitCode, UcloudError
from ucloud.hostd.network import forwarding
from ucloud.natswire import redacted

REACH_TIMEOUT_S = 5.0
_MARK = {"ok": "ok    ", "warn": "warn  ", "fail": "NOT OK"}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "doctor", help="check what this host needs (KVM or TCG, networking, QEMU, servers)",
        description="Check what this host needs to run ucloud and print each as ok / not ok "
        "with the fix. Exit 1 when a check fails.",
    )
    parser.add_argument("--timeout", type=float, default=REACH_TIMEOUT_S,
                        help=f"seconds to wait for NATS and etcd (default {REACH_TIMEOUT_S:g})")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_server_options(parser)
    parser.set_defaults(func=run_async(doctor))


async def doctor(args: argparse.Namespace) -> int:
    config = _config(args)
    facts = await probe(config, args.timeout)
    found = checks(facts)
    if args.output == "json":
        sys.stdout.write(msgspec.json.encode(found).decode() + "\n")
    else:
        width = max(len(check.name) for check in found)
        for check in found:
            line = f"{_MARK[check.level]}  {check.name:<{width}}  {check.detail}"
            print(line + (f"\n        fix: {check.fix}" if check.fix and check.level != "ok"
                          else ""))
    return int(ExitCode.FAILED if failed(found) else ExitCode.OK)


def _config(args: argparse.Namespace) -> Config:
    data_dir: Path | None = args.data_dir
    try:
        return server_config(args)
    except ConfigError:
        if data_dir is None or not (data_dir / "ucloud.toml").exists():
            raise
        return config_mod.load(data_dir / "ucloud.toml")  # its all-in-one is not running


async def probe(config: Config, timeout_s: float) -> HostFacts:
    """The facts ``checks`` judges, probed on this host."""
    from ucloud.hostd.service import accelerator

    host = config.host
    accel = accelerator(config)
    chosen = await accel.get()
    cached = accel.cached()
    probed = host.accel == "auto" and cached is not None and cached.accel == chosen
    reason = cached.reason if probed and cached is not None else _why(config)
    programs = {name: shutil.which(name) or "" for name in
                ("qemu-img", "nft", "radvd", "ip")}
    programs["qemu-system-x86_64"] = shutil.which(host.qemu) or ""
    nats_error, etcd_error = await asyncio.gather(
        _nats(config, timeout_s), _etcd(config, timeout_s)
    )
    images = config.paths.images
    return HostFacts(
        accel=chosen, accel_reason=reason, programs=programs, root=os.geteuid() == 0,
        tun=Path("/dev/net/tun").exists(), bridge_module=Path("/sys/module/bridge").exists(),
        vxlan_module=Path("/sys/module/vxlan").exists(), forwarding=forwarding(),
        router=host.router, address=host.address, address_local=_local(host.address),
        qemu_version=_run(host.qemu, "--version"), qemu_img_version=_run("qemu-img", "--version"),
        images_dir=str(images), free_gib=_free_gib(images),
        nats_url=redacted(config.nats.url), nats_error=nats_error,
        etcd_endpoints=",".join(config.etcd.endpoints), etcd_error=etcd_error,
    )


def _why(config: Config) -> str:
    if config.host.accel != "auto":
        return f"host.accel = {config.host.accel}"
    return "no /dev/kvm" if not Path("/dev/kvm").exists() else "the KVM probe could not run"


def _run(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _local(address: str) -> bool:
    """Whether ``address`` is on an interface here (binding to it works)."""
    if not address:
        return False
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def _free_gib(path: Path) -> float:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / (1 << 30)


async def _nats(config: Config, timeout_s: float) -> str:
    from ucloud.eventlog import EventLog

    try:
        async with asyncio.timeout(timeout_s):
            log = await EventLog.connect(config.nats, name="ucloud-doctor")
            await log.close()
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except UcloudError as exc:
        return str(exc)
    return ""


async def _etcd(config: Config, timeout_s: float) -> str:
    from ucloud.store import Store

    store: Store | None = None
    try:
        async with asyncio.timeout(timeout_s):
            store = await Store.open(config.etcd)
            await store.get(config.etcd.prefix + "_checkpoint/doctor")
    except TimeoutError:
        return f"no answer within {timeout_s:g}s"
    except (UcloudError, OSError) as exc:
        return str(exc)
    finally:
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()
    return ""
