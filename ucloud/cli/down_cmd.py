"""``ucloud down``: stop an all-in-one, and with ``--vms`` what its hostd left running.

    ucloud down [--data-dir D] [--vms] [--timeout S]

``ucloud up`` leaves VMs and their plumbing running when it stops (a host's VMs outlive
its hostd). ``down`` is for trying ucloud: it ends the ``ucloud up`` of the directory
(SIGTERM to the pid in ``up.json``, else in ``up.lock``; it waits until the lock is free,
at most ``--timeout`` seconds, and says so when it is not), then takes the lock itself
and stops the embedded servers a killed ``up`` left (as ``up`` does at its start).

With ``--vms``, everything hostd made for the directory's VMs goes too, through hostd's
own code: each QEMU found in the runtime directory (``Machine.shutdown``: QMP ``quit``,
SIGKILL after a bound), its taps and their anti-spoofing rules
(``LinuxPlumbing.detach``), every segment (bridge and VXLAN) of this host and the radvd
of each (``LinuxPlumbing.route([])``), and the nftables table ``bridge ucloud`` when no
port is left in it. Disks and the data directory stay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ucloud import config as config_mod
from ucloud.cli.main import run_async
from ucloud.cli.up_cmd import LOCK_FILE, SETTINGS_FILE, hold_lock, stop_leftovers
from ucloud.client.locate import default_data_dir
from ucloud.client.upfile import UP_FILE, read_up
from ucloud.config import Config
from ucloud.errors import ExitCode, UcloudError
from ucloud.hostd import antispoof
from ucloud.hostd.lookup import plans_of
from ucloud.hostd.machine import Machine
from ucloud.hostd.plumbing import NicPlan
from ucloud.hostd.qemu import QemuProcess, RuntimeDir

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 60.0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "down",
        help="stop the all-in-one of a data directory (with --vms: its VMs and networks too)",
        description="Stop the `ucloud up` running on the data directory, and the servers a "
        "killed one left. With --vms, also every VM's QEMU of the directory, their taps, the "
        "bridges, VXLANs and radvd hostd made, and the nftables table `bridge ucloud`.",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help=f"data directory of the all-in-one (default {default_data_dir()})",
    )
    parser.add_argument(
        "--vms", action="store_true", help="stop the VMs and remove their network plumbing"
    )
    parser.add_argument(
        "--timeout", type=float, default=STOP_TIMEOUT_S,
        help=f"seconds to wait for `ucloud up` to stop (default {STOP_TIMEOUT_S:g})",
    )
    parser.set_defaults(func=run_async(down))


async def down(args: argparse.Namespace) -> int:
    data_dir: Path = (args.data_dir or default_data_dir()).expanduser().absolute()
    if not data_dir.is_dir():
        print(f"nothing to stop: {data_dir} does not exist")
        return int(ExitCode.OK)
    pid = up_pid(data_dir)
    if pid is not None:
        print(f"stopping ucloud up (pid {pid}) on {data_dir}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not await asyncio.to_thread(wait_unlocked, data_dir, args.timeout):
            print(f"ucloud up (pid {pid}) did not stop within {args.timeout:g}s; "
                  "it still holds the directory (run down again, or kill it)")
            return int(ExitCode.TIMEOUT)
    code = ExitCode.OK
    with hold_lock(data_dir):
        stop_leftovers(data_dir)
        (data_dir / UP_FILE).unlink(missing_ok=True)
        if args.vms:
            config = _config(args, data_dir)
            code = await stop_vms(config)
    print(f"ucloud on {data_dir} is down")
    return int(code)


def up_pid(data_dir: Path) -> int | None:
    """The pid of the ``ucloud up`` holding ``data_dir``, or None when none holds it."""
    if not locked(data_dir):
        return None
    with contextlib.suppress(UcloudError):
        pid = read_up(data_dir).pid
        if pid:
            return pid
    try:
        return int((data_dir / LOCK_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def locked(data_dir: Path) -> bool:
    """Whether a process holds ``up.lock`` of ``data_dir``."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def wait_unlocked(data_dir: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while locked(data_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _config(args: argparse.Namespace, data_dir: Path) -> Config:
    if args.config:
        return config_mod.load(Path(args.config))
    settings = data_dir / SETTINGS_FILE
    if settings.exists():
        return config_mod.load(settings)
    return config_mod.decode({"data_dir": str(data_dir)})


async def stop_vms(config: Config) -> ExitCode:
    """Every VM of ``config``'s runtime directory stopped; the host's VM plumbing gone."""
    code = ExitCode.OK
    nics: list[NicPlan] = []
    root = config.paths.runtime
    qemu = QemuProcess()
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        runtime = RuntimeDir(root, directory.name)
        spec = runtime.read_spec()
        if spec is not None:
            nics += _plans(spec)
        try:
            how = await Machine(runtime, qemu).shutdown(0)
        except UcloudError as exc:
            print(f"vm {runtime.vm}: {exc}")
            code = ExitCode.FAILED
            continue
        if how != "was not running":
            print(f"vm {runtime.vm}: stopped ({how})")
    unplumbed = await asyncio.to_thread(_unplumb, config, nics)
    return unplumbed or code


def _plans(spec: Any) -> list[NicPlan]:
    if spec.networks is not None:
        return plans_of(spec, spec.networks)
    # networks not kept: the taps are named by VM and index alone; segments go below
    return [NicPlan(vm=spec.vm, index=index, network=nic.network, vni=0, prefix="", ipam="",
                    mac=nic.mac) for index, nic in enumerate(spec.nics)]


def _unplumb(config: Config, nics: list[NicPlan]) -> ExitCode | None:
    from ucloud.hostd.network import plumbing

    linux = plumbing(config)
    if linux is None:
        return None  # not root or no tun: hostd made no plumbing here
    try:
        linux.detach(nics)
        linux.radvd.adopt_all()
        linux.route([], default_router=False)
        _drop_table_when_empty()
    except UcloudError as exc:
        print(f"network: {exc}")
        return ExitCode.FAILED
    return None


def _drop_table_when_empty() -> None:
    """Delete ``bridge ucloud`` unless some port (of another all-in-one) still has rules."""
    nft = shutil.which("nft")
    if nft is None:
        return
    shown = subprocess.run([nft, "list", "map", *antispoof.TABLE.split(), "ports"],
                           capture_output=True, text=True, timeout=30, check=False)
    if shown.returncode != 0:
        return  # no table
    if "elements" in shown.stdout:
        log.info("nftables table %s still holds ports; kept", antispoof.TABLE)
        return
    subprocess.run([nft, "delete", "table", *antispoof.TABLE.split()],
                   capture_output=True, text=True, timeout=30, check=False)
    print(f"nftables table {antispoof.TABLE} removed")
