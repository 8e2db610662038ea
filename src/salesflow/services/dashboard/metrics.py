"""The dashboard's Prometheus metrics: what its status board sees of the system when scraped (the
upload consumer's lag, each service's and the broker's health). The consumer has no HTTP port of
its own, so its lag is exported here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["StatusCollector"]


class StatusCollector(Collector):
    """Collects from the latest /api/status answer, refreshed before each scrape."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None

    def collect(self) -> Iterator[Metric]:
        status = self.latest
        if status is None:
            return
        up = GaugeMetricFamily(
            "salesflow_service_up",
            "1 when a service answers its readiness check.",
            labels=["service"],
        )
        for service in status.get("services", []):
            up.add_metric([str(service.get("name"))], 1.0 if service.get("ok") else 0.0)
        yield up
        broker = GaugeMetricFamily("salesflow_broker_up", "1 when the Kafka broker answers.")
        broker.add_metric([], 1.0 if status.get("broker", {}).get("reachable") else 0.0)
        yield broker
        lag = status.get("consumer", {}).get("lag")
        if isinstance(lag, int):  # absent when unknown (the broker or the group cannot be asked)
            gauge = GaugeMetricFamily(
                "salesflow_consumer_lag",
                "Upload events on the topic the consumer group has not committed yet.",
            )
            gauge.add_metric([], float(lag))
            yield gauge
