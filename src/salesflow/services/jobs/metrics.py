"""The job server's Prometheus metrics, read from the job table when scraped (so they survive a
restart): jobs by kind and status, and the durations of finished jobs as a histogram. Forecast
latency is the request histogram of `/forecast` (salesflow.services.metrics)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from salesflow.services.jobs.db import JobDB
from salesflow.services.metrics import DURATION_BUCKETS_S

__all__ = ["JobCollector"]

#: Seconds from start to finish of every finished job (SQLite's julianday reads the ISO stamps).
_DURATIONS_SQL = (
    "SELECT kind, status, (julianday(finished_at) - julianday(started_at)) * 86400.0 AS seconds "
    "FROM jobs WHERE status IN ('succeeded', 'failed') AND started_at IS NOT NULL "
    "AND finished_at IS NOT NULL"
)


class JobCollector(Collector):
    """Collects from the job table the server holds (None while it starts or stops)."""

    def __init__(self, db: Callable[[], JobDB | None]) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        db = self._db()
        if db is None:
            return
        states = GaugeMetricFamily(
            "salesflow_jobs_by_status",
            "Jobs by kind and current status.",
            labels=["kind", "status"],
        )
        for row in db.read("SELECT kind, status, COUNT(*) FROM jobs GROUP BY 1, 2"):
            states.add_metric([row[0], row[1]], row[2])
        yield states
        yield _durations(db)


def _durations(db: JobDB) -> HistogramMetricFamily:
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * len(DURATION_BUCKETS_S))
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for row in db.read(_DURATIONS_SQL):
        key, seconds = (row["kind"], row["status"]), max(0.0, float(row["seconds"] or 0.0))
        index = bisect.bisect_left(DURATION_BUCKETS_S, seconds)
        if index < len(DURATION_BUCKETS_S):
            counts[key][index] += 1
        totals[key][0] += 1
        totals[key][1] += seconds
    family = HistogramMetricFamily(
        "salesflow_job_duration_seconds",
        "Start-to-finish time of finished jobs, by kind and outcome.",
        labels=["kind", "status"],
    )
    for key, (n, total) in sorted(totals.items()):
        cumulative, buckets = 0, []
        for bound, count in zip(DURATION_BUCKETS_S, counts[key], strict=True):
            cumulative += count
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", int(n)))
        family.add_metric(list(key), buckets, total)
    return family
