"""The ``hostd`` service, one per hypervisor: this machine as a host, and its VMs.

It takes the host's liveness lease, registers the host (``host.<id>.registered`` when new
or changed), serves the VMs' serial consoles to the gateway (``console.py``), reattaches
to the VMs already running here and makes the host match the log (``Hostd.reconcile``),
then consumes ``host.<id>.>`` (durable ``hostd-<id>``) to start, stop and delete VMs.
A router host (``host.router``) also routes the VM networks (``LinuxPlumbing.run_router``).
Stopping the service lets go of the VMs without stopping them; ``ctx.shared.hostd`` is
the ``Hostd``, for tests and benchmarks (its VMs' counters are in the process's
``/metrics``: ``hostd/metrics.py``), and ``ctx.shared.plumbing`` may hold a ``Plumbing``
to use instead of the host's (``NoPlumbing``: no VM networking).
"""

from __future__ import annotations

import asyncio
import importlib
import logging

from ucloud.config import Config
from ucloud.consumer import run_consumer
from ucloud.events import subject
from ucloud.hostd.accel import Accelerator, probe_kvm
from ucloud.hostd.console import endpoint_key, serve_consoles
from ucloud.hostd.daemon import Hostd
from ucloud.hostd.lease import HostLease
from ucloud.hostd.metrics import vm_gatherer
from ucloud.hostd.plumbing import NoPlumbing, Plumbing
from ucloud.hostd.qemu import QemuProcess
from ucloud.hostd.registry import register
from ucloud.imagebuild.child import build_in_child
from ucloud.services import ServiceContext

log = logging.getLogger(__name__)


def durable(host: str) -> str:
    return f"hostd-{host}"


def plumbing_for(config: Config) -> Plumbing:
    """The host's network plumbing: ``ucloud.hostd.network.plumbing(config)`` when that
    module offers one for this host, else ``NoPlumbing`` (VMs with NICs then fail to start,
    saying why)."""
    try:
        module = importlib.import_module("ucloud.hostd.network")
    except ImportError:
        return NoPlumbing()
    factory = getattr(module, "plumbing", None)
    made = factory(config) if callable(factory) else None
    return made if made is not None else NoPlumbing()


def accelerator(config: Config) -> Accelerator:
    host = config.host

    async def probe() -> tuple[bool, str]:
        image = await build_in_child("tiny", config.paths.builtin_images)
        return await probe_kvm(host.qemu, host.cpu_model, image, config.paths.runtime / ".probe")

    return Accelerator(host, config.paths.data, probe)


async def run(ctx: ServiceContext) -> None:
    config = ctx.config
    host = config.host
    lease = HostLease(ctx.store, config.etcd.prefix, host.id, host.lease_ttl_s)
    # Alive before registered, so that no monitor sees a registered host without its key.
    await lease.acquire()
    await register(ctx.log, host, config.paths.data)
    plumbing = ctx.shared.plumbing  # whoever runs the service may bring its own
    if plumbing is None:
        plumbing = plumbing_for(config)
    hostd = Hostd(
        config, ctx.log, plumbing=plumbing, qemu=QemuProcess(), accel=accelerator(config),
    )
    ctx.shared.hostd = hostd
    try:
        with ctx.metrics.gathering(vm_gatherer(hostd.machines, host.id)):
            async with asyncio.TaskGroup() as group:
                group.create_task(lease.run(), name="hostd:lease")
                group.create_task(
                    serve_consoles(
                        ctx.store, endpoint_key(config.etcd.secrets_prefix, host.id),
                        host.console_listen, host.address, hostd.root,
                    ),
                    name="hostd:consoles",
                )
                router = getattr(plumbing, "run_router", None)
                if host.router and router is not None:  # this host routes the VM networks
                    group.create_task(router(ctx.store, config.etcd.prefix), name="hostd:router")
                await hostd.reconcile()
                group.create_task(
                    run_consumer(
                        ctx.log, ctx.store, durable=durable(host.id),
                        subjects=[subject("host", host.id, "*")], handle=hostd.handle,
                        settings=config.consumer, poison_prefix=f"{config.etcd.prefix}_poison/",
                        name=ctx.name,
                    ),
                    name="hostd:commands",
                )
    finally:
        await hostd.close()
