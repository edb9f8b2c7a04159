"""Host registration: this machine's facts in the log, appended only when they change.

A host's facts are its capacity (from the ``[host]`` config, else detected: CPUs, MemTotal
from ``/proc/meminfo``, the size of the disk holding the data directory as ssd, no hdd),
its underlay IPv6 address and whether it is a router. hostd appends
``host.<id>.registered`` when the host is new or one of its facts differs from its last
registration; a restart with the same facts appends nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from ucloud.config import HostConfig
from ucloud.eventlog import EventLog
from ucloud.events import HostRegistered, Resources, subject
from ucloud.ids import new_id

log = logging.getLogger(__name__)

MEMINFO = Path("/proc/meminfo")


def parse_meminfo(text: str) -> int:
    """MemTotal in MiB from the text of ``/proc/meminfo``; 0 when it is not there."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemTotal":
            return int(rest.split()[0]) // 1024  # the kernel counts in kB (KiB)
    return 0


def detect(data_dir: Path, meminfo: Path = MEMINFO) -> Resources:
    """This machine's capacity as the kernel and the file system tell it."""
    try:
        ram = parse_meminfo(meminfo.read_text())
    except OSError:
        ram = 0
    existing = data_dir.resolve()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    disk = shutil.disk_usage(existing).total // (1024 * 1024)
    return Resources(cpu=os.cpu_count() or 1, ram_mib=ram, ssd_mib=disk, hdd_mib=0)


def capacity(host: HostConfig, detected: Resources) -> Resources:
    """The configured amounts, and the detected ones where none is configured."""
    return Resources(
        cpu=detected.cpu if host.cpu is None else host.cpu,
        ram_mib=detected.ram_mib if host.ram_mib is None else host.ram_mib,
        ssd_mib=detected.ssd_mib if host.ssd_mib is None else host.ssd_mib,
        hdd_mib=detected.hdd_mib if host.hdd_mib is None else host.hdd_mib,
    )


def registration(
    host: HostConfig, amounts: Resources, last: HostRegistered | None, event_id: str, at: datetime
) -> HostRegistered | None:
    """The registration to append, or None when the last one says the same (pure)."""
    if (
        last is not None
        and last.capacity == amounts
        and last.address == host.address
        and last.router == host.router
    ):
        return None
    return HostRegistered(
        id=event_id, at=at, actor=f"system:hostd:{host.id}", host=host.id, capacity=amounts,
        address=host.address, router=host.router,
    )


async def last_registration(event_log: EventLog, host_id: str) -> HostRegistered | None:
    records = await event_log.records(subject("host", host_id, "registered"))
    for record in reversed(records):
        event = record.event()
        if isinstance(event, HostRegistered):
            return event
    return None


async def register(event_log: EventLog, host: HostConfig, data_dir: Path) -> HostRegistered | None:
    """Append this host's registration if it is new or changed; returns what was appended."""
    amounts = capacity(host, detect(data_dir))
    last = await last_registration(event_log, host.id)
    event = registration(host, amounts, last, new_id(), datetime.now(UTC))
    if event is None:
        log.info("host %s is registered with the same facts", host.id)
        return None
    await event_log.append(event)
    log.info(
        "host %s registered: %d CPUs, %d MiB RAM, %d MiB ssd, %d MiB hdd, address %s%s",
        host.id, amounts.cpu, amounts.ram_mib, amounts.ssd_mib, amounts.hdd_mib,
        host.address or "(none)", ", router" if host.router else "",
    )
    return event
