"""Request counts and latency histograms, written in the Prometheus text format.

``MetricsMiddleware`` is plain ASGI (no per-request objects beyond a closure): it times each
request and labels it with the route template Starlette matched (``/v1/vms/{id}``), so
label values stay bounded; requests that match no route count as ``unmatched``.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DURATION = "ucloud_http_request_duration_seconds"


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


class Metrics:
    """Counters and histograms of HTTP requests, keyed by (method, route, status)."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, str], _Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        histogram = self._requests.get(key)
        if histogram is None:
            histogram = self._requests[key] = _Histogram()
        histogram.observe(seconds)

    def render(self, gauges: Iterable[tuple[str, str, float]] = ()) -> str:
        """The exposition: request metrics, then ``(name, help, value)`` gauges."""
        lines = [
            "# HELP ucloud_http_requests_total HTTP requests answered, by route and status.",
            "# TYPE ucloud_http_requests_total counter",
        ]
        items = sorted(self._requests.items())
        for (method, route, status), histogram in items:
            labels = _labels(method=method, route=route, status=status)
            lines.append(f"ucloud_http_requests_total{{{labels}}} {histogram.count}")
        lines += [
            "# HELP ucloud_http_request_duration_seconds Time to answer, by route and status.",
            "# TYPE ucloud_http_request_duration_seconds histogram",
        ]
        for (method, route, status), histogram in items:
            labels = _labels(method=method, route=route, status=status)
            cumulative = 0
            for bound, count in zip((*BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'{_DURATION}_bucket{{{labels},le="{le}"}} {cumulative}')
            lines.append(f"{_DURATION}_sum{{{labels}}} {histogram.sum!r}")
            lines.append(f"{_DURATION}_count{{{labels}}} {histogram.count}")
        for name, help_text, value in gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(lines) + "\n"


def _labels(**values: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in values.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class MetricsMiddleware:
    def __init__(
        self, app: ASGIApp, metrics: Metrics, clock: Callable[[], float] = time.perf_counter
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
