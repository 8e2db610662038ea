"""The job runner: worker threads that claim queued jobs and run them in-process on the warm session.

The work itself comes from `salesflow.services.jobs.engine` (real Spark by default, plain
functions in tests). A failed job gets a stable error code and a short message; tracebacks go to
the server log only.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from salesflow import logs
from salesflow.config import Settings
from salesflow.errors import SalesflowError, TooManyRejectsError
from salesflow.registry import ModelRegistry
from salesflow.services.jobs.db import Job, JobDB
from salesflow.services.jobs.engine import PredictFn, TrainFn, spark_predictor
from salesflow.spark.session import get_spark
from salesflow.spark.train import TrainInput, train
from salesflow.storage import local_path_of

__all__ = ["JobRunner", "StatusCallback"]

log = logging.getLogger(__name__)

#: Lines of log kept per job (GET /jobs/{id} shows them).
LOG_TAIL_LINES = 50
#: One log line in the tail is cut at this many characters (Spark errors can be pages long).
LOG_LINE_CHARS = 500
#: Idle workers re-check the queue this often even without a kick (a job added by another process).
POLL_INTERVAL_S = 1.0
#: How long stop() waits for workers to leave; a job still running is re-queued at the next start.
STOP_TIMEOUT_S = 10.0

StatusCallback = Callable[[Job], None]
#: `extra` of a log call whose line the runner puts in the job's tail itself.
_SKIP_TAIL = {"skip_tail": True}


class _TailHandler(logging.Handler):
    """Keeps the log lines emitted while one job runs, in the thread(s) bound to its job id."""

    def __init__(self, job_id: str, lines: deque[str]) -> None:
        super().__init__()
        self.job_id = job_id
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "skip_tail", False):
            return  # the runner added this line to the tail itself
        if logs.current_context().get("job_id") != self.job_id:
            return
        try:
            self.lines.append(_line(record.levelname, record.getMessage()))
        except Exception:  # a logging handler must never raise
            self.handleError(record)


def _line(level: str, message: str) -> str:
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    return f"{stamp} {level.lower()} {message}"[:LOG_LINE_CHARS]


#: The JSON-able parts of a TrainResult kept in the job row.
_RESULT_FIELDS = (
    "metrics",
    "rows_read",
    "rows_rejected",
    "rejects_by_reason",
    "rejects_url",
    "rows_aggregated",
    "date_range",
    "timings",
    "duration_s",
    "promoted",
    "promotion",
    "granularity",
    "filled_cells",
    "coherence",
    "inputs",  # each file: its history mode and what it overlapped (replaced or added to)
    "also",  # granularity both: the day run's result (version, metrics, coherence, ...)
)


def _train_result(result: Any) -> dict[str, Any]:
    """The JSON-able parts of a TrainResult kept in the job row."""
    return {name: getattr(result, name, None) for name in _RESULT_FIELDS}


class JobRunner:
    """`settings.jobs_concurrency` worker threads running queued jobs in order."""

    def __init__(
        self,
        settings: Settings,
        db: JobDB,
        registry: ModelRegistry,
        on_status: StatusCallback | None = None,
        *,
        train_fn: TrainFn = train,
        predict_fn: PredictFn | None = None,
        session_fn: Callable[[], Any] | None = None,
        predict_now_fn: PredictFn | None = None,
        on_claim: Callable[[], None] | None = None,
    ) -> None:
        """`predict_now_fn`: small synchronous predictions; None means `predict_fn` (Spark).
        `on_claim`: called when a worker claims a job, before it runs (stops the JIT warm-up)."""
        self.settings = settings
        self.db = db
        self.registry = registry
        self.on_status = on_status
        self.train_fn = train_fn
        self.session_fn: Callable[[], Any] = session_fn or (lambda: get_spark(settings))
        self.predict_fn = predict_fn or spark_predictor(settings, registry, self.session_fn)
        self.predict_now_fn = predict_now_fn
        self.on_claim = on_claim
        self._wake = threading.Condition()
        self._pending = False
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers (they run jobs left queued by a previous process too)."""
        for n in range(self.settings.jobs_concurrency):
            thread = threading.Thread(target=self._loop, name=f"job-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop taking jobs and wait a little for the workers; running jobs are re-queued."""
        self._stopping.set()
        self.kick()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self._threads if t.is_alive()]
        if busy:
            log.warning("workers still busy at shutdown: %s (their jobs re-queue)", busy)

    def kick(self) -> None:
        """Wake a worker: a job was queued."""
        with self._wake:
            self._pending = True
            self._wake.notify_all()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self.db.claim_next()
            except Exception:
                log.exception("could not read the job queue")
                job = None
            if job is None:
                with self._wake:
                    if not self._pending:
                        self._wake.wait(POLL_INTERVAL_S)
                    self._pending = False
                continue
            if self.on_claim is not None:
                self.on_claim()
            try:
                self.run(job)
            except Exception:  # run() records failures itself; this is a last resort
                log.exception("job %s could not be recorded", job.job_id)

    # --- one job -------------------------------------------------------------------------------

    def run(self, job: Job) -> Job:
        """Run a claimed (running) job to the end and record the outcome."""
        lines: deque[str] = deque(job.log_tail, maxlen=LOG_TAIL_LINES)
        with logs.bind(job_id=job.job_id, upload_id=job.upload_id), self._tail(job, lines):
            self._notify(job)
            log.info("job started: %s (attempt %d)", job.kind, job.attempts)
            try:
                version, result = self._work(job, lines)
            except Exception as exc:
                return self._failed(job, exc, lines)
            lines.append(_line("info", "succeeded" + (f": model {version}" if version else "")))
            log.info("job succeeded: model %s", version, extra=_SKIP_TAIL)
            done = self.db.succeed(
                job.job_id, model_version=version, result=result, log_tail=list(lines)
            )
            self._notify(done)
        return done

    @contextmanager
    def _tail(self, job: Job, lines: deque[str]) -> Iterator[None]:
        handler = _TailHandler(job.job_id, lines)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield
        finally:
            root.removeHandler(handler)

    def _work(self, job: Job, lines: deque[str]) -> tuple[str | None, dict[str, Any]]:
        def progress(stage: str) -> None:
            lines.append(_line("info", stage))
            log.info("stage: %s", stage, extra=_SKIP_TAIL)
            try:
                self.db.set_log_tail(job.job_id, list(lines))
            except Exception:
                log.warning("could not save the progress of job %s", job.job_id, exc_info=True)

        if job.kind == "train":
            adopted = self._published_by_earlier_attempt(job)
            if adopted is not None:
                progress(f"model {adopted[0]} was published by an interrupted attempt")
                return adopted
            inputs = [
                TrainInput(
                    url=job.input_url, sha256=job.sha256, upload_id=job.upload_id, mode=job.mode
                )
            ]
            result = self.train_fn(
                self.session_fn(), self.settings, inputs, registry=self.registry, progress=progress
            )
            return str(result.version), _train_result(result)
        source = local_path_of(job.input_url)
        try:
            progress("predicting")
            assert job.output_path is not None
            outcome = self.predict_fn(
                source,
                version=job.model_version,
                csv_out=Path(job.output_path),
                per_month=job.mode == "per_month",
            )
        finally:
            source.unlink(missing_ok=True)  # the input was a copy kept only for this job
        return outcome.model_version, {
            "rows": outcome.rows,
            "unknown_stores": outcome.unknown_stores,
            "unknown_products": outcome.unknown_products,
            "lineage": outcome.lineage,
            "notes": outcome.notes,
            "rows_dropped": outcome.rows_dropped,
            "dropped": outcome.dropped,
        }

    def _published_by_earlier_attempt(self, job: Job) -> tuple[str, dict[str, Any]] | None:
        """The version an interrupted attempt of this train job published, if it got that far.

        A job server killed between publishing a model and recording the job would otherwise
        train the upload again on restart and publish a second version for it. Only versions
        published since the job was created, and not recorded by another job of the same upload
        (a replay's first job), count.
        """
        if job.attempts < 2 or job.upload_id is None:
            return None
        since = job.created_at[:19]  # registry times have whole seconds
        taken = {
            other.model_version
            for other in self.db.find(upload_id=job.upload_id, limit=1000)
            if other.job_id != job.job_id
        }
        for version in reversed(self.registry.versions()):
            meta = version.metadata
            if str(meta.get("created_at", ""))[:19] < since:
                break  # versions are in publishing order: the rest are older still
            if version.version in taken:
                continue
            if any(i.get("upload_id") == job.upload_id for i in meta.get("inputs") or []):
                log.warning("model %s was published by an interrupted attempt", version.version)
                return version.version, {name: meta.get(name) for name in _RESULT_FIELDS}
        return None

    def _failed(self, job: Job, exc: Exception, lines: deque[str]) -> Job:
        if self._stopping.is_set() and not isinstance(exc, SalesflowError):
            # The server is shutting down under the job (e.g. Spark stopped): run it again later.
            log.warning("job interrupted by shutdown: %s", type(exc).__name__)
            return self.db.release(job.job_id)
        if isinstance(exc, SalesflowError):
            code, message = exc.code, str(exc)[:2000]
            log.warning("job failed: %s: %s", code, message, extra=_SKIP_TAIL)
        else:
            code = "training_error" if job.kind == "train" else "prediction_error"
            message = f"{job.kind} failed: {type(exc).__name__}; see the job server log"
            log.error("job failed unexpectedly", exc_info=exc, extra=_SKIP_TAIL)
        lines.append(_line("error", f"failed: {code}: {message}"))
        counts = exc.counts if isinstance(exc, TooManyRejectsError) else None
        failed = self.db.fail(
            job.job_id, code=code, message=message, log_tail=list(lines), result=counts
        )
        self._notify(failed)
        return failed

    def _notify(self, job: Job) -> None:
        if self.on_status is None:
            return
        try:
            self.on_status(job)
        except Exception:
            log.warning("status callback failed for job %s", job.job_id, exc_info=True)
