"""Refusals of the running system (real processes): heads, tokens and bodies refused before they
are read, prediction files refused with their line, tokens kept out of logs, private files.

The system (file:// store, cheap models) is shared with the other fault modules of the package
(tests/faults/conftest.py); nothing here changes what they see.
"""

from __future__ import annotations

import contextlib
import json
import socket
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from salesflow.auth import auth_headers
from tests.faults.conftest import made_whole
from tests.fixtures.system import System

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(300)]

#: Rows of the file trained for the prediction tests (a few seconds with the cheap models).
ROWS = 1_500
#: An answer that needs no body byte comes at once; this bounds the wait for it.
ANSWER_S = 5.0
HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"


@pytest.fixture
def system(fault_system: System) -> System:
    return made_whole(fault_system)


def _urls(system: System) -> dict[str, str]:
    settings = system.settings
    return {
        "upload service": settings.upload_service_url,
        "job server": settings.job_server_url,
        "dashboard": f"http://{settings.host}:{settings.dashboard_port}",
    }


def _raw(url: str, head: bytes, body_bytes: int = 0) -> tuple[int, dict[str, Any]]:
    """Send `head` (and `body_bytes` zero bytes, stopping when the server closes) to `url`;
    the status and JSON body of its answer."""
    where = urlparse(url)
    assert where.hostname is not None and where.port is not None
    with socket.create_connection((where.hostname, where.port), timeout=ANSWER_S) as sock:
        sock.settimeout(ANSWER_S)
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(head)
            for _ in range(body_bytes // 65536):
                sock.sendall(bytes(65536))
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split(b" ")[1]), json.loads(body) if body else {}


def test_an_oversized_header_is_431_on_every_service(system: System) -> None:
    """A head past the limit is refused before it is buffered (64 KiB by default: the 8 MiB
    sent here stop at the refusal)."""
    for name, url in _urls(system).items():
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * 1024 * 1024)
        status, body = _raw(url, head)
        assert status == 431, name
        assert body["error"]["code"] == "header_too_large", (name, body)
        assert httpx.get(f"{url}/healthz", timeout=ANSWER_S).status_code == 200, name


@pytest.mark.parametrize(
    ("service", "path", "content_type"),
    [
        ("job server", "/train", "application/json"),
        ("job server", "/predict", "multipart/form-data; boundary=x"),
        ("upload service", "/uploads/0123456789abcdef0123456789abcdef/status", "application/json"),
        ("upload service", "/uploads", "multipart/form-data; boundary=x"),
    ],
)
def test_no_token_is_401_before_any_body_byte(
    system: System, service: str, path: str, content_type: str
) -> None:
    """Hundreds of MB announced, none sent: the 401 cannot have waited for them."""
    url = _urls(system)[service]
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {500 * 1024 * 1024}\r\n\r\n"
    ).encode()
    status, body = _raw(url, head)
    assert status == 401 and body["error"]["code"] == "unauthorized", body


def test_a_large_json_body_is_413_before_it_is_read(system: System) -> None:
    token = auth_headers(system.settings)["Authorization"]
    head = (
        f"POST /train HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {400 * 1024 * 1024}\r\n\r\n"
    ).encode()
    status, body = _raw(system.settings.job_server_url, head)
    assert status == 413 and body["error"]["code"] == "too_large", body


def test_unknown_routes_answer_in_the_coded_shape(system: System) -> None:
    for name, url in _urls(system).items():
        if name == "dashboard":
            continue  # its own session gate answers first
        response = httpx.get(
            f"{url}/no/such/route", headers=auth_headers(system.settings), timeout=ANSWER_S
        )
        assert response.status_code == 404, name
        assert response.json()["error"]["code"] == "not_found", (name, response.text)


def _an_active_model(system: System) -> None:
    with httpx.Client(headers=auth_headers(system.settings), timeout=30) as client:
        models = client.get(f"{system.settings.job_server_url}/models").json()
    if not models.get("active"):
        record = system.upload(system.sales_file(ROWS, seed=2201))
        assert system.wait_terminal(record["upload_id"])["status"] == "trained"


def _predict(system: System, content: bytes) -> httpx.Response:
    return httpx.post(
        f"{system.settings.job_server_url}/predict",
        files={"file": ("input.csv", content, "text/csv")},
        headers=auth_headers(system.settings),
        timeout=60,
    )


def test_predict_refuses_a_huge_field_and_an_unclosed_quote_with_their_line(
    system: System,
) -> None:
    _an_active_model(system)
    row = "1,Widget,2.50,7,Main St,3,2024-01-01\n"
    huge = HEADER + row + '1,"' + "x" * (200 * 1024) + '",2.50,7,Main St,3,2024-01-01\n'
    response = _predict(system, huge.encode())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "field_too_long" and "line 3" in error["message"], error

    unclosed = HEADER + row + row + '1,"Widget,2.50,7,Main St,3,2024-01-01\n' + row
    response = _predict(system, unclosed.encode())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "unterminated_quote" and "line 4" in error["message"], error


def test_a_token_in_a_query_string_never_reaches_a_log(system: System) -> None:
    secret = "query-secret-" + "z" * 20
    for name, url in _urls(system).items():
        if name == "dashboard":
            continue
        httpx.get(
            f"{url}/healthz?token={secret}&other=1",
            headers={"Authorization": f"Bearer {secret}x"},
            timeout=ANSWER_S,
        )
    logs = system.settings.data_dir / "logs"
    for log in logs.glob("*.log"):
        assert secret not in log.read_text(errors="replace"), log.name


def test_the_data_folder_and_its_files_are_private(system: System) -> None:
    """Another local user can read nothing: the data folder 0700, every file in it 0600 or
    tighter, whatever the umask of whoever started the system."""
    data = system.settings.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    readable = [
        str(path.relative_to(data))
        for path in data.rglob("*")
        if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) & 0o077
    ]
    assert not readable, readable[:10]
    assert (data / "uploads.db").exists() and any(Path(data, "logs").iterdir())


def test_train_refuses_an_upload_the_upload_service_does_not_vouch_for(system: System) -> None:
    """POST /train (with the token) for an id the upload service never issued, for a rejected
    upload, or with a sha256 that is not the upload's: 409 upload_not_trainable, no job."""
    settings = system.settings
    headers = auth_headers(settings)

    def train(upload_id: str, sha256: str | None = None) -> httpx.Response:
        body: dict[str, Any] = {"upload_id": upload_id}
        if sha256:
            body["sha256"] = sha256
        return httpx.post(f"{settings.job_server_url}/train", json=body, headers=headers)

    never = "ab" * 16
    response = train(never)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "upload_not_trainable"
    assert "unknown" in response.json()["error"]["message"]
    assert system.jobs(never) == []

    consumer = system.stack.child("upload consumer")
    consumer.stop()  # the upload waits in `stored` while it is rejected below
    try:
        record = system.upload(system.sales_file(200, seed=2202))
        upload_id = record["upload_id"]
        rejected = httpx.post(
            f"{settings.upload_service_url}/uploads/{upload_id}/status",
            json={
                "status": "rejected",
                "error_code": "bad_header",
                "error": "rejected for the test",
                "sha256": record["sha256"],
                "size": record["size"],
            },
            headers=headers,
        )
        assert rejected.json()["status"] == "rejected", rejected.text
        response = train(upload_id)
        assert response.status_code == 409, response.text
        assert "rejected" in response.json()["error"]["message"]
        assert system.jobs(upload_id) == []
        stored = system.upload(system.sales_file(200, seed=2203))["upload_id"]
        response = train(stored, "0" * 64)  # known and not rejected, but not these bytes
        assert response.status_code == 409, response.text
        assert "is not upload" in response.json()["error"]["message"]
        assert system.jobs(stored) == []
    finally:
        system.stack.restart("upload consumer")
