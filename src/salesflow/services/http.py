"""What every salesflow HTTP service shares: error mapping, auth, health routes, logging context.

Domain errors are mapped to HTTP here, at the edge, and nowhere else; responses carry a stable error
code and a message a user can act on, never a traceback, a path or a bucket name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from salesflow import errors
from salesflow.auth import load_or_create_token, token_matches
from salesflow.config import Settings
from salesflow.services.limits import RequestGuard, guarded_protocol

__all__ = [
    "CLIENT_CLOSED",
    "ERROR_RESPONSES",
    "ReadinessCheck",
    "error_body",
    "guard_requests",
    "health_router",
    "install_error_handlers",
    "protected",
    "public_text",
    "require_token",
    "serve_app",
    "status_for",
    "uvicorn_config",
]

log = logging.getLogger(__name__)

#: Status of a request whose client went away mid-body (nginx's convention; never delivered).
CLIENT_CLOSED = 499

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
    }


#: The refusals every authenticated route may give, in the one error shape, for its OpenAPI entry
#: (a route adds its own with `responses=`); schemathesis checks no other status comes back.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The request or its file is wrong; the message says how."),
    401: _error("Missing or wrong bearer token (refused before the body is read)."),
    404: _error("No such upload, job, model version or route."),
    408: _error("The request's headers or body arrived too slowly."),
    409: _error("The state or the bytes differ from what the request names."),
    413: _error("The body is larger than this endpoint accepts (refused before it is read)."),
    415: _error("Not a CSV file in a multipart/form-data body."),
    422: _error("A parameter or a JSON field is invalid."),
    431: _error("The request's headers are too large."),
    503: _error("Busy or a dependency is down: retry later (see Retry-After)."),
    507: _error("No space left to store the upload or its record."),
}

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""An async check that returns None when its dependency answers, else a short reason."""

#: The code of an HTTP error raised by the framework itself (no such route, wrong method, ...).
_FRAMEWORK_CODES: dict[int, str] = {
    404: "not_found",
    405: "method_not_allowed",
    400: "invalid_request",
}

#: Headers a status must carry: a 401 names its scheme (RFC 9110), a 503 says when to retry.
_STATUS_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": "Bearer"},
    503: {"Retry-After": "1"},
}


#: A URL (file://, s3://, http://...) or an absolute posix path of two or more segments.
_LOCATION = re.compile(
    r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S*[^\s'\",;:).]|(?<![\w/.:-])/(?:[^\s/'\"]+/)+[^\s/'\",;:)]*"
)


def public_text(text: str) -> str:
    """`text` fit for an answer: each URL or absolute path cut to its last segment (a file name),
    so no host folder, bucket or endpoint leaves the service."""

    def last_segment(match: re.Match[str]) -> str:
        name = match.group(0).rstrip("/").rsplit("/", 1)[-1]
        return name or "<path>"

    return _LOCATION.sub(last_segment, text)


def status_for(exc: errors.SalesflowError) -> int:
    """The HTTP status of a domain error: its class's `http_status` (see salesflow.errors)."""
    return exc.http_status


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape every service answers with."""
    return {"error": {"code": code, "message": message, **extra}}


def install_error_handlers(app: FastAPI) -> None:
    """Map SalesflowError to its status, validation errors to 422, anything else to a bare 500."""

    @app.exception_handler(errors.SalesflowError)
    async def _domain(_: Request, exc: errors.SalesflowError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc)
        message = (
            public_text(str(exc))
            if status < 500 or isinstance(exc, (errors.UnavailableError, errors.StorageFullError))
            else ("internal error; see the service log")
        )
        headers = _STATUS_HEADERS.get(status)
        return JSONResponse(error_body(exc.code, message), status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _framework(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _FRAMEWORK_CODES.get(exc.status_code, "http_error")
        message = (
            f"no such endpoint: {request.method} {request.url.path}"
            if exc.status_code == 404
            else str(exc.detail)
        )
        return JSONResponse(
            error_body(code, message[:500]), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        return JSONResponse(
            error_body("invalid_request", "; ".join(problems)[:2000]), status_code=422
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return JSONResponse(
            error_body("internal_error", "internal error; see the service log"), status_code=500
        )


def require_token(settings: Settings) -> Callable[..., None]:
    """A dependency that refuses requests without the service token (401)."""
    expected = load_or_create_token(settings)

    def check(authorization: Annotated[str | None, Header()] = None) -> None:
        if not token_matches(expected, authorization):
            raise errors.UnauthorizedError("missing or wrong bearer token")

    return check


def health_router(
    checks: dict[str, ReadinessCheck],
    *,
    advisory: dict[str, ReadinessCheck] | None = None,
    details: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> APIRouter:
    """`/healthz` (the process answers) and `/readyz` (every named dependency answers).

    `advisory` checks are reported but do not make the service unready (a dependency the service
    can work without for a while); `details` adds fields to the readiness answer.
    """
    router = APIRouter(tags=["health"])
    advisory = advisory or {}

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready: every dependency answers."""
        results = {name: await check() for name, check in checks.items()}
        failing = any(results.values())
        results |= {name: await check() for name, check in advisory.items()}
        body = {
            "status": "ready" if not failing else "not_ready",
            "checks": {name: reason or "ok" for name, reason in results.items()},
            **(await details() if details is not None else {}),
        }
        return JSONResponse(body, status_code=503 if failing else 200)

    return router


def protected(settings: Settings) -> list[Any]:
    """Route dependencies for an authenticated router."""
    return [Depends(require_token(settings))]


def guard_requests(
    app: FastAPI, settings: Settings, *, file_routes: tuple[tuple[str, str], ...] = ()
) -> None:
    """Refuse before reading (services/limits.py): the token, body limits, slow bodies.

    `file_routes` (method, path) take a file up to settings.max_upload_bytes (plus framing);
    every other route's body is limited to settings.http_max_json_bytes.
    """
    file_limit = settings.max_upload_bytes + FILE_FRAMING_BYTES
    app.add_middleware(
        RequestGuard,
        token=load_or_create_token(settings),
        default_limit=settings.http_max_json_bytes,
        body_limits=dict.fromkeys(file_routes, file_limit),
        min_rate_bytes_s=settings.http_min_body_rate_bytes_s,
        rate_window_s=settings.http_body_rate_window_s,
    )


#: Allowance for multipart framing (boundaries, part headers) above a file's size limit.
FILE_FRAMING_BYTES = 1024 * 1024


def uvicorn_config(app: FastAPI, settings: Settings, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for a salesflow service: our JSON logging, the head limits."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_config=None,  # keep our JSON logging
        http=guarded_protocol(settings.http_max_header_bytes, settings.http_header_timeout_s),
        **options,
    )


def serve_app(app: FastAPI, settings: Settings, port: int) -> None:
    """Run a service's app on settings.host:`port` until interrupted."""
    uvicorn.Server(uvicorn_config(app, settings, port)).run()
