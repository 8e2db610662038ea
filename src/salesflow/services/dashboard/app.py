"""The dashboard process: a FastAPI app whose lifespan owns the upstream clients and the sessions."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from salesflow.auth import auth_headers, load_or_create_token
from salesflow.clients.dashboard import dashboard_url
from salesflow.config import Settings
from salesflow.logs import configure_logging
from salesflow.services.dashboard.metrics import StatusCollector
from salesflow.services.dashboard.overview import StatusBoard
from salesflow.services.dashboard.proxy import Upstream
from salesflow.services.dashboard.routes import DashboardState, api, pages
from salesflow.services.dashboard.session import (
    LoginCodes,
    SessionGate,
    SessionStore,
    redact_token,
)
from salesflow.services.http import health_router, install_error_handlers, serve_app
from salesflow.services.metrics import install_metrics

__all__ = ["create_app", "dashboard_url", "serve", "web_root"]

log = logging.getLogger(__name__)


def web_root() -> Path:
    """The folder of the page's static files (shipped inside the package)."""
    return Path(str(resources.files("salesflow") / "web"))


def create_app(
    settings: Settings,
    *,
    upload_transport: httpx.AsyncBaseTransport | None = None,
    jobs_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The dashboard. The transports replace the network in unit tests (httpx.MockTransport)."""
    sessions = SessionStore()
    root = web_root()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        headers = auth_headers(settings)
        timeout = settings.http_timeout_s
        upload = Upstream(
            "upload service", settings.upload_service_url, headers, timeout, upload_transport
        )
        jobs = Upstream("job server", settings.job_server_url, headers, timeout, jobs_transport)
        app.state.dashboard = DashboardState(
            settings=settings,
            token=load_or_create_token(settings),
            sessions=sessions,
            codes=LoginCodes(),
            upload=upload,
            jobs=jobs,
            board=StatusBoard(settings, upload, jobs),
            web_root=root,
        )
        log.info("dashboard ready on %s", dashboard_url(settings))
        try:
            yield
        finally:
            await upload.aclose()
            await jobs.aclose()

    app = FastAPI(
        title="salesflow dashboard",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    app.include_router(health_router({}))
    app.include_router(pages)
    app.include_router(api)
    app.mount("/static", StaticFiles(directory=root), name="static")
    collector = StatusCollector()

    async def refresh_status() -> None:
        collector.latest = await app.state.dashboard.board.status()

    install_metrics(app, settings, [collector], before_scrape=refresh_status)
    app.add_middleware(SessionGate, sessions=sessions, required=settings.auth_enabled)
    return app


class _RedactToken(logging.Filter):
    """Keep login codes (and any token) out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.args = redact_token(record.args)
        return True


def serve(settings: Settings) -> None:
    """Run the dashboard on settings.host:settings.dashboard_port until interrupted."""
    configure_logging("dashboard")
    logging.getLogger("uvicorn.access").addFilter(_RedactToken())
    serve_app(create_app(settings), settings, settings.dashboard_port)
