"""What hostd reads from the log besides the VM itself: images, networks, placements.

A start command carries what the VM's spec names (``host.vm_start``'s ``resolved``) and
the runtime spec keeps it; hostd reads images and networks only for a command or a
runtime spec of before they were carried, and for a VM that arrives by migration. It
reads the log rather than the projection, so that a projection that lags (or is being
rebuilt) never makes it start a VM from a stale picture.
"""

from __future__ import annotations

from collections.abc import Sequence

from ucloud import resolve
from ucloud.eventlog import EventLog
from ucloud.events import HostVmPlaced, HostVmReleased, HostVmStart, ImageRequested
from ucloud.events.types import NicNetwork, StoreKind
from ucloud.hostd import rules
from ucloud.hostd.plumbing import NicPlan
from ucloud.hostd.qemu import StartSpec


def spec_of_command(command: HostVmStart) -> StartSpec:
    """The start spec a command carries (resolved, unless the command is of before)."""
    return StartSpec.of(command.vm_spec(), command.resolved)


async def resolved(log: EventLog, spec: StartSpec) -> StartSpec:
    """The spec with its image's store and its networks, read from the log when the spec
    does not carry them; InputError naming an image not made or a network not created."""
    if spec.networks is not None:
        return spec
    return StartSpec.of(spec, await resolve.resolve(log, spec))


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
    """Per NIC, its network's VNI, /64 and IPAM (from the spec, else from the log);
    InputError naming a network not created."""
    networks = spec.networks
    if networks is None:
        networks = await resolve.networks(log, spec.nics)
    return plans_of(spec, networks)


def plans_of(spec: StartSpec, networks: Sequence[NicNetwork]) -> list[NicPlan]:
    """What the plumbing needs per NIC: the NIC with its network (pure)."""
    return [
        NicPlan(vm=spec.vm, index=index, network=nic.network, vni=net.vni, prefix=net.prefix,
                ipam=net.ipam, mac=nic.mac)
        for index, (nic, net) in enumerate(zip(spec.nics, networks, strict=True))
    ]  # fmt: skip


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
    return None if facts.request is None else StartSpec.of(facts.request.vm_spec())
