"""The services ucloud runs, by name, and what each is given.

A service is ``async def run(ctx: ServiceContext) -> None``: it works until cancelled.
Raising is a crash; the supervisor (``ucloud up``, ``ucloud serve``) logs it and restarts
the service with backoff. Services share nothing but the log and the store.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.metrics import ProcessMetrics
from ucloud.store import Store


@dataclass
class ServiceContext:
    config: Config
    log: EventLog
    store: Store
    name: str
    data_dir: Path
    extra: dict[str, object] = field(default_factory=dict)
    # the process's /metrics: a service registers its collectors there while it runs
    metrics: ProcessMetrics = field(default_factory=ProcessMetrics)


Service = Callable[[ServiceContext], Awaitable[None]]

# name -> "module:function". Order is start order in ``ucloud up``.
SERVICES: dict[str, str] = {
    "projector": "ucloud.projections.projector:run",
    "gateway": "ucloud.gateway.service:run",
    "filescan": "ucloud.handlers.filescan:run",
    "imagescan": "ucloud.handlers.imagescan:run",
    "builtins": "ucloud.handlers.builtins:run",
    "monitor": "ucloud.handlers.liveness:run_monitor",
    "netalloc": "ucloud.handlers.netalloc:run",
    "hostd": "ucloud.hostd.service:run",
    "scheduler": "ucloud.handlers.scheduler:run",
    "dispatcher": "ucloud.handlers.dispatcher:run",
    "metadata": "ucloud.metadata.service:run",
}


def resolve(name: str) -> Service:
    """The run function of a service; KeyError names the unknown service."""
    module_name, function = SERVICES[name].split(":")
    module = importlib.import_module(module_name)
    service: Service = getattr(module, function)
    return service
