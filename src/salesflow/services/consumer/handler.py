"""What the upload consumer does with one event, with no Kafka in sight.

`UploadHandler.handle(value)` verifies the event and the object it announces against the consumer's
OWN configured store (the URL in the event is compared, never fetched), asks the job server to train,
and answers with an `Outcome`: `Done`, `DeadLetter` (permanent: park the event) or `Retry`
(transient: try the same event again later). Status reports to the upload service are best-effort
and sent from a background thread, so a slow or absent upload service never holds up the stream.

A rejection is reported only when the upload itself is at fault (its stored file is missing, changed or
unusable, or the job server refused it), never for a malformed event or one pointing elsewhere: such an
event may be forged and name someone else's upload. The report carries the event's sha256 and size,
and the upload service applies it only if they are its own record's (see `UploadDB.update_status`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from salesflow import faults, logs
from salesflow.config import Settings
from salesflow.errors import (
    HeaderError,
    InputError,
    IntegrityError,
    InvalidEventError,
    NotFoundError,
    ObjectNotFoundError,
    SalesflowError,
    StorageError,
    UnavailableError,
)
from salesflow.sales.contract import HEADER_PROBE_BYTES, UploadEvent, check_header, upload_key
from salesflow.storage import ObjectStore

__all__ = [
    "DeadLetter",
    "Done",
    "JobsAPI",
    "Outcome",
    "Retry",
    "StatusReporter",
    "UploadHandler",
    "UploadsAPI",
    "upload_id_of",
]

log = logging.getLogger(__name__)

#: Waits before each retry of a failed status report: three tries over ~3.5 s, then the upload
#: service's own reconciliation takes over.
REPORT_RETRY_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0)
#: Reports waiting to be sent; beyond this the oldest are dropped (the upload service reconciles).
MAX_PENDING_REPORTS = 10_000
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


# --- outcomes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """The job server accepted the upload: commit the event."""

    upload_id: str
    job_id: str


@dataclass(frozen=True)
class DeadLetter:
    """The event can never succeed: park it on the dead-letter topic, then commit it."""

    reason: str
    detail: str
    upload_id: str | None = None
    #: The event's claim about the file (sha256, size), set only when the upload itself is at fault:
    #: then the upload service is told of the rejection, and checks the claim against its record.
    claim: tuple[str, int] | None = None


@dataclass(frozen=True)
class Retry:
    """A dependency is down: do not commit; handle the same event again after a back-off."""

    reason: str
    detail: str


Outcome = Done | DeadLetter | Retry


class JobsAPI(Protocol):
    """The part of the job server client the consumer uses."""

    def train(
        self, upload_id: str, sha256: str | None, mode: str | None = None
    ) -> dict[str, Any]: ...


class UploadsAPI(Protocol):
    """The part of the upload service client the consumer uses."""

    def report_status(self, upload_id: str, status: str, **fields: Any) -> dict[str, Any]: ...


def upload_id_of(value: bytes | None) -> str | None:
    """The upload id a (possibly malformed) event names, if it names a well-formed one."""
    try:
        data = json.loads(value) if value is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    found = data.get("upload_id") if isinstance(data, dict) else None
    if isinstance(found, str) and _UPLOAD_ID.fullmatch(found):
        return found
    return None


# --- status reports ----------------------------------------------------------------------------


@dataclass
class _Report:
    upload_id: str
    status: str
    fields: dict[str, Any] = field(default_factory=dict)


class StatusReporter:
    """Sends status reports in order from one background thread, with a few retries each."""

    def __init__(
        self, uploads: UploadsAPI, *, delays: Sequence[float] = REPORT_RETRY_DELAYS_S
    ) -> None:
        self.uploads = uploads
        self.delays = tuple(delays)
        self._cond = threading.Condition()
        self._queue: deque[_Report] = deque()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, upload_id: str, status: str, **fields: Any) -> None:
        """Queue a report; returns at once."""
        with self._cond:
            if self._closed:
                log.warning("status reporter closed: %s for %s not sent", status, upload_id)
                return
            if len(self._queue) >= MAX_PENDING_REPORTS:
                dropped = self._queue.popleft()
                log.warning(
                    "status backlog full: dropped %s for %s", dropped.status, dropped.upload_id
                )
            self._queue.append(_Report(upload_id, status, fields))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="consumer-status-reporter", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued report was sent or given up; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to `timeout`), then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return
                report = self._queue.popleft()
                self._busy = True
            try:
                with logs.bind(upload_id=report.upload_id):
                    self._send(report)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _send(self, report: _Report) -> None:
        for attempt, delay in enumerate((*self.delays, None), start=1):
            try:
                self.uploads.report_status(report.upload_id, report.status, **report.fields)
                return
            except UnavailableError as exc:
                problem = f"{exc.code}: {exc}"
            except (InputError, NotFoundError, IntegrityError) as exc:
                # The upload service refused the report itself: retrying cannot help.
                log.warning("status %s refused by the upload service: %s", report.status, exc)
                return
            except Exception as exc:  # a report must never take the consumer down
                problem = f"{exc.__class__.__name__}: {exc}"
            if delay is None:
                break
            log.info("status %s not delivered (try %d): %s", report.status, attempt, problem)
            with self._cond:
                if self._cond.wait_for(lambda: self._closed, delay):
                    break
        log.warning(
            "status %s not delivered; the upload service will reconcile: %s",
            report.status,
            problem,
        )


# --- the handler -------------------------------------------------------------------------------


class UploadHandler:
    """Verifies one upload event and hands the upload to the job server."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        jobs: JobsAPI,
        uploads: UploadsAPI,
        *,
        report_delays: Sequence[float] = REPORT_RETRY_DELAYS_S,
    ) -> None:
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.reporter = StatusReporter(uploads, delays=report_delays)

    def handle(self, value: bytes | None) -> Outcome:
        """Verify the event and its object, request training, report the status.

        Every domain failure becomes an outcome; only a bug raises (the worker retries those).
        """
        outcome = self._decide(value)
        if isinstance(outcome, Done):
            log.info("upload queued as job %s", outcome.job_id)
            self.reporter.submit(outcome.upload_id, "queued", job_id=outcome.job_id)
        elif isinstance(outcome, DeadLetter):
            self._report_rejected(outcome)
        else:
            log.warning("transient failure (%s): %s", outcome.reason, outcome.detail)
        return outcome

    def give_up(self, value: bytes | None, last: Retry) -> DeadLetter:
        """Turn a Retry that lasted too long into a dead letter (and report the rejection)."""
        minutes = self.settings.consumer_give_up_s / 60
        try:
            event: UploadEvent | None = UploadEvent.from_json(value)
        except InvalidEventError:
            event = None
        outcome = DeadLetter(
            last.reason,
            f"gave up after {minutes:g} min of retrying: {last.detail}",
            upload_id_of(value),
            (event.sha256, event.size) if event is not None else None,
        )
        self._report_rejected(outcome)
        return outcome

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait for queued status reports to be sent."""
        return self.reporter.flush(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send queued status reports (up to `timeout`) and stop the reporter."""
        self.reporter.close(timeout)

    def _report_rejected(self, outcome: DeadLetter) -> None:
        log.warning("event rejected (%s): %s", outcome.reason, outcome.detail)
        if outcome.upload_id is not None and outcome.claim is not None:
            sha256, size = outcome.claim
            self.reporter.submit(
                outcome.upload_id,
                "rejected",
                error_code=outcome.reason,
                error=outcome.detail,
                sha256=sha256,
                size=size,
            )

    def _decide(self, value: bytes | None) -> Outcome:
        try:
            event = UploadEvent.from_json(value)
        except InvalidEventError as exc:
            return DeadLetter("malformed_event", str(exc), upload_id_of(value))
        with logs.bind(upload_id=event.upload_id):
            try:
                outcome = self._verify(event)
            except StorageError as exc:
                # The details (paths, endpoints) stay in the log; the outcome names only the code.
                log.warning("object store failed: %s", exc)
                return Retry("storage_unavailable", f"the object store failed ({exc.code})")
            if outcome is not None:
                return outcome
            faults.reached(self.settings, "consumer.after_verify")
            return self._train(event)

    def _verify(self, event: UploadEvent) -> DeadLetter | None:
        """Check the event against the object in OUR store; a DeadLetter says what is wrong."""
        key = upload_key(event.upload_id)
        if event.url != self.store.url_for(key):
            return DeadLetter(
                "invalid_key",
                "the event's url is not this upload's location in the configured store",
                event.upload_id,
            )
        try:
            info = self.store.checksum(key)
            head = self.store.read_head(key, HEADER_PROBE_BYTES)
        except ObjectNotFoundError:
            return _file_at_fault(
                event, "object_missing", "the uploaded file is not in the object store"
            )
        if info.size != event.size:
            return _file_at_fault(
                event,
                "size_mismatch",
                f"the stored file has {info.size} bytes, the event says {event.size}",
            )
        if info.sha256 != event.sha256:
            return _file_at_fault(
                event,
                "checksum_mismatch",
                f"the stored file's sha256 is {info.sha256}, the event says {event.sha256}",
            )
        try:
            check_header(head)
        except HeaderError as exc:
            return _file_at_fault(event, "bad_header", str(exc))
        return None

    def _train(self, event: UploadEvent) -> Outcome:
        try:
            job = self.jobs.train(event.upload_id, event.sha256, event.mode)
        except UnavailableError as exc:
            return Retry("job_server_unavailable", f"the job server is unavailable: {exc}")
        except (InputError, NotFoundError) as exc:
            # The job server refused the request: the same request can never succeed.
            return _file_at_fault(event, str(getattr(exc, "code", "invalid_input")), str(exc))
        except SalesflowError as exc:
            return Retry("job_server_unavailable", f"the job server failed ({exc.code})")
        job_id = job.get("job_id") if isinstance(job, dict) else None
        if not isinstance(job_id, str) or not job_id:
            return Retry("job_server_unavailable", "the job server's answer has no job_id")
        return Done(event.upload_id, job_id)


def _file_at_fault(event: UploadEvent, reason: str, detail: str) -> DeadLetter:
    """A dead letter about the upload's own file (or its refusal): the upload is reported rejected."""
    return DeadLetter(reason, detail, event.upload_id, (event.sha256, event.size))
