"""A VM's spec from request to host command to runtime spec, and commands of before it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ucloud import events as ev
from ucloud.errors import InputError
from ucloud.eventlog import EventLog
from ucloud.events import Nic, NicNetwork, Resolved, Resources, VmSpec
from ucloud.events.types import spec_fields
from ucloud.hostd import lookup
from ucloud.hostd.plumbing import NicPlan
from ucloud.hostd.qemu import RuntimeDir, StartSpec
from ucloud.ids import new_id

AT = datetime(2026, 1, 1, tzinfo=UTC)
VM = "01a1fcc3-df5b-78ac-9eef-cf1afcf47f42"
SPEC = Resources(cpu=2, ram_mib=2048, ssd_mib=10_240, hdd_mib=512)
NICS = (Nic(network="n1", mac="02:00:00:00:00:01"), Nic(network="n2", mac="02:00:00:00:00:02"))
NETWORKS = (
    NicNetwork(network="n1", vni=101, prefix="2001:db8:0:1::/64", ipam="auto"),
    NicNetwork(network="n2", vni=102),
)

# host.vm_start as commands were stored before they carried ``resolved``
OLD_START = {
    "type": "host.vm_start", "id": "01a1fcc4-0000-7000-8000-000000000001",
    "at": "2026-01-01T00:00:00Z", "actor": "system:dispatcher",
    "causation": "01a1fcc4-0000-7000-8000-000000000000",
    "correlation": "01a1fcc4-0000-7000-8000-000000000000", "host": "h1", "vm": VM,
    "owner": "alice", "name": "web", "spec": {"cpu": 2, "ram_mib": 2048, "ssd_mib": 10240,
                                              "hdd_mib": 512},
    "image": "tiny", "nics": [{"network": "n1", "mac": "02:00:00:00:00:01"},
                              {"network": "n2", "mac": "02:00:00:00:00:02"}],
    "restart": "never",
}  # fmt: skip
# vm.json as hostd wrote it before it kept the networks
OLD_VM_JSON = {
    "vm": VM, "owner": "alice", "name": "web", "spec": {"cpu": 2, "ram_mib": 2048,
    "ssd_mib": 10240, "hdd_mib": 512}, "image": "tiny", "store": "rbd",
    "nics": [{"network": "n1", "mac": "02:00:00:00:00:01"}], "restart": "always",
}  # fmt: skip


def request() -> ev.VmRequested:
    return ev.VmRequested(
        id=new_id(), at=AT, actor="alice", vm=VM, owner="alice", name="web", spec=SPEC,
        image="tiny", nics=NICS, keys=("ssh-ed25519 AAAA",), restart="never", order="o1",
    )


def test_the_spec_travels_whole_from_request_to_command_to_hostd() -> None:
    spec = request().vm_spec()
    assert spec == VmSpec(vm=VM, owner="alice", name="web", spec=SPEC, image="tiny", nics=NICS,
                          restart="never")  # fmt: skip
    resolved = Resolved(store="rbd", networks=NETWORKS)
    start = ev.HostVmStart.of({"id": new_id(), "at": AT, "actor": "d"}, "h1", spec, resolved)
    wire = ev.decode(ev.encode(start))
    assert wire == start and isinstance(wire, ev.HostVmStart)
    assert wire.vm_spec() == spec
    started = lookup.spec_of_command(wire)
    assert isinstance(started, VmSpec) and VmSpec(**spec_fields(started)) == spec
    assert (started.store, started.networks) == ("rbd", NETWORKS)


def test_an_old_start_command_decodes_with_nothing_resolved() -> None:
    old = ev.decode(json.dumps(OLD_START).encode())
    assert isinstance(old, ev.HostVmStart) and old.resolved is None
    assert old.vm_spec() == VmSpec(vm=VM, owner="alice", name="web", spec=SPEC, image="tiny",
                                   nics=NICS, restart="never")  # fmt: skip
    spec = lookup.spec_of_command(old)
    assert spec.networks is None and spec.store == "fs"  # hostd reads the log for them


def test_the_runtime_spec_keeps_what_unplug_and_delete_need(tmp_path: Path) -> None:
    runtime = RuntimeDir(tmp_path, VM)
    spec = StartSpec.of(request().vm_spec(), Resolved(store="rbd", networks=NETWORKS))
    runtime.write_spec(spec)
    assert runtime.read_spec() == spec
    assert lookup.plans_of(spec, NETWORKS) == [
        NicPlan(vm=VM, index=0, network="n1", vni=101, prefix="2001:db8:0:1::/64",
                ipam="auto", mac="02:00:00:00:00:01"),
        NicPlan(vm=VM, index=1, network="n2", vni=102, prefix="", ipam="none",
                mac="02:00:00:00:00:02"),
    ]  # fmt: skip


def test_an_old_runtime_spec_still_reads(tmp_path: Path) -> None:
    runtime = RuntimeDir(tmp_path, VM)
    runtime.path.mkdir(parents=True)
    runtime.spec.write_bytes(msgspec.json.encode(OLD_VM_JSON))
    spec = runtime.read_spec()
    assert spec is not None and spec.store == "rbd" and spec.networks is None
    assert spec.nics == NICS[:1]


def system() -> dict[str, Any]:
    return {"id": new_id(), "at": AT, "actor": "system:test"}


@pytest.mark.servers
@pytest.mark.timeout(30)
async def test_an_old_start_command_is_resolved_from_the_log(event_log: EventLog) -> None:
    image, nets = new_id(), (new_id(), new_id())
    old = ev.decode(json.dumps(
        OLD_START | {"image": image, "nics": [{"network": n, "mac": m.mac}
                                              for n, m in zip(nets, NICS, strict=True)]}
    ).encode())  # fmt: skip
    assert isinstance(old, ev.HostVmStart)
    spec = lookup.spec_of_command(old)
    with pytest.raises(InputError, match="not made"):
        await lookup.resolved(event_log, spec)
    await event_log.append(ev.ImageRequested(**system(), image=image, owner="admin", name="i",
                                             file=new_id(), store="rbd"))  # fmt: skip
    await event_log.append(ev.ImageCreated(**system(), image=image, size=1, checksum="0"))
    with pytest.raises(InputError, match=f"network {nets[0]} is not created"):
        await lookup.resolved(event_log, spec)
    await event_log.append(ev.NetCreated(**system(), net=nets[0], vni=7, prefix="2001:db8::/64",
                                         ipam="manual"))  # fmt: skip
    await event_log.append(ev.NetCreated(**system(), net=nets[1], vni=8))
    done = await lookup.resolved(event_log, spec)
    assert done.store == "rbd"
    assert done.networks == (
        NicNetwork(network=nets[0], vni=7, prefix="2001:db8::/64", ipam="manual"),
        NicNetwork(network=nets[1], vni=8),
    )
    assert await lookup.resolved(event_log, done) is done  # resolved once, read no more
    assert [p.vni for p in await lookup.nic_plans(event_log, done)] == [7, 8]
