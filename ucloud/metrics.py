"""The metrics of one process: its registry, the shared definitions, and ``/metrics``.

Theory of operation. A process (``ucloud serve <service>``, ``ucloud up``) has one
``ProcessMetrics``; the supervisor hands it to every service in ``ServiceContext.metrics``.
What is counted lives where it is counted, in plain integers (``ConsumerCounters``,
``ProjectorMetrics``, the metadata service's ``served``/``refused``), and is turned into
metric families only when someone scrapes, by two kinds of sources:

- *collectors* (prometheus-client's ``Collector``): synchronous, read memory;
- *gatherers*: ``async () -> families``, for what has to be asked at scrape time (the
  stream's last sequence from NATS, a VM's block statistics over QMP). Each gets
  ``GATHER_TIMEOUT_S``; one that fails or is slow is logged and left out of that scrape.

A service registers its sources for as long as it runs (``collecting``/``gathering`` are
context managers), so a restarted service never leaves a stale one behind. What every
process has is registered here: the consumer counters of all durables in the process,
the scheduler's decisions and conflicts (module-level counters, as the consumer counters
are: they count what this process did), the stream's last sequence when the process has
an event log, and the process's own CPU and memory.

Definitions of metrics that read one service's state sit next to that service
(``projections/projector.py``, ``gateway/metrics.py``, ``metadata/service.py``,
``hostd/metrics.py``); README.md, "Metrics", lists them all.

The text is prometheus-client's, with one change: integral values are written as
integers. The library writes floats the way Go does (``1.234567e+06``): exact, but a
stream sequence should read as the number ``nats stream info`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ucloud.consumer import all_counters

if TYPE_CHECKING:
    from ucloud.eventlog import EventLog

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GATHER_TIMEOUT_S = 5.0
_EXACT = 2**53  # integral floats below this are exact integers

Gatherer = Callable[[], Awaitable[Iterable[Metric]]]

# --- definitions shared by services ------------------------------------------------------

SCHEDULER_DECISIONS = Counter(
    "ucloud_scheduler_decisions",
    "Placement decisions appended by schedulers in this process, by outcome "
    "(scheduled, failed: no capacity).",
    ["outcome"],
    registry=None,
)
SCHEDULER_CONFLICTS = Counter(
    "ucloud_scheduler_conflicts",
    "Appends of schedulers in this process that lost the optimistic concurrency check, "
    "by aggregate (host: the capacity ledger moved, vm: the VM moved).",
    ["on"],
    registry=None,
)


class ConsumerCollector(Collector):
    """The counters of every durable consumer that ran in this process."""

    def collect(self) -> Iterator[Metric]:
        helps = {
            "processed": "Messages handled and acked, by durable consumer.",
            "failed": "Deliveries whose handler raised, by durable consumer.",
            "poison": "Messages recorded as poison, by durable consumer.",
        }
        counts = all_counters()
        for field, help_text in helps.items():
            family = CounterMetricFamily(f"ucloud_consumer_{field}", help_text, labels=["durable"])
            for durable, values in counts.items():
                family.add_metric([durable], values[field])
            yield family


def stream_gatherer(event_log: EventLog) -> Gatherer:
    async def gather() -> list[Metric]:
        last = await event_log.last_sequence()
        return [
            GaugeMetricFamily(
                "ucloud_stream_last_sequence", "Last sequence in the event stream.", value=last
            )
        ]

    return gather


# --- the registry of the process ---------------------------------------------------------


class ProcessMetrics:
    """What one process exposes at ``/metrics``."""

    def __init__(self, event_log: EventLog | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._gatherers: list[Gatherer] = []
        for collector in (ConsumerCollector(), SCHEDULER_DECISIONS, SCHEDULER_CONFLICTS):
            self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        if event_log is not None:
            self._gatherers.append(stream_gatherer(event_log))

    @contextlib.contextmanager
    def collecting(self, collector: Collector) -> Iterator[None]:
        """``collector`` is part of every scrape while the block runs."""
        self.registry.register(collector)
        try:
            yield
        finally:
            self.registry.unregister(collector)

    @contextlib.contextmanager
    def gathering(self, gatherer: Gatherer) -> Iterator[None]:
        """``gatherer`` is awaited at every scrape while the block runs."""
        self._gatherers.append(gatherer)
        try:
            yield
        finally:
            self._gatherers.remove(gatherer)

    async def gather(self) -> list[Metric]:
        """The families of every collector and gatherer, as of now."""
        families = list(self.registry.collect())
        for gatherer in list(self._gatherers):
            try:
                async with asyncio.timeout(GATHER_TIMEOUT_S):
                    families += await gatherer()
            except Exception as exc:  # noqa: BLE001 - one source must not fail the scrape
                log.warning("metrics: %s left out: %s", _name(gatherer), exc)
        return families

    async def render(self) -> bytes:
        """The exposition in the Prometheus text format."""
        return exposition(await self.gather())


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def exposition(families: Iterable[Metric]) -> bytes:
    """prometheus-client's text format of ``families``, integral values as integers."""
    text = generate_latest(_Families(families)).decode()
    lines = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            sample, _, value = line.rpartition(" ")
            line = f"{sample} {_number(value)}"
        lines.append(line)
    return ("\n".join(lines) + "\n").encode()


def _number(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    if number.is_integer() and abs(number) < _EXACT:
        return str(int(number))
    return value


def _name(gatherer: Gatherer) -> str:
    return getattr(gatherer, "__qualname__", repr(gatherer))


# --- the endpoint ------------------------------------------------------------------------


def asgi_app(metrics: ProcessMetrics) -> Callable[..., Awaitable[None]]:
    """An ASGI app answering ``GET /metrics`` (404 elsewhere)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics" or scope["method"] not in ("GET", "HEAD"):
            status, body, kind = 404, b"not found\n", "text/plain"
        else:
            status, body, kind = 200, await metrics.render(), CONTENT_TYPE
        headers = [(b"content-type", kind.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD"
                    else body})

    return app


@contextlib.asynccontextmanager
async def listening(metrics: ProcessMetrics, listen: str) -> AsyncIterator[str]:
    """Serve ``metrics`` on ``listen`` (``metrics.listen``) for the block; yields the URL."""
    import uvicorn

    from ucloud.listen import Server, bind, url_of

    sock: socket.socket = bind(listen, "metrics.listen")
    config = uvicorn.Config(
        asgi_app(metrics), log_config=None, access_log=False, lifespan="off",
        server_header=False, timeout_graceful_shutdown=1,
    )
    server = Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="metrics-uvicorn")
    try:
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()  # uvicorn gave up: say why
        url = url_of(sock) + "/metrics"
        log.info("metrics on %s", url)
        yield url
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        sock.close()
