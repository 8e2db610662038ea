"""The upload service process: a FastAPI app whose lifespan owns the store, database and relay."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
import uvicorn
from fastapi import FastAPI

from salesflow import libc
from salesflow.config import Settings
from salesflow.kafka import EventPublisher
from salesflow.logs import configure_logging
from salesflow.services.http import install_error_handlers, protected
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
    app.include_router(uploads, dependencies=protected(settings))
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
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.upload_port,
        log_config=None,  # keep our JSON logging
    )
