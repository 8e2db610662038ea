"""Dashboard login: a one-time code (issued to the token holder) sets an HttpOnly session cookie;
without it, 401 (API) or a redirect. The token itself never appears in a URL."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers, load_or_create_token
from salesflow.config import Settings
from salesflow.services.dashboard.app import _RedactToken, create_app
from salesflow.services.dashboard.session import COOKIE, LoginCodes, SessionStore, redact_token


class Upstream:
    """A stand-in upload service / job server that records what reached it."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/uploads":
            return httpx.Response(200, json={"uploads": []})
        return httpx.Response(200, json={"ok": True})


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def client(settings: Settings, upstream: Upstream) -> Iterator[TestClient]:
    app = create_app(
        settings,
        upload_transport=httpx.MockTransport(upstream),
        jobs_transport=httpx.MockTransport(upstream),
    )
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def token(settings: Settings) -> str:
    value = load_or_create_token(settings)
    assert value
    return value


def code_of(client: TestClient, settings: Settings) -> str:
    """A one-time login code, asked for with the service token (as `salesflow login` does)."""
    answer = client.post("/login-codes", headers=auth_headers(settings))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["url"] == f"http://testserver/login?code={body['code']}"
    assert token(settings) not in body["url"]
    return str(body["code"])


def log_in(client: TestClient, settings: Settings) -> httpx.Response:
    response = client.get("/login", params={"code": code_of(client, settings)})
    assert response.status_code == 303, response.text
    return response


def test_probes_answer_without_a_session(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_api_without_a_session_is_401_json_and_never_reaches_upstream(
    client: TestClient, upstream: Upstream
) -> None:
    response = client.get("/api/uploads")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "salesflow up" in response.json()["error"]["message"]
    assert upstream.requests == []


def test_page_without_a_session_redirects_to_the_help_page(client: TestClient) -> None:
    for path in ("/", "/static/app.js"):
        response = client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/welcome"
    welcome = client.get("/welcome")
    assert welcome.status_code == 200
    assert "salesflow up" in welcome.text
    assert client.get("/static/style.css").status_code == 200  # the help page's styles


def test_a_wrong_used_or_token_code_is_refused_without_a_cookie(
    client: TestClient, settings: Settings
) -> None:
    code = code_of(client, settings)
    assert client.get("/login", params={"code": code}).status_code == 303
    client.cookies.clear()
    for wrong in ("", "nope", code, code_of(client, settings)[:-1]):  # `code`: used already
        response = client.get("/login", params={"code": wrong})
        assert response.status_code == 401, wrong
        assert "set-cookie" not in response.headers
    # The token is no login code: a link must never carry it.
    assert client.get("/login", params={"code": token(settings)}).status_code == 401
    assert client.get("/login", params={"token": token(settings)}).status_code == 401
    assert client.get("/api/uploads").status_code == 401


def test_only_the_token_holder_gets_a_code(client: TestClient, settings: Settings) -> None:
    assert client.post("/login-codes").status_code == 401
    wrong = {"Authorization": f"Bearer {token(settings)}x"}
    assert client.post("/login-codes", headers=wrong).status_code == 401


def test_codes_expire_and_work_once() -> None:
    codes = LoginCodes(ttl_s=0.05)
    first, second = codes.create(), codes.create()
    assert codes.redeem(first) and not codes.redeem(first)
    time.sleep(0.1)
    assert not codes.redeem(second)


def test_login_sets_an_httponly_strict_cookie_and_opens_everything(
    client: TestClient, settings: Settings, upstream: Upstream
) -> None:
    response = log_in(client, settings)
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    assert token(settings) not in cookie  # the session id is not the token

    page = client.get("/")
    assert page.status_code == 200
    assert '<script type="module" src="/static/app.js">' in page.text
    assert client.get("/static/chart.js").status_code == 200
    assert client.get("/api/uploads").json() == {"uploads": []}
    assert len(upstream.requests) == 1


def test_a_forged_cookie_is_refused(client: TestClient) -> None:
    client.cookies.set(COOKIE, "made-up-session-id")
    assert client.get("/api/uploads").status_code == 401
    assert client.get("/").status_code == 303


def test_logout_ends_the_session(client: TestClient, settings: Settings) -> None:
    log_in(client, settings)
    session = client.cookies.get(COOKIE)
    assert client.get("/api/uploads").status_code == 200
    assert client.post("/logout").status_code == 303
    client.cookies.set(COOKIE, session or "")  # even if the browser kept it
    assert client.get("/api/uploads").status_code == 401


def test_writes_from_another_origin_are_refused(
    client: TestClient, settings: Settings, upstream: Upstream
) -> None:
    log_in(client, settings)
    refused = client.post(
        "/api/models/v1/activate", json={}, headers={"Origin": "http://evil.example"}
    )
    assert refused.status_code == 403
    assert upstream.requests == []
    same = client.post("/api/models/v1/activate", json={}, headers={"Origin": "http://testserver"})
    assert same.status_code == 200


def test_every_answer_carries_the_security_headers(client: TestClient) -> None:
    for path in ("/healthz", "/welcome", "/api/uploads"):
        headers = client.get(path).headers
        assert "default-src 'self'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"


def test_sessions_expire_and_are_bounded() -> None:
    store = SessionStore(ttl_s=0.05, max_sessions=3)
    first = store.create()
    assert store.valid(first)
    time.sleep(0.1)
    assert not store.valid(first)
    ids = [store.create() for _ in range(5)]
    assert len(store) == 3
    assert not store.valid(ids[0]) and store.valid(ids[-1])
    assert not store.valid(None) and not store.valid("")


def test_auth_disabled_needs_no_session(settings: Settings) -> None:
    open_settings = settings.model_copy(update={"auth_enabled": False})
    app = create_app(open_settings, upload_transport=httpx.MockTransport(Upstream()))
    with TestClient(app) as test_client:
        assert test_client.get("/api/uploads").status_code == 200


def test_the_access_log_hides_login_codes(settings: Settings) -> None:
    args = ("127.0.0.1:5000", "GET", "/login?code=secret-code&x=1", "1.1", 303)
    assert redact_token(args)[2] == "/login?code=***&x=1"
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, "%s %s %s", args[:3], None)
    assert _RedactToken().filter(record)
    assert "secret-code" not in record.getMessage()
