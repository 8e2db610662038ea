"""The upload service process: a FastAPI app whose lifespan owns the store, database and relay."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from salesflow import libc
from salesflow.config import Settings
from salesflow.kafka import EventPublisher
from salesflow.logs import configure_logging
from salesflow.sales.contract import UPLOAD_PREFIX
from salesflow.services.http import (
    ERROR_RESPONSES,
    guard_requests,
    install_error_handlers,
    protected,
    serve_app,
)
from salesflow.services.metrics import install_metrics
from salesflow.services.upload.db import UploadDB
from salesflow.services.upload.deps import Resources
from salesflow.services.upload.health import health_routes
from salesflow.services.upload.metrics import UploadCollector
from salesflow.services.upload.outbox import OutboxRelay, job_server_lookup
from salesflow.services.upload.routes import uploads
from salesflow.services.upload.streaming import UploadSlots
from salesflow.storage import store_for

__all__ = ["DB_FILE", "create_app", "serve"]

log = logging.getLogger(__name__)

DB_FILE = "uploads.db"


def create_app(settings: Settings) -> FastAPI:
    """The upload service; everything it holds is built from `settings` when it starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = store_for(settings)
        # What uploads killed mid-stream left: no upload of this (single) service is in flight yet.
        for key in await anyio.to_thread.run_sync(store.sweep_unfinished, UPLOAD_PREFIX):
            log.warning("removed %s, left by an upload that never finished", key)
        db = UploadDB(settings.data_dir / DB_FILE)
        publisher = EventPublisher(settings)
        jobs, close_jobs = job_server_lookup(settings)
        relay = OutboxRelay(settings, db, publisher, jobs=jobs)
        app.state.resources = Resources(
            settings, store, db, relay, UploadSlots(settings.upload_max_concurrent)
        )
        relay.start()
        log.info("upload service started; storage at %s", store.base_url)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(relay.stop)
            close_jobs()
            publisher.close()
            db.close()

    app = FastAPI(title="salesflow upload service", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(health_routes(lambda: app.state.resources))
    app.include_router(uploads, dependencies=protected(settings), responses=ERROR_RESPONSES)
    guard_requests(app, settings, file_routes=(("POST", "/uploads"),))
    install_metrics(app, settings, [UploadCollector(lambda: _db_of(app))])
    return app


def _db_of(app: FastAPI) -> UploadDB | None:
    """The running service's database (None before the lifespan has built it)."""
    resources: Resources | None = getattr(app.state, "resources", None)
    return resources.db if resources is not None else None


def serve(settings: Settings) -> None:
    """Run the upload service on settings.host:settings.upload_port until interrupted."""
    configure_logging("upload")
    if settings.upload_malloc_arenas:  # before the service's threads start
        libc.limit_malloc_arenas(settings.upload_malloc_arenas)
    if settings.upload_mmap_threshold:
        libc.fix_mmap_threshold(settings.upload_mmap_threshold)
    serve_app(create_app(settings), settings, settings.upload_port)
