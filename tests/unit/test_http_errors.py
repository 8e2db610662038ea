"""The shared HTTP edge: each error class answers with its own status, body and headers."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from salesflow import errors
from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.services.http import install_error_handlers, require_token, status_for


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (errors.InputError, 400),
        (errors.HeaderError, 400),
        (errors.TooLargeError, 413),
        (errors.UnsupportedMediaError, 415),
        (errors.BodyTimeoutError, 408),
        (errors.UnauthorizedError, 401),
        (errors.NotFoundError, 404),
        (errors.StorageError, 500),
        (errors.ObjectNotFoundError, 404),
        (errors.StorageFullError, 507),
        (errors.IntegrityError, 409),
        (errors.ReportMismatchError, 409),
        (errors.ModelError, 500),
        (errors.ModelNotFoundError, 404),
        (errors.UnavailableError, 503),
        (errors.BusyError, 503),
        (errors.ConfigurationError, 500),
        (errors.SalesflowError, 500),
    ],
)
def test_each_error_class_has_its_status(kind: type[errors.SalesflowError], status: int) -> None:
    assert status_for(kind("x")) == status


def app_raising(exc: errors.SalesflowError) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fail")
    def fail() -> None:
        raise exc

    return app


def test_a_refusal_says_why_and_a_server_fault_does_not() -> None:
    with TestClient(app_raising(errors.StorageFullError("disk /srv/data/x is full"))) as client:
        full = client.get("/fail")
    assert full.status_code == 507  # a person can act on it: said, without the host's folders
    assert full.json() == {"error": {"code": "storage_full", "message": "disk x is full"}}
    with TestClient(app_raising(errors.ModelError("spark broke in /srv/data/x"))) as client:
        fault = client.get("/fail")
    assert fault.status_code == 500
    assert fault.json() == {
        "error": {"code": "model_error", "message": "internal error; see the service log"}
    }
    with TestClient(app_raising(errors.BusyError("too busy"))) as client:
        busy = client.get("/fail")
    assert (busy.status_code, busy.headers["Retry-After"]) == (503, "1")
    assert busy.json() == {"error": {"code": "busy", "message": "too busy"}}


def test_missing_token_is_401_with_its_scheme(settings: Settings) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/private", dependencies=[Depends(require_token(settings))])
    def private() -> dict[str, str]:
        return {"ok": "yes"}

    with TestClient(app) as client:
        refused = client.get("/private")
        allowed = client.get("/private", headers=auth_headers(settings))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.json() == {
        "error": {"code": "unauthorized", "message": "missing or wrong bearer token"}
    }
    assert allowed.json() == {"ok": "yes"}
