"""JobServerClient: error mapping with httpx.MockTransport, and a round trip against the real app."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.clients.jobs import JobServerClient
from salesflow.config import Settings
from salesflow.errors import (
    BusyError,
    ConfigurationError,
    InputError,
    NotFoundError,
    UnavailableError,
)
from salesflow.services.jobs.app import create_app
from tests.unit.test_jobs_api import SMALL_CSV, UPLOAD, FakeSpark, Reports

Handler = Callable[[httpx.Request], httpx.Response]


def client_with(settings: Settings, handler: Handler) -> JobServerClient:
    return JobServerClient(settings, transport=httpx.MockTransport(handler))


def error(status: int, code: str, message: str) -> Handler:
    return lambda _: httpx.Response(status, json={"error": {"code": code, "message": message}})


def test_train_sends_the_token_and_the_body(settings: Settings) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"job_id": "j", "created": True})

    answer = client_with(settings, handler).train(UPLOAD, "a" * 64)
    assert answer == {"job_id": "j", "created": True}
    request = seen[0]
    assert request.method == "POST" and request.url.path == "/train"
    assert str(request.url).startswith(settings.job_server_url)
    assert request.headers["authorization"] == auth_headers(settings)["Authorization"]
    assert json.loads(request.content) == {"upload_id": UPLOAD, "sha256": "a" * 64}


@pytest.mark.parametrize(
    ("handler", "kind", "code"),
    [
        (error(404, "not_found", "no job 'x'"), NotFoundError, "not_found"),
        (error(400, "invalid_key", "url does not name upload"), InputError, "invalid_key"),
        (error(401, "unauthorized", "missing or wrong bearer token"), ConfigurationError, None),
        (error(503, "busy", "4 predictions are already running"), BusyError, "busy"),
        (error(503, "unavailable", "spark: starting"), UnavailableError, "unavailable"),
        (lambda _: httpx.Response(502, text="<html>bad gateway</html>"), UnavailableError, None),
    ],
)
def test_error_answers_map_to_the_error_tree(
    settings: Settings, handler: Handler, kind: type[Exception], code: str | None
) -> None:
    with pytest.raises(kind) as caught:
        client_with(settings, handler).get_job("x")
    if code is not None:
        assert getattr(caught.value, "code", None) == code
    assert "job server answered" in str(caught.value)


def test_validation_message_is_kept(settings: Settings) -> None:
    with pytest.raises(InputError, match="url does not name upload"):
        client_with(settings, error(400, "invalid_key", "url does not name upload")).train(UPLOAD)


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
def test_transport_failures_are_unavailable(settings: Settings, exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(UnavailableError):
        client_with(settings, handler).jobs(upload_id=UPLOAD)


def test_a_closed_port_is_unavailable(settings: Settings) -> None:
    from tests.conftest import free_port

    closed = settings.model_copy(update={"job_server_url": f"http://127.0.0.1:{free_port()}"})
    with JobServerClient(closed) as client, pytest.raises(UnavailableError, match="unreachable"):
        client.models()
    assert not JobServerClient(closed).healthy()


# --- against the real app --------------------------------------------------------------------


@pytest.fixture
def app_client(settings: Settings) -> Iterator[JobServerClient]:
    """The client, its requests served by the job server app (lifespan and all)."""
    app = create_app(settings, engine=FakeSpark().engine(), report=Reports())
    with TestClient(app) as served:

        def forward(request: httpx.Request) -> httpx.Response:
            answer = served.request(
                request.method,
                request.url.raw_path.decode(),
                headers=dict(request.headers),
                content=request.read(),
            )
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )

        yield client_with(settings, forward)


def test_round_trip_train_jobs_and_models(app_client: JobServerClient) -> None:
    job = app_client.train(UPLOAD, "a" * 64)
    assert job["created"] is True
    assert app_client.train(UPLOAD, "a" * 64)["job_id"] == job["job_id"]
    done = app_client.wait(job["job_id"], timeout=10)
    assert done["status"] == "succeeded" and done["model_version"] == "v0001"
    assert app_client.job_for_upload(UPLOAD)["job_id"] == job["job_id"]  # type: ignore[index]
    assert app_client.job_for_upload("f" * 32) is None
    assert app_client.models()["active"] == "v0001"
    assert app_client.activate("v0001", reason="again")["active"] is True
    with pytest.raises(NotFoundError, match="v0002"):
        app_client.activate("v0002")
    with pytest.raises(InputError) as caught:
        app_client.train("not-an-id")
    assert caught.value.code == "invalid_key"


def test_round_trip_predict(app_client: JobServerClient, tmp_path: Path) -> None:
    source = tmp_path / "ask.csv"
    source.write_text(SMALL_CSV)
    as_csv = app_client.predict_csv(source)
    assert isinstance(as_csv, bytes) and as_csv.startswith(b"store_id,product_id,period")
    as_json = app_client.predict_csv(source, accept_json=True)
    assert isinstance(as_json, dict) and as_json["row_count"] == 2
    with pytest.raises(NotFoundError):
        app_client.predict_csv(source, model="v0042")
