"""The dashboard's routes: login, the page, and the API the page calls, proxied to the upload service
and the job server (the dashboard reads nothing from their disks) or answered from them (status)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from salesflow.auth import token_matches
from salesflow.config import Settings
from salesflow.services.dashboard.overview import StatusBoard
from salesflow.services.dashboard.proxy import Upstream
from salesflow.services.dashboard.session import (
    CODE_TTL_S,
    COOKIE,
    SESSION_TTL_S,
    LoginCodes,
    SessionStore,
)
from salesflow.services.http import error_body

__all__ = ["DashboardState", "api", "pages"]

log = logging.getLogger(__name__)

#: After the last byte of an upload the upload service still commits the file before answering.
UPLOAD_READ_TIMEOUT_S = 300.0
#: The first forecast after a model change loads that model (seconds on a busy machine).
FORECAST_READ_TIMEOUT_S = 60.0
#: An export scores every series and writes a file before its first byte (seconds; a minute at
#: the 2,000,000-row limit on a busy machine).
EXPORT_READ_TIMEOUT_S = 300.0
#: Ids the page may name in a path: upload and job ids are hex, nothing with "/" or "..".
ID_PATTERN = r"^[0-9A-Za-z_-]{1,128}$"
VERSION_PATTERN = r"^v?[0-9]{1,9}$"


@dataclass
class DashboardState:
    """What the routes share; built by the app's lifespan."""

    settings: Settings
    token: str | None
    sessions: SessionStore
    codes: LoginCodes
    upload: Upstream
    jobs: Upstream
    board: StatusBoard
    web_root: Path


def _state(request: Request) -> DashboardState:
    state: DashboardState = request.app.state.dashboard
    return state


StateDep = Annotated[DashboardState, Depends(_state)]
IdParam = Annotated[str, PathParam(pattern=ID_PATTERN)]

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api")


# --- login and the page --------------------------------------------------------------------------


_MESSAGE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>salesflow dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/style.css"></head>
<body class="message-page"><main><h1>salesflow</h1><p>{message}</p>
<p>Open the dashboard link that <code>salesflow up</code> printed in its terminal
(it looks like <code>http://127.0.0.1:8003/login?code=...</code>); it works once, for a few
minutes. <code>salesflow login</code> prints a new one.</p></main></body></html>
"""


@pages.post("/login-codes")
def issue_login_code(
    request: Request, state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> JSONResponse:
    """A one-time login link for the holder of the service token (what `salesflow login` prints)."""
    if not token_matches(state.token, authorization):
        return JSONResponse(
            error_body("unauthorized", "missing or wrong bearer token"),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    code = state.codes.create()
    url = f"{str(request.base_url).rstrip('/')}/login?code={code}"
    return JSONResponse(
        {"code": code, "url": url, "expires_in_s": CODE_TTL_S},
        headers={"Cache-Control": "no-store"},
    )


@pages.get("/login")
def login(state: StateDep, code: str = "") -> Response:
    """Trade a one-time login code for a session cookie, then show the dashboard."""
    if state.token is not None and not state.codes.redeem(code):
        log.warning("a login with an unknown, used or expired code was refused")
        return HTMLResponse(
            _MESSAGE_PAGE.format(
                message="That login link is not valid: it was used already, is older than a few "
                "minutes, or comes from an earlier start of the dashboard."
            ),
            status_code=401,
            headers={"Cache-Control": "no-store"},
        )
    response = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        COOKIE,
        state.sessions.create(),
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        path="/",
    )
    log.info("a browser logged in")
    return response


@pages.post("/logout")
def logout(request: Request, state: StateDep) -> Response:
    """End this browser's session."""
    state.sessions.drop(request.cookies.get(COOKIE))
    response = RedirectResponse("/welcome", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@pages.get("/welcome")
def welcome() -> HTMLResponse:
    """Where a browser without a session lands: how to get in."""
    return HTMLResponse(_MESSAGE_PAGE.format(message="You are not logged in to the dashboard."))


@pages.get("/")
def index(state: StateDep) -> FileResponse:
    """The one page; its sections are hash routes."""
    return FileResponse(state.web_root / "index.html", headers={"Cache-Control": "no-store"})


# --- proxied to the upload service ---------------------------------------------------------------


@api.get("/uploads")
async def list_uploads(request: Request, state: StateDep) -> Response:
    """Uploads, newest first (upload service)."""
    return await state.upload.forward(request, "/uploads")


@api.post("/uploads")
async def create_upload(request: Request, state: StateDep) -> Response:
    """Stream a multipart CSV upload through to the upload service."""
    return await state.upload.forward(
        request, "/uploads", body=True, read_timeout_s=UPLOAD_READ_TIMEOUT_S
    )


@api.get("/uploads/{upload_id}")
async def get_upload(upload_id: IdParam, request: Request, state: StateDep) -> Response:
    """One upload with its status and preview (upload service)."""
    return await state.upload.forward(request, f"/uploads/{upload_id}")


# --- proxied to the job server -------------------------------------------------------------------


@api.get("/jobs")
async def list_jobs(request: Request, state: StateDep) -> Response:
    """Jobs, newest first (job server)."""
    return await state.jobs.forward(request, "/jobs")


@api.get("/jobs/{job_id}")
async def get_job(job_id: IdParam, request: Request, state: StateDep) -> Response:
    """One job with its log tail (job server)."""
    return await state.jobs.forward(request, f"/jobs/{job_id}")


@api.post("/train")
async def train(request: Request, state: StateDep) -> Response:
    """Train on an upload's stored file; `replay` trains a past upload again (job server)."""
    return await state.jobs.forward(request, "/train", body=True)


@api.get("/jobs/{job_id}/rejects")
async def get_job_rejects(job_id: IdParam, request: Request, state: StateDep) -> Response:
    """The rows a train job rejected, as a CSV download (job server)."""
    return await state.jobs.forward(request, f"/jobs/{job_id}/rejects")


@api.get("/models")
async def list_models(request: Request, state: StateDep) -> Response:
    """Model versions with metrics, backtests, importances and the activation history (job server)."""
    return await state.jobs.forward(request, "/models")


@api.get("/models/{version}/coherence")
async def model_coherence(
    version: Annotated[str, PathParam(pattern=VERSION_PATTERN)], request: Request, state: StateDep
) -> Response:
    """A day model's check of its daily forecasts summed per month against the month model's."""
    return await state.jobs.forward(request, f"/models/{version}/coherence")


@api.get("/models/{version}/accuracy")
async def model_accuracy(
    version: Annotated[str, PathParam(pattern=VERSION_PATTERN)], request: Request, state: StateDep
) -> Response:
    """A version's backtest scores per store/product, worst first (job server)."""
    return await state.jobs.forward(request, f"/models/{version}/accuracy")


@api.post("/models/{version}/activate")
async def activate_model(
    version: Annotated[str, PathParam(pattern=VERSION_PATTERN)], request: Request, state: StateDep
) -> Response:
    """Make a version the active model (rollback); the reason goes into the history."""
    return await state.jobs.forward(request, f"/models/{version}/activate", body=True)


@api.get("/forecast")
async def get_forecast(request: Request, state: StateDep) -> Response:
    """One store/product/month forecast (job server)."""
    return await state.jobs.forward(request, "/forecast", read_timeout_s=FORECAST_READ_TIMEOUT_S)


@api.post("/forecast")
async def post_forecast(request: Request, state: StateDep) -> Response:
    """Many forecasts at once (job server)."""
    return await state.jobs.forward(
        request, "/forecast", body=True, read_timeout_s=FORECAST_READ_TIMEOUT_S
    )


@api.get("/forecast/export")
async def export_forecasts(request: Request, state: StateDep) -> Response:
    """Every series' forecasts for the next months as a CSV or Parquet file (job server)."""
    return await state.jobs.forward(
        request, "/forecast/export", read_timeout_s=EXPORT_READ_TIMEOUT_S
    )


@api.get("/history")
async def history(request: Request, state: StateDep) -> Response:
    """Actuals of one store/product (or totals) per month or day, for the chart (job server)."""
    return await state.jobs.forward(request, "/history")


@api.get("/series")
async def series(request: Request, state: StateDep) -> Response:
    """The store and product ids in the history, for the explorer's pickers (job server)."""
    return await state.jobs.forward(request, "/series")


# --- answered by the dashboard -------------------------------------------------------------------


@api.get("/status")
async def status(state: StateDep) -> dict[str, Any]:
    """Every service's health, the broker, the consumer's lag and the active model."""
    return await state.board.status()
