"""What a VM's spec names, read from the log: its image's store and its NICs' networks.

The dispatcher resolves a spec when it sends ``host.<h>.vm_start`` (the command then
carries it, and hostd reads nothing more to start the VM); hostd resolves one itself only
for a command stored before commands carried it, and for a VM that arrives by migration.
Both read the log rather than the projection, so that a projection that lags (or is being
rebuilt) never makes a VM start from a stale picture.
"""

from __future__ import annotations

from collections.abc import Sequence

from ucloud.errors import InputError
from ucloud.eventlog import EventLog
from ucloud.events import (
    ImageCreated,
    ImageRequested,
    NetCreated,
    Nic,
    NicNetwork,
    Resolved,
    StoreKind,
    VmSpec,
)


async def image_store(log: EventLog, image: str) -> StoreKind:
    """The store of ``image``; InputError when the image is not made (or gone)."""
    stored, _ = await log.load("image", image)
    events = [s.event for s in stored]
    request = next((e for e in events if isinstance(e, ImageRequested)), None)
    if request is None or not any(isinstance(e, ImageCreated) for e in events):
        raise InputError("image", f"image {image} is not made (or gone)")
    return request.store


async def networks(log: EventLog, nics: Sequence[Nic]) -> tuple[NicNetwork, ...]:
    """Per NIC, its network's VNI, /64 and IPAM; InputError naming a network not created."""
    found = []
    for index, nic in enumerate(nics):
        stored, _ = await log.load("net", nic.network)
        created = [s.event for s in stored if isinstance(s.event, NetCreated)]
        if not created:
            raise InputError(f"nics[{index}]", f"network {nic.network} is not created")
        net = created[-1]
        found.append(NicNetwork(network=nic.network, vni=net.vni, prefix=net.prefix,
                                ipam=net.ipam))  # fmt: skip
    return tuple(found)


async def resolve(log: EventLog, spec: VmSpec) -> Resolved:
    """The image's store and the networks of ``spec``; InputError naming what is missing."""
    return Resolved(store=await image_store(log, spec.image),
                    networks=await networks(log, spec.nics))  # fmt: skip
