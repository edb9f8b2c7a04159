"""``ucloud serve metadata``: the metadata service of this host (runs on every host).

It runs the ``MetadataService`` (``server``: answers from in-memory views, on each VM
bridge and ``metadata.address``) and removes the user data of deleted VMs (``userdata``).
Once it listens, ``ctx.shared.metadata`` is the ``MetadataService``.
"""

from __future__ import annotations

import asyncio

from ucloud.consumer import run_consumer
from ucloud.metadata import userdata
from ucloud.metadata.server import MetadataService
from ucloud.services import ServiceContext


async def run(ctx: ServiceContext) -> None:
    """Serve metadata on this host's VM bridges and remove deleted VMs' user data."""
    config = ctx.config
    service = await MetadataService.open(config, ctx.store)
    ctx.shared.metadata = service
    try:
        with ctx.metrics.gathering(service.gather):
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(service.follow_bridges(), name="metadata-bridges")
                if config.metadata.address:
                    tasks.create_task(service.serve_global(), name="metadata-global")
                remover = userdata.Remover(ctx.store, config.etcd.secrets_prefix)
                tasks.create_task(run_consumer(
                    ctx.log, ctx.store, durable=userdata.DURABLE, subjects=userdata.SUBJECTS,
                    handle=remover.handle, settings=config.consumer,
                    poison_prefix=f"{config.etcd.prefix}_poison/", name=ctx.name,
                ), name="metadata-userdata")
    finally:
        await service.close()
