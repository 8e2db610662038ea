"""Refuse before reading (services/limits.py), over real sockets to the upload service under uvicorn.

Each test states a refusal that must come before the body (or the rest of the head) is read: the
client sends the head only, or a head and a trickle, and the answer must arrive anyway, bounded in
time.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.services.upload.app import create_app
from tests.bad_input.helpers import HEADER, row, stored_files
from tests.conftest import free_port
from tests.fixtures.servers import serving

pytestmark = pytest.mark.timeout(60)

#: Generous bound for an answer that needs no body: the refusal is immediate.
ANSWER_S = 5.0


@contextlib.contextmanager
def upload_service(settings: Settings, **limits: Any) -> Iterator[Settings]:
    """The upload service under its own uvicorn configuration on a free port (Kafka closed)."""
    port = free_port()
    settings = settings.model_copy(
        update={
            "upload_port": port,
            "upload_service_url": f"http://127.0.0.1:{port}",
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            **limits,
        }
    )
    with serving(create_app(settings), port, settings=settings):
        yield settings


def _connect(settings: Settings) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", settings.upload_port), timeout=ANSWER_S)
    sock.settimeout(ANSWER_S)
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the response on `sock` (read until the server closes; the
    socket is closed then)."""
    data = b""
    with sock, contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


def _token(settings: Settings) -> str:
    return auth_headers(settings)["Authorization"]


def test_an_oversized_header_is_refused_with_431_before_it_is_buffered(settings: Settings) -> None:
    with upload_service(settings, http_max_header_bytes=16 * 1024) as running:
        sock = _connect(running)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            while sent < 8 * 1024 * 1024:  # far past the limit: the server closes first
                sock.sendall(b"a" * 65536)
                sent += 65536
        status, body = _answer(sock)
        assert status == 431 and body["error"]["code"] == "header_too_large", body
        assert sent < 8 * 1024 * 1024, "the server read the whole header"
        # One read of a small head over the limit is refused too (its parsed size counts).
        sock = _connect(running)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        assert _answer(sock)[0] == 431
        assert httpx.get(f"{running.upload_service_url}/healthz").status_code == 200


def test_a_trickled_header_is_cut_at_the_header_timeout(settings: Settings) -> None:
    with upload_service(settings, http_header_timeout_s=1.0) as running:
        sock = _connect(running)
        started = time.monotonic()
        sock.sendall(b"POST /uploads HTTP/1.1\r\nHost: x\r\n")
        status, body = _answer(sock)
        assert status == 408 and body["error"]["code"] == "header_timeout", body
        assert time.monotonic() - started < 3.0


@pytest.mark.parametrize(
    "path", ["/uploads", "/uploads/0123456789abcdef0123456789abcdef/status", "/nowhere"]
)
def test_no_token_is_refused_with_401_before_any_body_byte(settings: Settings, path: str) -> None:
    with upload_service(settings) as running:
        sock = _connect(running)
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {400 * 1024 * 1024}\r\n\r\n".encode()
        )
        status, body = _answer(sock)  # no body byte was sent: the answer cannot wait for one
        assert status == 401 and body["error"]["code"] == "unauthorized", body


def test_a_json_body_over_the_limit_is_refused_with_413(settings: Settings) -> None:
    with upload_service(settings, http_max_json_bytes=64 * 1024) as running:
        token = _token(running)
        url = "/uploads/0123456789abcdef0123456789abcdef/status"
        sock = _connect(running)
        sock.sendall(
            f"POST {url} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
        )
        status, body = _answer(sock)  # refused from the declared length, nothing read
        assert status == 413 and body["error"]["code"] == "too_large", body

        sock = _connect(running)  # chunked, no Content-Length: counted as it is read
        sock.sendall(
            f"POST {url} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            for _ in range(80):  # 80 KiB of a body limited to 64 KiB
                sock.sendall(b"400\r\n" + b"a" * 1024 + b"\r\n")
        status, body = _answer(sock)
        assert status == 413 and body["error"]["code"] == "too_large", body


def test_unknown_routes_answer_in_the_coded_shape(settings: Settings) -> None:
    with upload_service(settings) as running:
        response = httpx.get(f"{running.upload_service_url}/nowhere", headers=auth_headers(running))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        response = httpx.delete(
            f"{running.upload_service_url}/uploads", headers=auth_headers(running)
        )
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"


def _trickle(settings: Settings, outcome: list[int]) -> None:
    """An upload that sends its head and its file part's head, then a byte every 0.2 s; the
    status it is answered with."""
    sock = _connect(settings)
    part = (
        b'--trickle\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n"
    )
    sock.sendall(
        f"POST /uploads HTTP/1.1\r\nHost: x\r\nAuthorization: {_token(settings)}\r\n"
        f"Content-Type: multipart/form-data; boundary=trickle\r\n"
        f"Content-Length: 100000\r\n\r\n".encode()
        + part
    )
    content = (HEADER + row() * 100)[:5000]
    for byte in content:  # until the server answers (at most 1,000 s: the test's timeout first)
        if select.select([sock], [], [], 0.2)[0]:
            break
        sock.sendall(bytes([byte]))
    outcome.append(_answer(sock)[0])


def test_trickling_uploads_are_cut_and_release_their_slots(settings: Settings) -> None:
    limits = {
        "upload_max_concurrent": 2,
        "http_min_body_rate_bytes_s": 1000.0,
        "http_body_rate_window_s": 1.5,
    }
    with upload_service(settings, **limits) as running:
        outcomes: list[int] = []
        threads = [threading.Thread(target=_trickle, args=(running, outcomes)) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        files = {"file": ("sales.csv", HEADER + row(), "text/csv")}
        url = f"{running.upload_service_url}/uploads"
        busy = httpx.post(url, files=files, headers=auth_headers(running))
        assert busy.status_code == 503, busy.text  # both slots held by the tricklers
        started = time.monotonic()
        for thread in threads:
            thread.join(10)
        assert outcomes == [408, 408], outcomes
        assert time.monotonic() - started < 5.0
        accepted = httpx.post(url, files=files, headers=auth_headers(running))
        assert accepted.status_code == 202, accepted.text
        assert len(stored_files(running)) == 1
