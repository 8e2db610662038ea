"""The dashboard's proxy: the token is added server-side and never comes back; bodies stream through;
upstream failures become clear errors; models, history and series are the job server's answers as
they are (the dashboard reads no disk)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from salesflow.auth import load_or_create_token
from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.services.dashboard.app import create_app
from salesflow.services.dashboard.session import COOKIE
from tests.conftest import free_port

Handler = Callable[[httpx.Request], httpx.Response]
UPLOAD_ID = "0123456789abcdef0123456789abcdef"


class Recorder:
    """Records requests (headers and the whole body) and answers with `reply`."""

    def __init__(self, reply: Handler) -> None:
        self.reply = reply
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.read())
        self.requests.append(request)
        return self.reply(request)


def echo(request: httpx.Request) -> httpx.Response:
    """An upstream that misbehaves: it echoes auth headers back and sets its own cookie."""
    return httpx.Response(
        200,
        json={"path": request.url.path, "query": str(request.url.query, "ascii")},
        headers={
            "Authorization": request.headers.get("authorization", ""),
            "WWW-Authenticate": "Bearer",
            "Set-Cookie": "upstream=1",
            "X-Model-Version": "v0007",
        },
    )


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(upload: Any = None, jobs: Any = None, **overrides: Any) -> TestClient:
        cfg = settings.model_copy(update=overrides) if overrides else settings
        app = create_app(
            cfg,
            upload_transport=httpx.MockTransport(upload or Recorder(echo)),
            jobs_transport=httpx.MockTransport(jobs or Recorder(echo)),
        )
        client = TestClient(app, follow_redirects=False)
        client.__enter__()
        clients.append(client)
        token = load_or_create_token(cfg)
        code = client.post("/login-codes", headers={"Authorization": f"Bearer {token}"})
        assert client.get("/login", params={"code": code.json()["code"]}).status_code == 303
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def token_of(settings: Settings) -> str:
    value = load_or_create_token(settings)
    assert value
    return value


def test_the_proxy_adds_the_token_and_never_returns_it(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    upload, jobs = Recorder(echo), Recorder(echo)
    client = make_client(upload, jobs)
    answers = [
        client.get("/api/uploads", params={"limit": 5, "status": "trained"}),
        client.get(f"/api/uploads/{UPLOAD_ID}"),
        client.get("/api/jobs", params={"upload_id": UPLOAD_ID}),
        client.get("/api/jobs/abc123"),
        client.get(
            "/api/forecast", params={"store_id": "1", "product_id": "2", "month": "2022-04"}
        ),
        client.post("/api/forecast", json={"queries": []}),
        client.post("/api/models/v0002/activate", json={"reason": "rollback"}),
        client.post("/api/train", json={"upload_id": UPLOAD_ID, "replay": True}),
        client.get("/api/jobs/abc123/rejects"),
    ]
    token = token_of(settings)
    for response in answers:
        assert response.status_code == 200, response.text
        assert token not in response.text
        assert token not in json.dumps(dict(response.headers))
        assert "authorization" not in response.headers
        assert "www-authenticate" not in response.headers
        assert "upstream=1" not in response.headers.get("set-cookie", "")
    assert answers[4].headers["x-model-version"] == "v0007"  # the useful headers do pass
    sent = upload.requests + jobs.requests
    assert len(sent) == len(answers)
    for request in sent:
        assert request.headers["authorization"] == f"Bearer {token}"
        assert COOKIE not in request.headers.get("cookie", "")  # the browser's session stays here
    assert [r.url.path for r in upload.requests] == ["/uploads", f"/uploads/{UPLOAD_ID}"]
    assert answers[0].json()["query"] == "limit=5&status=trained"
    assert [r.url.path for r in jobs.requests] == [
        "/jobs",
        "/jobs/abc123",
        "/forecast",
        "/forecast",
        "/models/v0002/activate",
        "/train",
        "/jobs/abc123/rejects",
    ]
    assert json.loads(jobs.bodies[-2]) == {"upload_id": UPLOAD_ID, "replay": True}
    assert json.loads(jobs.bodies[-3]) == {"reason": "rollback"}
    assert json.loads(jobs.bodies[-4]) == {"queries": []}


def test_an_upload_streams_through_with_its_length_and_boundary(
    make_client: Callable[..., TestClient],
) -> None:
    upload = Recorder(lambda r: httpx.Response(202, json={"upload_id": UPLOAD_ID}))
    client = make_client(upload)
    csv = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n" * 2000
    response = client.post(
        "/api/uploads", params={"force": "true"}, files={"file": ("sales.csv", csv, "text/csv")}
    )
    assert response.status_code == 202
    assert response.json() == {"upload_id": UPLOAD_ID}
    request, body = upload.requests[0], upload.bodies[0]
    assert request.url.path == "/uploads" and request.url.params["force"] == "true"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert int(request.headers["content-length"]) == len(body)
    assert csv in body  # every byte arrived, inside the multipart part


def test_path_ids_cannot_leave_their_folder(make_client: Callable[..., TestClient]) -> None:
    upload = Recorder(echo)
    client = make_client(upload)
    for path in ("/api/uploads/..", "/api/uploads/a.b", "/api/jobs/%2e%2e"):
        assert client.get(path).status_code in (404, 422), path
    assert client.post("/api/models/..%2F..%2Fx/activate", json={}).status_code in (404, 422)
    assert upload.requests == []


def test_an_unreachable_service_is_a_503_that_names_it(
    make_client: Callable[..., TestClient],
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client = make_client(Recorder(down), Recorder(slow))
    refused = client.get("/api/uploads")
    assert refused.status_code == 503
    assert refused.json()["error"] == {
        "code": "unavailable",
        "message": "the upload service is not reachable",
    }
    late = client.get("/api/jobs")
    assert late.status_code == 503
    assert "job server did not answer in time" in late.json()["error"]["message"]
    assert client.get("/api/models").status_code == 503


def test_a_refused_token_is_a_502_not_a_logout(make_client: Callable[..., TestClient]) -> None:
    refusing = Recorder(lambda r: httpx.Response(401, json={"error": {"code": "unauthorized"}}))
    client = make_client(refusing)
    response = client.get("/api/uploads")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth"


def test_upstream_errors_pass_through_unchanged(make_client: Callable[..., TestClient]) -> None:
    body = {"error": {"code": "not_found", "message": "no upload 'x'"}}
    client = make_client(Recorder(lambda r: httpx.Response(404, json=body)))
    response = client.get(f"/api/uploads/{UPLOAD_ID}")
    assert response.status_code == 404
    assert response.json() == body


def test_models_history_and_series_are_the_job_servers_answers(
    make_client: Callable[..., TestClient], settings: Settings
) -> None:
    # A registry on the dashboard's disk that disagrees with the job server: never read.
    registry = ModelRegistry(settings.warehouse_path / "models")
    with registry.staging() as staged:
        meta = {"feature_importances": {"month": 1.0}}
        registry.publish(staged, meta, activate=True, reason="t", actor="t")
    answers = {
        "/models": {"active": "v0007", "models": [{"version": "v0007", "backtest": None}]},
        "/history": {"store_id": "s1", "product_id": "all", "granularity": "day", "days": []},
        "/series": {"stores": ["s1"], "products": ["p1"]},
    }
    jobs = Recorder(lambda r: httpx.Response(200, json=answers[r.url.path]))
    client = make_client(jobs=jobs)
    assert client.get("/api/models").json() == answers["/models"]
    history = client.get("/api/history", params={"store_id": "s1", "granularity": "day"})
    assert history.json() == answers["/history"]
    assert client.get("/api/series").json() == answers["/series"]
    assert [r.url.path for r in jobs.requests] == ["/models", "/history", "/series"]
    assert dict(jobs.requests[1].url.params) == {"store_id": "s1", "granularity": "day"}


def test_a_history_refused_by_the_job_server_passes_through(
    make_client: Callable[..., TestClient],
) -> None:
    body = {"error": {"code": "invalid_input", "message": "store_id is empty"}}
    client = make_client(jobs=Recorder(lambda r: httpx.Response(400, json=body)))
    answer = client.get("/api/history", params={"store_id": ""})
    assert answer.status_code == 400 and answer.json() == body


def test_coherence_is_proxied_for_versions_only(make_client: Callable[..., TestClient]) -> None:
    def coherence(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models/v0002/coherence":
            return httpx.Response(200, json={"version": "v0002", "max_relative_gap": 0.04})
        return httpx.Response(500)

    client = make_client(jobs=Recorder(coherence))
    answer = client.get("/api/models/v0002/coherence")
    assert answer.status_code == 200 and answer.json()["max_relative_gap"] == 0.04
    assert client.get("/api/models/..%2Fjobs/coherence").status_code in (404, 422)


def test_status_reports_services_broker_lag_and_active_model(
    make_client: Callable[..., TestClient],
) -> None:
    def upload(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "ready", "checks": {"storage": "ok"}})

    def jobs(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(
                503, json={"status": "not_ready", "checks": {"spark": "starting"}}
            )
        listing = {
            "active": "v0001",
            "active_by_granularity": {"month": "v0001", "day": None},
            "models": [{"version": "v0001", "active": True}],
        }
        return httpx.Response(200, json=listing)

    # Nothing listens on the bootstrap port: the broker must show as unreachable, lag unknown.
    client = make_client(
        Recorder(upload), Recorder(jobs), kafka_bootstrap_servers=f"127.0.0.1:{free_port()}"
    )
    status = client.get("/api/status").json()
    by_name = {s["name"]: s for s in status["services"]}
    assert by_name["upload service"]["ok"] is True
    assert by_name["job server"] == {
        "name": "job server",
        "ok": False,
        "status": "not_ready",
        "checks": {"spark": "starting"},
    }
    assert status["broker"]["reachable"] is False
    assert status["consumer"]["lag"] is None
    assert status["active_model"] == {"version": "v0001", "active": True}
    assert status["active_day_model"] is None and status["models_error"] is None
    assert status["ok"] is False


def test_the_export_file_and_its_headers_come_through(
    make_client: Callable[..., TestClient],
) -> None:
    def export(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("months") == "30":
            body = {"error": {"code": "bad_horizon", "message": "months is 30: give 1 to 24"}}
            return httpx.Response(400, json=body)
        return httpx.Response(
            200,
            content=b"store_id,product_id\ns1,p1\n",
            headers={
                "Content-Type": "text/csv",
                "Content-Disposition": 'attachment; filename="forecasts-v0007-2024-01-3m.csv"',
                "X-Model-Version": "v0007",
                "X-Row-Count": "3",
            },
        )

    jobs = Recorder(export)
    client = make_client(jobs=jobs)
    answer = client.get("/api/forecast/export", params={"months": 3, "format": "csv"})
    assert answer.status_code == 200 and answer.content == b"store_id,product_id\ns1,p1\n"
    assert answer.headers["x-row-count"] == "3" and answer.headers["x-model-version"] == "v0007"
    assert "forecasts-v0007-2024-01-3m.csv" in answer.headers["content-disposition"]
    assert dict(jobs.requests[0].url.params) == {"months": "3", "format": "csv"}
    refused = client.get("/api/forecast/export", params={"months": 30})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_horizon"
