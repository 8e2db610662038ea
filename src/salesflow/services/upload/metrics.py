"""The upload service's Prometheus metrics, read from its database when scraped (so they survive a
restart): uploads by status, bytes stored, preview rejects by reason, events waiting for Kafka."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from salesflow.services.upload.db import UploadDB

__all__ = ["UploadCollector"]

#: The preview's rejected rows per reason, summed over every upload (SQLite's JSON functions).
_REJECTS_SQL = (
    "SELECT r.key AS reason, SUM(r.value) AS n FROM uploads, "
    "json_each(json_extract(uploads.preview, '$.rejected')) AS r "
    "WHERE uploads.preview IS NOT NULL GROUP BY r.key"
)


class UploadCollector(Collector):
    """Collects from the upload database the service holds (None while it starts or stops)."""

    def __init__(self, db: Callable[[], UploadDB | None]) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        db = self._db()
        if db is None:
            return
        by_status = GaugeMetricFamily(
            "salesflow_uploads_by_status", "Uploads by their current status.", labels=["status"]
        )
        total = CounterMetricFamily("salesflow_uploads", "Uploads stored, all statuses.")
        stored = CounterMetricFamily("salesflow_upload_bytes", "Bytes of every stored upload.")
        count = size = 0
        for row in db.read(
            "SELECT status, COUNT(*), COALESCE(SUM(size), 0) FROM uploads GROUP BY 1"
        ):
            by_status.add_metric([row[0]], row[1])
            count, size = count + row[1], size + row[2]
        total.add_metric([], count)
        stored.add_metric([], size)
        rejects = CounterMetricFamily(
            "salesflow_preview_rejected_rows",
            "Rows the upload preview found invalid, by reason (over every upload).",
            labels=["reason"],
        )
        for row in db.read(_REJECTS_SQL):
            rejects.add_metric([row["reason"]], row["n"])
        pending = GaugeMetricFamily(
            "salesflow_outbox_pending", "Upload events stored but not yet published to Kafka."
        )
        pending.add_metric([], db.pending_count())
        yield from (by_status, total, stored, rejects, pending)
