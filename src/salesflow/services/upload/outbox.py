"""The outbox relay: moves upload events from SQLite to Kafka, and heals lost hand-offs.

One background thread. Each pass publishes unpublished outbox rows in id order, waiting for each
delivery, and marks them published; on a failure it records the error on the row and backs off
(doubling, capped), then re-creates the topics before trying again (the local broker forgets them on
a restart). A kick (after each upload) wakes it at once, so the normal hand-off is immediate.

The same thread reconciles: uploads that stayed stored/queued/training longer than
`reconcile_after_s` get a fresh event (safe: the job server is idempotent on upload_id). For a
queued/training upload the job server is asked first, and a finished job's status is adopted.

Two faster heals run on their own clocks. Every JOB_SYNC_S (and on the first pass, so right after
the service starts), queued/training uploads take over their job's final status: a status report
lost while this service was down arrives within seconds of its return. Every BROKER_WATCH_S the end
offset of the uploads topic is read: when it goes back (a broker that lost its log on a restart),
every upload still `stored` is re-announced at once, not after `reconcile_after_s`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from salesflow.clients.jobs import JobServerClient
from salesflow.config import Settings
from salesflow.errors import SalesflowError, UnavailableError
from salesflow.kafka import ensure_topics, topic_end
from salesflow.logs import bind
from salesflow.sales.contract import UploadEvent
from salesflow.services.upload.db import UploadDB
from salesflow.services.upload.record import NewUpload, UploadRecord

__all__ = [
    "JobLookup",
    "OutboxRelay",
    "Publisher",
    "bootstrap_accepts",
    "event_of",
    "job_server_lookup",
]

log = logging.getLogger(__name__)

#: Longest pause between publish attempts while Kafka is down: a restarted broker is noticed
#: within this, even without a kick.
MAX_BACKOFF_S = 15.0
#: Rows read from the outbox per pass; the next pass (immediately) takes the rest.
BATCH = 200
#: TCP connect timeout of the broker pre-flight; loopback or LAN answers in milliseconds.
CONNECT_TIMEOUT_S = 1.0
#: How often queued/training uploads are matched with their job's status (and at start).
JOB_SYNC_S = 10.0
#: How often the uploads topic's end offset is read to notice a broker that lost its log.
BROKER_WATCH_S = 5.0
#: How long a stopping relay waits for an in-flight publish (bounded by the delivery timeout).
STOP_TIMEOUT_S = 30.0

JobLookup = Callable[[str], dict[str, Any] | None]
"""The job server's job for an upload id, or None if it has none; UnavailableError if down."""


class Publisher(Protocol):
    """What the relay needs of `salesflow.kafka.EventPublisher`."""

    def publish(self, topic: str, key: str, value: bytes) -> Any:
        """Send one event and wait until the broker has it; UnavailableError otherwise."""


def bootstrap_accepts(settings: Settings, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """True if some bootstrap address accepts a TCP connection.

    A cheap pre-flight: with the broker down, librdkafka would wait out its whole delivery
    timeout, while a refused connection answers at once. It proves nothing about Kafka itself
    (a paused broker still accepts), so the publish that follows can still fail.
    """
    for address in settings.kafka_bootstrap_servers.split(","):
        host, sep, port = address.strip().rpartition("://")[2].rpartition(":")
        if not sep or not port.isdigit():
            return True  # an address we cannot parse: let librdkafka judge it
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def event_of(upload: NewUpload | UploadRecord) -> bytes:
    """The upload event announcing an upload."""
    return UploadEvent(
        upload_id=upload.upload_id,
        url=upload.url,
        size=upload.size,
        sha256=upload.sha256,
        filename=upload.filename,
        uploaded_at=upload.created_at,
        mode=upload.mode,
    ).to_json()


def job_server_lookup(
    settings: Settings, client: JobServerClient | None = None
) -> tuple[JobLookup, Callable[[], None]]:
    """A JobLookup backed by the job server's client, and the function that closes it."""
    jobs_client = client or JobServerClient(settings)

    def lookup(upload_id: str) -> dict[str, Any] | None:
        found = jobs_client.jobs(upload_id=upload_id)
        trains = [job for job in found if job.get("kind", "train") == "train"]
        return trains[0] if trains else None

    return lookup, jobs_client.close


def _default_prepare(settings: Settings) -> Callable[[], None]:
    def prepare() -> None:
        ensure_topics(settings)  # the uploads topic and the dead-letter topic

    return prepare


class OutboxRelay:
    """The background thread that publishes the outbox and reconciles stuck uploads."""

    def __init__(
        self,
        settings: Settings,
        db: UploadDB,
        publisher: Publisher,
        *,
        jobs: JobLookup | None = None,
        prepare: Callable[[], None] | None = None,
        topic_end_fn: Callable[[], int | None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.publisher = publisher
        self.jobs = jobs
        self.prepare = prepare or _default_prepare(settings)
        self.topic_end = topic_end_fn or (
            lambda: topic_end(settings, settings.kafka_uploads_topic, timeout=2.0)
        )
        self._seen_end: int | None = None
        self._next_sync = 0.0  # on the first pass: statuses lost while this service was down
        self._next_watch = time.monotonic() + BROKER_WATCH_S
        self.failures = 0
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread after the publish in flight, if any."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the outbox relay did not stop within %s s", STOP_TIMEOUT_S)
            self._thread = None

    def kick(self) -> None:
        """Publish now (called after each upload)."""
        self._wake.set()

    def _run(self) -> None:
        delay = 0.0
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.heal_quickly()
                self.reconcile()
                more = self.publish_pending()
            except Exception as exc:  # the relay must survive anything; the rows stay pending
                log.exception("outbox relay pass failed")
                self._failed(exc)
                more = False
            if more:
                delay = 0.0
            elif self.failures:
                delay = min(self.settings.outbox_interval_s * 2**self.failures, MAX_BACKOFF_S)
            else:
                delay = self.settings.outbox_interval_s

    # --- one pass ------------------------------------------------------------------------------

    def publish_pending(self) -> bool:
        """Publish waiting events in order; True if a full batch went out and more may wait.

        Stops at the first failure so events keep their order; raises nothing for Kafka errors.
        """
        rows = self.db.pending_events(BATCH)
        if not rows:
            return False
        if not bootstrap_accepts(self.settings):
            down = UnavailableError(
                f"no Kafka broker accepts connections at {self.settings.kafka_bootstrap_servers}"
            )
            self.db.mark_failed(rows[0].id, f"{down.code}: {down}")
            self._failed(down)
            return False
        if self.failures:
            try:
                self.prepare()  # the broker may have restarted without our topics
            except SalesflowError as exc:
                self.db.mark_failed(rows[0].id, f"{exc.code}: {exc}")
                self._failed(exc)
                return False
        for row in rows:
            if self._stop.is_set():
                return False
            with bind(upload_id=row.upload_id):
                try:
                    self.publisher.publish(row.topic, row.key or row.upload_id, row.payload)
                except SalesflowError as exc:
                    self.db.mark_failed(row.id, f"{exc.code}: {exc}")
                    self._failed(exc)
                    return False
                self.db.mark_published(row.id)
                log.info("published the upload event (outbox row %d)", row.id)
            if self.failures:
                log.info("kafka is reachable again; the outbox is draining")
            self.failures, self.last_error = 0, None
        return len(rows) == BATCH

    def _failed(self, exc: Exception) -> None:
        self.failures = min(self.failures + 1, 30)  # 2**30 * interval is far past the cap anyway
        self.last_error = str(exc)[:500]
        log.warning("could not publish upload events (attempt %d): %s", self.failures, exc)

    def heal_quickly(self) -> None:
        """The job-status sync and the broker watch, each when its clock says (see the module)."""
        now = time.monotonic()
        if self.jobs is not None and now >= self._next_sync:
            self._next_sync = now + JOB_SYNC_S
            self.sync_jobs()
        if now >= self._next_watch:
            self._next_watch = now + BROKER_WATCH_S
            self.watch_broker()

    def sync_jobs(self) -> int:
        """Adopt finished jobs' statuses for queued/training uploads; how many were settled."""
        settled = 0
        for record in self.db.uploads_in_status(("queued", "training")):
            with bind(upload_id=record.upload_id):
                job = self._job_of(record)
                if job is not None and job.get("status") in ("succeeded", "failed"):
                    settled += self._adopt(record.upload_id, job)
        return settled

    def watch_broker(self) -> int:
        """Re-announce every `stored` upload when the uploads topic's end went back; how many."""
        # A refused connection answers at once; the metadata request would wait for its timeout.
        end = self.topic_end() if bootstrap_accepts(self.settings) else None
        if end is None:  # the broker does not answer: the publisher's backoff handles that
            return 0
        seen, self._seen_end = self._seen_end, max(end, self._seen_end or 0)
        if seen is None or end >= seen:
            return 0
        self._seen_end = end
        log.warning(
            "the uploads topic's end offset went back from %d to %d: the broker lost its log; "
            "re-announcing the uploads not yet handed to the job server",
            seen,
            end,
        )
        lost = self.db.uploads_in_status(("stored",), limit=10_000)
        for record in lost:
            self.db.republish(record.upload_id, self.settings.kafka_uploads_topic, event_of(record))
        self.kick()
        return len(lost)

    def reconcile(self) -> int:
        """Re-announce uploads whose hand-off looks lost; returns how many were re-published."""
        republished = 0
        for record in self.db.stale_uploads(self.settings.reconcile_after_s):
            with bind(upload_id=record.upload_id):
                if record.status != "stored" and self._adopt_job(record):
                    continue
                self.db.republish(
                    record.upload_id, self.settings.kafka_uploads_topic, event_of(record)
                )
                log.info("upload %s for too long: its event was re-published", record.status)
                republished += 1
        if republished:
            self.kick()
        return republished

    def _job_of(self, record: UploadRecord) -> dict[str, Any] | None:
        """The job server's job for the upload; None if it has none or does not answer."""
        if self.jobs is None:
            return None
        try:
            return self.jobs(record.upload_id)
        except UnavailableError as exc:
            log.info("job server unavailable for upload %s: %s", record.upload_id, exc)
        except Exception:  # a broken answer must not stop the relay; re-publishing is safe
            log.warning("job lookup of upload %s failed", record.upload_id, exc_info=True)
        return None

    def _adopt_job(self, record: UploadRecord) -> bool:
        """Take over a finished job's outcome; True if the upload is now settled."""
        job = self._job_of(record)
        if job is None:
            return False
        return self._adopt(record.upload_id, job)

    def _adopt(self, upload_id: str, job: dict[str, Any]) -> bool:
        """Record the job's status on the upload; True if the upload is settled or in hand."""
        status = job.get("status")
        if status == "succeeded":
            self.db.update_status(
                upload_id,
                "trained",
                job_id=job.get("job_id"),
                model_version=job.get("model_version"),
                metrics=job.get("metrics"),
            )
        elif status == "failed":
            self.db.update_status(
                upload_id,
                "failed",
                job_id=job.get("job_id"),
                error_code=job.get("error_code"),
                error=job.get("error"),
            )
        elif status in ("queued", "running"):
            adopted = "training" if status == "running" else "queued"
            self.db.update_status(upload_id, adopted, job_id=job.get("job_id"))
            self.db.touch_reconciled(upload_id)  # alive and working: nothing to re-send
            return True
        else:
            return False
        log.info("adopted the job server's outcome for a stale upload: %s", status)
        return True
