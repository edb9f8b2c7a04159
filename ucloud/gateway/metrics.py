"""The gateway's metrics: requests by route and status, and its view of the projection.

``MetricsMiddleware`` is plain ASGI (no per-request objects beyond a closure): it times each
request and labels it with the route template Starlette matched (``/v1/vms/{id}``), so
label values stay bounded; requests that match no route count as ``unmatched``. The counts
are kept in plain numbers (no lock on the request path) and become metric families only
when ``/metrics`` is scraped (``RequestMetrics.collect``); the text is the process's
(``ucloud.metrics``).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ucloud.metrics import Gatherer

if TYPE_CHECKING:
    from ucloud.eventlog import EventLog
    from ucloud.projections.mirror import Mirror

log = logging.getLogger(__name__)

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABELS = ["method", "route", "status"]


class _Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1


class RequestMetrics(Collector):
    """Counters and histograms of HTTP requests, keyed by (method, route, status)."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, str], _Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        histogram = self._requests.get(key)
        if histogram is None:
            histogram = self._requests[key] = _Histogram()
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        items = sorted(self._requests.items())
        total = CounterMetricFamily(
            "ucloud_http_requests", "HTTP requests answered, by route and status.",
            labels=_LABELS,
        )
        duration = HistogramMetricFamily(
            "ucloud_http_request_duration_seconds", "Time to answer, by route and status.",
            labels=_LABELS,
        )
        for labels, histogram in items:
            total.add_metric(list(labels), histogram.count)
            cumulative, buckets = 0, []
            for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            duration.add_metric(list(labels), buckets, histogram.sum)
        yield total
        yield duration


def view_gatherer(mirror: Mirror, event_log: EventLog) -> Gatherer:
    """The gateway's view of the projection: its checkpoint, lag and VMs, at scrape time."""

    async def gather() -> list[Metric]:
        checkpoint = mirror.checkpoint
        families: list[Metric] = [
            GaugeMetricFamily(
                "ucloud_gateway_checkpoint",
                "Last stream sequence the gateway's mirror of the projection shows.",
                value=checkpoint,
            ),
            GaugeMetricFamily(
                "ucloud_gateway_vms", "VMs in the gateway's view.", value=len(mirror.vms.by_id)
            ),
        ]
        try:
            last = await event_log.last_sequence()
        except Exception as exc:  # noqa: BLE001 - the view answers even without NATS
            log.warning("metrics: stream sequence unavailable: %s", exc)
            return families
        families.append(GaugeMetricFamily(
            "ucloud_gateway_lag_events",
            "Stream events the gateway's mirror does not show yet.",
            value=max(0, last - checkpoint),
        ))  # fmt: skip
        return families

    return gather


class MetricsMiddleware:
    def __init__(
        self, app: ASGIApp, metrics: RequestMetrics, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = self.clock()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], template, status, self.clock() - started)
