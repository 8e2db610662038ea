"""JobServerClient's forecast, retrain and history calls, with httpx.MockTransport."""

from __future__ import annotations

import json

import httpx
import pytest

from salesflow.clients.jobs import JobServerClient
from salesflow.config import Settings
from salesflow.errors import InputError, NotFoundError, SalesflowError

UPLOAD = "f" * 32


def _recording(seen: list[httpx.Request], body: dict) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    return httpx.MockTransport(handler)


def test_forecast_sends_the_question_as_query_parameters(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    client = JobServerClient(settings, transport=_recording(seen, {"answers": []}))
    assert client.forecast("s1", "p1", month="2023-01", model="v0002") == {"answers": []}
    client.forecast("s1", "p1", date="2023-01-31")
    first, second = (dict(r.url.params) for r in seen)
    assert seen[0].method == "GET" and seen[0].url.path == "/forecast"
    assert first == {"store_id": "s1", "product_id": "p1", "month": "2023-01", "model": "v0002"}
    assert second == {"store_id": "s1", "product_id": "p1", "date": "2023-01-31"}
    assert seen[0].headers["authorization"].startswith("Bearer ")


def test_forecast_many_and_retrain_post_json(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    client = JobServerClient(settings, transport=_recording(seen, {"ok": True}))
    queries = [{"store_id": "s1", "product_id": "p1", "month": "2023-01"}]
    client.forecast_many(queries, model="v0001")
    client.retrain(UPLOAD)
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/forecast"), ("POST", "/train")]
    assert json.loads(seen[0].content) == {"queries": queries, "model": "v0001"}
    assert json.loads(seen[1].content) == {"upload_id": UPLOAD, "replay": True}


def test_history_and_series_ask_the_job_server(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    client = JobServerClient(settings, transport=_recording(seen, {"stores": ["s1"]}))
    client.history("s1", "p1")
    client.history(granularity="day", days=28)
    assert client.series() == {"stores": ["s1"]}
    assert [r.url.path for r in seen] == ["/history", "/history", "/series"]
    assert dict(seen[0].url.params) == {
        "store_id": "s1",
        "product_id": "p1",
        "granularity": "month",
    }
    assert dict(seen[1].url.params) == {
        "store_id": "all",
        "product_id": "all",
        "granularity": "day",
        "days": "28",
    }


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(413, "too_large", InputError), (404, "model_not_found", NotFoundError)],
)
def test_forecast_errors_keep_their_code(
    settings: Settings, status: int, code: str, error: type[SalesflowError]
) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"code": code, "message": "no"}})

    client = JobServerClient(settings, transport=httpx.MockTransport(handler))
    with pytest.raises(error, match="answered") as raised:
        client.forecast_many([])
    assert raised.value.code == code


def test_coherence_asks_the_models_route_with_the_version_escaped(settings: Settings) -> None:
    seen: list[httpx.Request] = []
    body = {"model_version": "v0002", "summary": {"total_ratio": 0.98}, "rows": []}
    client = JobServerClient(settings, transport=_recording(seen, body))
    assert client.coherence() == body
    client.coherence("v0002")
    client.coherence("../jobs")
    assert [r.url.raw_path for r in seen] == [
        b"/models/active/coherence",
        b"/models/v0002/coherence",
        b"/models/..%2Fjobs/coherence",
    ]
