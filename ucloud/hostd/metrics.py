"""Per-VM counters of this host, read at scrape time from QEMU and the kernel.

For every VM hostd knows whose QEMU lives (``Machine.runs``):

- CPU: user plus system time of the QEMU process (``/proc/<pid>/stat``, fields 14 and 15,
  in clock ticks), which is the guest's vCPUs plus QEMU's own emulation work;
- disks: QMP ``query-blockstats`` of each drive (bytes and operations read and written),
  only while hostd holds the VM's QMP session (a VM being started or reattached is left
  out of that scrape rather than waited for);
- network: each tap QEMU was started with (``ifname=`` on its command line), from
  ``/sys/class/net/<tap>/statistics``. The counters are the tap's: what the host sent
  into the tap is what the guest received (``rx`` here is the guest's receive).

Nothing here changes a VM; every read that fails (QEMU gone between two reads, a tap
removed) leaves that VM's sample out of the scrape.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ucloud.errors import VmError
from ucloud.hostd.machine import Machine
from ucloud.metrics import Gatherer

log = logging.getLogger(__name__)

PROC = Path("/proc")
SYS_NET = Path("/sys/class/net")
QMP_TIMEOUT_S = 2.0

_DISK = {  # query-blockstats "stats" field -> (metric suffix, help)
    "rd_bytes": ("disk_read_bytes", "Bytes the guest read from the drive."),
    "wr_bytes": ("disk_written_bytes", "Bytes the guest wrote to the drive."),
    "rd_operations": ("disk_reads", "Read operations of the guest on the drive."),
    "wr_operations": ("disk_writes", "Write operations of the guest on the drive."),
}
_NET = {  # guest's view -> tap statistics file
    "network_received_bytes": ("tx_bytes", "Bytes the guest received on the NIC."),
    "network_sent_bytes": ("rx_bytes", "Bytes the guest sent on the NIC."),
    "network_received_packets": ("tx_packets", "Packets the guest received on the NIC."),
    "network_sent_packets": ("rx_packets", "Packets the guest sent on the NIC."),
}


def cpu_seconds(stat: str, ticks_per_s: int) -> float:
    """User plus system time from the text of ``/proc/<pid>/stat``."""
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def taps_of(cmdline: bytes) -> list[str]:
    """The tap names of ``-netdev tap,...,ifname=<tap>`` in a NUL-separated command line."""
    taps = []
    for arg in cmdline.split(b"\0"):
        if arg.startswith(b"tap,"):
            for option in arg.decode(errors="replace").split(","):
                if option.startswith("ifname="):
                    taps.append(option.removeprefix("ifname="))
    return taps


def _read_counter(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


async def _blockstats(machine: Machine) -> list[dict[str, Any]]:
    session = machine.session if machine.attached() else None
    if session is None:
        return []
    try:
        found = await session.execute("query-blockstats", timeout=QMP_TIMEOUT_S)
    except VmError as exc:
        log.debug("vm %s: no block statistics: %s", machine.vm, exc)
        return []
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def vm_gatherer(machines: Mapping[str, Machine], host: str) -> Gatherer:
    """The families of the VMs in ``machines`` (hostd's, read at each scrape)."""
    ticks = os.sysconf("SC_CLK_TCK")

    async def gather() -> list[Metric]:
        labels = ["host", "vm"]
        cpu = CounterMetricFamily(
            "ucloud_vm_cpu_seconds", "CPU time of the VM's QEMU (vCPUs and emulation).",
            labels=labels,
        )
        running = GaugeMetricFamily("ucloud_vm_running", "VMs whose QEMU lives on this host.",
                                    labels=["host"])
        disks = {field: CounterMetricFamily(f"ucloud_vm_{name}", text, labels=[*labels, "drive"])
                 for field, (name, text) in _DISK.items()}
        nets = {name: CounterMetricFamily(f"ucloud_vm_{name}", text, labels=[*labels, "tap"])
                for name, (_, text) in _NET.items()}
        alive = 0
        for vm, machine in sorted(machines.items()):
            pid = machine.qemu.pid(machine.runtime)
            if pid is None:
                continue
            try:
                stat = (PROC / str(pid) / "stat").read_text()
                cmdline = (PROC / str(pid) / "cmdline").read_bytes()
            except OSError:
                continue  # gone since
            alive += 1
            cpu.add_metric([host, vm], cpu_seconds(stat, ticks))
            for drive in await _blockstats(machine):
                name = drive.get("device") or drive.get("qdev") or drive.get("node-name", "")
                stats = drive.get("stats", {})
                for field, family in disks.items():
                    if isinstance(stats.get(field), int):
                        family.add_metric([host, vm, str(name)], stats[field])
            for tap in taps_of(cmdline):
                for name, (file, _) in _NET.items():
                    value = _read_counter(SYS_NET / tap / "statistics" / file)
                    if value is not None:
                        nets[name].add_metric([host, vm, tap], value)
        running.add_metric([host], alive)
        return [running, cpu, *disks.values(), *nets.values()]

    return gather
