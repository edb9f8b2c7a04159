"""``ucloud serve <service>``: one service, against the servers of the config.

The production shape: one process per service, any number of them on any number of hosts,
each talking to the clustered NATS and etcd named in ``--config`` (or pointed at an
all-in-one with ``--data-dir``). The service is supervised as in ``ucloud up``: a crash is
logged and the service restarted with backoff; SIGINT/SIGTERM stop it cleanly. Under systemd
(``systemd/ucloud-<service>.service``, ``Type=notify``) it says READY=1 once it has its
connections and has started the service. With ``metrics.listen`` set, the process serves
its ``/metrics`` there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import time
from typing import Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import ServiceUnavailableError

from ucloud.client.locate import add_server_options, server_config
from ucloud.config import Config
from ucloud.eventlog import EventLog
from ucloud.logsetup import add_log_option, configure
from ucloud.metrics import ProcessMetrics, listening
from ucloud.sdnotify import notify
from ucloud.services import SERVICES, resolve
from ucloud.supervisor import Supervisor, connected, stop_on_signals

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        help="run one service (production: one process per service)",
        description=f"Run one service. Services: {', '.join(SERVICES)}.",
    )
    parser.add_argument("service", metavar="SERVICE", help=f"one of: {', '.join(SERVICES)}")
    add_server_options(parser)
    add_log_option(parser)
    parser.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    if args.service not in SERVICES:
        print(
            f"ucloud serve: unknown service {args.service!r}; "
            f"services: {', '.join(SERVICES)}",
            file=sys.stderr,
        )
        return 2
    try:
        resolve(args.service)
    except Exception as exc:  # a missing or broken module: say which and why
        print(f"ucloud serve: {args.service} cannot be loaded: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    config = server_config(args)
    configure(args.log_format or config.log.format, verbose=args.verbose, service=args.service)
    code: int = asyncio.run(_serve(args, config))
    return code


UNAVAILABLE = (ServiceUnavailableError, NoRespondersError, NatsTimeout)
STREAM_RETRY_S = 1.0
SAY_EVERY_S = 60.0


async def stream_ready(event_log: EventLog, name: str, *, retry_s: float = STREAM_RETRY_S,
                       say_every_s: float = SAY_EVERY_S) -> None:  # fmt: skip
    """Ensure the stream, waiting while JetStream has no quorum (a restart beside a server
    that is down or cut off): one line when the wait begins and one a minute after."""
    said = -math.inf
    while True:
        try:
            await event_log.ensure_stream()
            return
        except UNAVAILABLE as exc:
            now = time.monotonic()
            if now - said >= say_every_s:
                log.warning("%s: JetStream unavailable (%s); retrying every %gs", name,
                            exc.description if isinstance(exc, ServiceUnavailableError)
                            else type(exc).__name__, retry_s)  # fmt: skip
                said = now
        await asyncio.sleep(retry_s)


async def _serve(args: argparse.Namespace, config: Config) -> int:
    name: str = args.service
    with stop_on_signals() as stop:
        async with connected(config, f"ucloud-{name}") as (event_log, store):
            await stream_ready(event_log, name)
            metrics = ProcessMetrics(event_log)
            supervisor = Supervisor(config, event_log, store, [name], metrics=metrics)
            async with contextlib.AsyncExitStack() as stack:
                if config.metrics.listen:
                    await stack.enter_async_context(listening(metrics, config.metrics.listen))
                supervisor.start()
                notify("READY=1")
                try:
                    await stop.wait()
                    log.info("stopping %s", name)
                    notify("STOPPING=1")
                finally:
                    await supervisor.stop()
    return 0
