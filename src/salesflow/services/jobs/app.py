"""The job server process: builds the job table, the runner and the warm SparkSession in a lifespan.

Job status changes are reported to the upload service by a background thread with a few retries,
so a slow or absent upload service never holds up training (the upload service also heals itself).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
from fastapi import FastAPI

from salesflow import logs
from salesflow.clients.upload import UploadClient
from salesflow.config import Settings
from salesflow.errors import ObjectNotFoundError, UnavailableError
from salesflow.registry import ModelRegistry
from salesflow.services.http import (
    ERROR_RESPONSES,
    ReadinessCheck,
    guard_requests,
    install_error_handlers,
    protected,
    serve_app,
)
from salesflow.services.http import health_router as make_health_router
from salesflow.services.jobs.admission import UploadAdmission
from salesflow.services.jobs.db import Job, JobDB
from salesflow.services.jobs.deps import ServerState
from salesflow.services.jobs.engine import SparkEngine, spark_engine
from salesflow.services.jobs.export_routes import export_router
from salesflow.services.jobs.history_routes import history_router
from salesflow.services.jobs.metrics import JobCollector
from salesflow.services.jobs.recovery import sweep_leftovers
from salesflow.services.jobs.routes import router
from salesflow.services.jobs.runner import JobRunner
from salesflow.services.jobs.startup import SessionStartup
from salesflow.services.metrics import install_metrics
from salesflow.serving.service import ForecastService
from salesflow.spark.curated import curated_path
from salesflow.storage import store_for

__all__ = ["ReportFn", "StatusReporter", "create_app", "serve", "upload_reporter"]

log = logging.getLogger(__name__)

ReportFn = Callable[[str, str, dict[str, Any]], None]
"""Send one status of an upload: (upload_id, status, fields)."""

#: Tries per status report; the waits between them double from REPORT_BACKOFF_S (0.5, 1, 2 s).
REPORT_ATTEMPTS = 4
REPORT_BACKOFF_S = 0.5
#: A readiness probe that takes longer than this counts as down.
READY_TIMEOUT_S = 5.0
#: A key that is never written: reading it proves the store answers (ObjectNotFoundError = fine).
_PROBE_KEY = "readyz-probe/none"


class StatusReporter:
    """Reports train-job statuses to the upload service from one background thread, in order."""

    def __init__(
        self,
        send: ReportFn,
        *,
        attempts: int = REPORT_ATTEMPTS,
        backoff_s: float = REPORT_BACKOFF_S,
    ) -> None:
        self.send = send
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._queue: queue.Queue[tuple[str, str, dict[str, Any]] | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="status-reporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued if it goes quickly; give up waiting after `timeout`."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._stop.set()

    def on_status(self, job: Job) -> None:
        """The runner's callback: queue the upload status matching the job's (never blocks)."""
        if job.kind != "train" or job.upload_id is None or job.replay:
            return  # a replay retrains an upload whose own status is already final
        if job.status == "running":
            self._queue.put((job.upload_id, "training", {"job_id": job.job_id}))
        elif job.status == "succeeded":
            fields = {
                "job_id": job.job_id,
                "model_version": job.model_version,
                "metrics": job.result.get("metrics"),
            }
            self._queue.put((job.upload_id, "trained", fields))
        elif job.status == "failed":
            fields = {"job_id": job.job_id, "error_code": job.error_code, "error": job.error}
            self._queue.put((job.upload_id, "failed", fields))

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            upload_id, status, fields = item
            with logs.bind(upload_id=upload_id, job_id=fields.get("job_id")):
                self._deliver(upload_id, status, fields)

    def _deliver(self, upload_id: str, status: str, fields: dict[str, Any]) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self.send(upload_id, status, fields)
                log.info("reported status %s to the upload service", status)
                return
            except UnavailableError as exc:
                log.warning("upload service unavailable (attempt %d): %s", attempt, exc)
            except Exception as exc:
                log.warning("upload service refused status %s: %s", status, exc)
                return
            if attempt < self.attempts and self._stop.wait(self.backoff_s * 2 ** (attempt - 1)):
                break
        log.warning("gave up reporting status %s; the upload service reconciles later", status)


def upload_reporter(settings: Settings) -> ReportFn:
    """Send statuses with the upload service's client."""
    client = UploadClient(settings)

    def send(upload_id: str, status: str, fields: dict[str, Any]) -> None:
        client.report_status(upload_id, status, **fields)

    return send


def _health_checks(app: FastAPI) -> dict[str, ReadinessCheck]:
    def state() -> ServerState | None:
        found = getattr(app.state, "server", None)
        return found if isinstance(found, ServerState) else None

    async def in_thread(fn: Callable[[], None]) -> str | None:
        with anyio.move_on_after(READY_TIMEOUT_S):
            await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
            return None
        return f"no answer within {READY_TIMEOUT_S:.0f} s"

    async def spark() -> str | None:
        current = state()
        return "starting" if current is None else current.startup.problem()

    async def db() -> str | None:
        current = state()
        if current is None:
            return "starting"
        try:
            return await in_thread(current.db.ping)
        except Exception as exc:
            return f"unavailable: {type(exc).__name__}"

    async def storage() -> str | None:
        current = state()
        if current is None:
            return "starting"

        def probe() -> None:
            with suppress(ObjectNotFoundError):
                current.store.read_head(_PROBE_KEY, 1)

        try:
            return await in_thread(probe)
        except Exception as exc:
            return f"unreachable: {getattr(exc, 'code', type(exc).__name__)}"

    return {"spark": spark, "db": db, "storage": storage}


def create_app(
    settings: Settings, *, engine: SparkEngine | None = None, report: ReportFn | None = None
) -> FastAPI:
    """The job server. `engine` and `report` default to real Spark and the upload service client."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = JobDB(settings.data_dir / "jobs.db")
        interrupted = db.recover()
        for job in interrupted:
            log.warning("job %s was left running: now %s", job.job_id, job.status)
        if interrupted:
            sweep_leftovers(settings)  # their half-written models, partitions and files
        registry = ModelRegistry(settings.warehouse_path / "models")
        # Warm in-process answers for GET/POST /forecast (and small predictions): no Spark.
        forecasts = ForecastService(registry, history_root=curated_path(settings))
        jobs_engine = engine or spark_engine(settings, registry, forecasts)
        reporter = StatusReporter(report or upload_reporter(settings))
        startup = SessionStartup(jobs_engine)
        runner = JobRunner(
            settings,
            db,
            registry,
            reporter.on_status,
            train_fn=jobs_engine.train,
            predict_fn=jobs_engine.predict,
            session_fn=jobs_engine.session,
            predict_now_fn=jobs_engine.predict_now,
            on_claim=jobs_engine.warm_up.stop if jobs_engine.warm_up else None,
        )
        app.state.forecasts = forecasts
        app.state.server = ServerState(
            settings=settings,
            db=db,
            registry=registry,
            store=store_for(settings),
            runner=runner,
            startup=startup,
            predict_slots=threading.BoundedSemaphore(settings.predict_max_concurrent),
            admission=UploadAdmission.for_settings(settings),
        )
        startup.start()
        reporter.start()
        runner.start()
        log.info("job server ready on %s:%d", settings.host, settings.jobs_port)
        try:
            yield
        finally:
            if jobs_engine.warm_up is not None:
                await anyio.to_thread.run_sync(jobs_engine.warm_up.stop)  # waits up to 5 s
            await anyio.to_thread.run_sync(runner.stop)
            await anyio.to_thread.run_sync(reporter.stop)
            await anyio.to_thread.run_sync(jobs_engine.stop)
            app.state.server.admission.close()
            del app.state.server
            del app.state.forecasts
            db.close()

    app = FastAPI(title="salesflow job server", version="1", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(make_health_router(_health_checks(app)))
    app.include_router(router, dependencies=protected(settings), responses=ERROR_RESPONSES)
    app.include_router(history_router, dependencies=protected(settings), responses=ERROR_RESPONSES)
    app.include_router(export_router, dependencies=protected(settings), responses=ERROR_RESPONSES)
    guard_requests(app, settings, file_routes=(("POST", "/predict"),))
    install_metrics(app, settings, [JobCollector(lambda: _db_of(app))])
    return app


def _db_of(app: FastAPI) -> JobDB | None:
    """The running server's job table (None outside its lifespan)."""
    server: ServerState | None = getattr(app.state, "server", None)
    return server.db if server is not None else None


def serve(settings: Settings) -> None:
    """Run the job server on settings.host:settings.jobs_port until interrupted."""
    logs.configure_logging("jobs")
    serve_app(create_app(settings), settings, settings.jobs_port)
