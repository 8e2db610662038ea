"""Prometheus metrics every salesflow HTTP service shares: `/metrics` behind the service token and
the latency of every request by route (the job server's `/forecast` latency among them).

Each app gets its own registry (not prometheus_client's global one), so several apps in one process
(tests) never mix their numbers; a service adds collectors that read its own state at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from salesflow.config import Settings
from salesflow.services.http import protected

__all__ = ["DURATION_BUCKETS_S", "install_metrics"]

#: Request latency buckets, in seconds: a forecast answered from memory takes milliseconds, an
#: upload of a large file or a first forecast after a model change takes seconds to minutes.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
#: Job duration buckets, in seconds: a prediction takes seconds, a training minutes to an hour.
DURATION_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class _Timing:
    """ASGI middleware: every request's duration by method, route template and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.histogram.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


def install_metrics(
    app: FastAPI,
    settings: Settings,
    collectors: Iterable[Collector] = (),
    *,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> CollectorRegistry:
    """Add `GET /metrics` (the service token required, as for the API) and request timing.

    `collectors` read the service's state when scraped; `before_scrape` refreshes anything they
    read that has to be fetched asynchronously.
    """
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    histogram = Histogram(
        "salesflow_http_request_duration_seconds",
        "Time to answer an HTTP request, by method, route template and status.",
        ["method", "route", "status"],
        buckets=LATENCY_BUCKETS_S,
        registry=registry,
    )
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus' text format."""
        if before_scrape is not None:
            await before_scrape()
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router, dependencies=protected(settings))
    app.add_middleware(_Timing, histogram=histogram)
    return registry
