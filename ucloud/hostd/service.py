"""The ``hostd`` service, one per hypervisor.

For now it only makes this machine a host: it takes its liveness lease, registers the
host (``host.<id>.registered`` when new or changed) and keeps the lease alive. Starting,
stopping and deleting VMs (consuming ``host.<me>.>``) comes in a later issue.
"""

from __future__ import annotations

from ucloud.handlers.liveness import HostLease
from ucloud.hostd.registry import register
from ucloud.services import ServiceContext


async def run(ctx: ServiceContext) -> None:
    host = ctx.config.host
    lease = HostLease(ctx.store, ctx.config.etcd.prefix, host.id, host.lease_ttl_s)
    # Alive before registered, so that no monitor sees a registered host without its key.
    await lease.acquire()
    await register(ctx.log, host, ctx.data_dir)
    await lease.run()
