"""Prometheus metrics of one app, on its own registry (never the process-global one,
so several apps in one process, as in tests, do not collide)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from index.snapshot import Snapshot

UNMATCHED_ROUTE = "unmatched"  # one label for every 404 path, so scans can't explode cardinality


class SnapshotCollector(Collector):
    """Reads the live snapshot at scrape time, so the numbers are never stale."""

    def __init__(self, current_snapshot: Callable[[], Snapshot | None]) -> None:
        self._current_snapshot = current_snapshot

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "mmsearch_index_info", "The live index snapshot (value 1)", labels=["version", "model"]
        )
        items = GaugeMetricFamily("mmsearch_index_items", "Items in the live index snapshot")
        snapshot = self._current_snapshot()
        if snapshot is not None:
            manifest = snapshot.manifest
            info.add_metric([manifest.version, manifest.model_fingerprint], 1.0)
            items.add_metric([], float(manifest.n_items))
        yield info
        yield items


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "mmsearch_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mmsearch_http_request_duration_seconds",
            "HTTP request latency by route template and method",
            ["route", "method"],
            registry=self.registry,
        )

    def watch_snapshot(self, current_snapshot: Callable[[], Snapshot | None]) -> None:
        self.registry.register(SnapshotCollector(current_snapshot))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", UNMATCHED_ROUTE)


class RequestMetricsMiddleware:
    """Counts every HTTP request by its route template (``/items/{item_id:path}``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app raises before responding
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(_route_template(scope), scope["method"], status, elapsed)
