"""What hostd reads from the log besides the VM itself: images, networks, placements.

hostd reads the log rather than the projection, so that a projection that lags (or is
being rebuilt) never makes it start a VM from a stale picture.
"""

from __future__ import annotations

import msgspec

from ucloud.errors import InputError
from ucloud.eventlog import EventLog
from ucloud.events import HostVmPlaced, HostVmReleased, ImageCreated, ImageRequested, NetCreated
from ucloud.events.types import StoreKind
from ucloud.hostd import rules
from ucloud.hostd.plumbing import NicPlan
from ucloud.hostd.qemu import StartSpec


async def with_store(log: EventLog, spec: StartSpec) -> StartSpec:
    """The spec with its image's store; InputError when the image is not made (or gone)."""
    stored, _ = await log.load("image", spec.image)
    events = [s.event for s in stored]
    request = next((e for e in events if isinstance(e, ImageRequested)), None)
    if request is None or not any(isinstance(e, ImageCreated) for e in events):
        raise InputError("image", f"image {spec.image} is not made (or gone)")
    return msgspec.structs.replace(spec, store=request.store)


async def store_of_vm(log: EventLog, vm: str) -> StoreKind:
    """The store of the VM's image, as its request names it ("fs" when unknown)."""
    stored, _ = await log.load("vm", vm)
    facts = rules.fold(stored)
    if facts.request is None:
        return "fs"
    images, _ = await log.load("image", facts.request.image)
    request = next((s.event for s in images if isinstance(s.event, ImageRequested)), None)
    return request.store if request is not None else "fs"


async def nic_plans(log: EventLog, spec: StartSpec) -> list[NicPlan]:
    """Per NIC, its network's VNI, /64 and IPAM; InputError naming a network not created."""
    plans = []
    for index, nic in enumerate(spec.nics):
        stored, _ = await log.load("net", nic.network)
        created = [s.event for s in stored if isinstance(s.event, NetCreated)]
        if not created:
            raise InputError(f"nics[{index}]", f"network {nic.network} is not created")
        net = created[-1]
        plans.append(NicPlan(
            vm=spec.vm, index=index, network=nic.network, vni=net.vni, prefix=net.prefix,
            ipam=net.ipam, mac=nic.mac,
        ))  # fmt: skip
    return plans


async def placed_vms(log: EventLog, host: str) -> set[str]:
    """The VMs the capacity ledger holds on ``host``: placed and not released."""
    stored, _ = await log.load("host", host)
    placed: set[str] = set()
    for item in stored:
        if isinstance(item.event, HostVmPlaced):
            placed.add(item.event.vm)
        elif isinstance(item.event, HostVmReleased):
            placed.discard(item.event.vm)
    return placed


def spec_of(facts: rules.VmFacts) -> StartSpec | None:
    """The start spec of a VM from its request (when no runtime directory says more)."""
    request = facts.request
    if request is None:
        return None
    return StartSpec(
        vm=request.vm, owner=request.owner, name=request.name, spec=request.spec,
        image=request.image, nics=request.nics, restart=request.restart,
    )
