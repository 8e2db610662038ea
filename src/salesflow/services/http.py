"""What every salesflow HTTP service shares: error mapping, auth, health routes, logging context.

Domain errors are mapped to HTTP here, at the edge, and nowhere else; responses carry a stable error
code and a message a user can act on, never a traceback, a path or a bucket name.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from salesflow import errors
from salesflow.auth import load_or_create_token, token_matches
from salesflow.config import Settings

__all__ = [
    "ReadinessCheck",
    "error_body",
    "health_router",
    "install_error_handlers",
    "protected",
    "require_token",
    "status_for",
]

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""An async check that returns None when its dependency answers, else a short reason."""

# Most specific first: the first isinstance match wins.
_STATUS: list[tuple[type[errors.SalesflowError], int]] = [
    (errors.TooLargeError, 413),
    (errors.UnsupportedMediaError, 415),
    (errors.BodyTimeoutError, 408),
    (errors.InputError, 400),
    (errors.NotFoundError, 404),
    (errors.ObjectNotFoundError, 404),
    (errors.ModelNotFoundError, 404),
    (errors.IntegrityError, 409),
    (errors.UnavailableError, 503),
]


def status_for(exc: errors.SalesflowError) -> int:
    """The HTTP status of a domain error."""
    if getattr(exc, "code", "") == "storage_full":
        return 507
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The one error shape every service answers with."""
    return {"error": {"code": code, "message": message, **extra}}


def install_error_handlers(app: FastAPI) -> None:
    """Map SalesflowError to its status, validation errors to 422, anything else to a bare 500."""
    _install_auth_handler(app)

    @app.exception_handler(errors.SalesflowError)
    async def _domain(_: Request, exc: errors.SalesflowError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc)
        message = (
            str(exc)
            if status < 500 or isinstance(exc, errors.UnavailableError)
            else ("internal error; see the service log")
        )
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse(error_body(exc.code, message), status_code=status, headers=headers)

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
            raise _Unauthorized()

    return check


class _Unauthorized(errors.SalesflowError):
    code = "unauthorized"


def _install_auth_handler(app: FastAPI) -> None:
    """401 for a missing or wrong token."""

    @app.exception_handler(_Unauthorized)
    async def _unauthorized(_: Request, __: _Unauthorized) -> JSONResponse:
        return JSONResponse(
            error_body("unauthorized", "missing or wrong bearer token"),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )


def health_router(checks: dict[str, ReadinessCheck]) -> APIRouter:
    """`/healthz` (the process answers) and `/readyz` (every named dependency answers)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Alive."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready: every dependency answers."""
        results = {name: await check() for name, check in checks.items()}
        failing = {name: reason for name, reason in results.items() if reason}
        body = {
            "status": "ready" if not failing else "not_ready",
            "checks": {name: reason or "ok" for name, reason in results.items()},
        }
        return JSONResponse(body, status_code=503 if failing else 200)

    return router


def protected(settings: Settings) -> list[Any]:
    """Route dependencies for an authenticated router."""
    return [Depends(require_token(settings))]
