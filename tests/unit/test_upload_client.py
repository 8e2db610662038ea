"""UploadClient over httpx.MockTransport: the streamed multipart body, progress, and error mapping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import httpx
import pytest

from salesflow import errors
from salesflow.clients.upload import UploadClient
from salesflow.config import Settings
from salesflow.services.upload.streaming import receive_upload
from salesflow.storage import FileStore

CSV = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n" + (
    b"1,Widget,2.50,7,Main St,3,2024-01-01\n" * 40_000
)


def client_with(
    settings: Settings, handler: Callable[[httpx.Request], httpx.Response]
) -> UploadClient:
    return UploadClient(settings, transport=httpx.MockTransport(handler))


def test_upload_streams_a_body_the_server_parser_accepts(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / 'we"ird näme.csv'
    path.write_bytes(CSV)
    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        body = request.read()
        seen.update(
            url=str(request.url),
            auth=request.headers["authorization"],
            length=int(request.headers["content-length"]),
            size=len(body),
            chunked="transfer-encoding" in request.headers,
        )

        async def stream() -> AsyncIterator[bytes]:
            yield body

        received = anyio.run(
            lambda: receive_upload(
                stream(),
                content_type=request.headers["content-type"],
                content_length=len(body),
                store=FileStore(tmp_path / "objects"),
                key="uploads/" + "a" * 32 + ".csv",
                max_bytes=len(CSV),
                idle_timeout_s=5,
            )
        )
        seen.update(filename=received.filename, sha=received.info.sha256)
        return httpx.Response(202, json={"upload_id": "a" * 32, "duplicate": False})

    progress: list[int] = []
    with client_with(settings, handler) as client:
        answer = client.upload(path, force=True, progress=progress.append)

    assert answer == {"upload_id": "a" * 32, "duplicate": False}
    assert seen["url"] == f"{settings.upload_service_url}/uploads?force=true"
    assert str(seen["auth"]).startswith("Bearer ")
    assert seen["length"] == seen["size"] and seen["chunked"] is False
    assert seen["filename"] == 'we"ird näme.csv'
    assert (tmp_path / "objects" / "uploads" / ("a" * 32 + ".csv")).read_bytes() == CSV
    assert progress[-1] == len(CSV) and progress == sorted(progress) and len(progress) == 2


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "bad_header", errors.HeaderError),
        (400, "invalid_input", errors.InputError),
        (400, "no_rows", errors.NoRowsError),
        (400, "not_utf8", errors.NotUtf8Error),
        (400, "unterminated_quote", errors.UnterminatedQuoteError),
        (401, "unauthorized", errors.UnauthorizedError),
        (404, "not_found", errors.NotFoundError),
        (413, "too_large", errors.TooLargeError),
        (415, "unsupported_media_type", errors.UnsupportedMediaError),
        (503, "busy", errors.BusyError),
        (507, "storage_full", errors.StorageFullError),
        (500, "internal_error", errors.UnavailableError),
    ],
)
def test_errors_map_onto_the_error_tree(
    settings: Settings, status: int, code: str, error: type[errors.SalesflowError]
) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"code": code, "message": f"msg {code}"}})

    with client_with(settings, handler) as client, pytest.raises(error) as caught:
        client.get("a" * 32)
    assert type(caught.value) is error
    assert f"msg {code}" in str(caught.value)


def test_an_unknown_code_still_reaches_the_user(settings: Settings) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"code": "overlap", "message": "m"}})

    with client_with(settings, handler) as client, pytest.raises(errors.InputError) as caught:
        client.get("a" * 32)
    assert caught.value.code == "overlap"


def test_connection_failure_is_unavailable(settings: Settings) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with client_with(settings, handler) as client, pytest.raises(errors.UnavailableError):
        client.list()


def test_non_json_5xx_is_unavailable(settings: Settings) -> None:
    with (
        client_with(settings, lambda _: httpx.Response(502, text="bad gateway")) as client,
        pytest.raises(errors.UnavailableError, match="bad gateway"),
    ):
        client.get("a" * 32)


def test_missing_file_is_an_input_error(settings: Settings, tmp_path: Path) -> None:
    with (
        client_with(settings, lambda _: httpx.Response(500)) as client,
        pytest.raises(errors.InputError, match=r"cannot read 'nope\.csv'"),
    ):
        client.upload(tmp_path / "nope.csv")


def test_report_status_list_and_get(settings: Settings) -> None:
    calls: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, str(request.url), request.read()))
        if request.url.path == "/uploads":
            return httpx.Response(200, json={"uploads": [{"upload_id": "b" * 32}]})
        return httpx.Response(200, json={"upload_id": "b" * 32, "status": "queued"})

    with client_with(settings, handler) as client:
        record = client.report_status("b" * 32, "queued", job_id="j1")
        listed = client.list(limit=5, status="queued")
        one = client.get("b" * 32)

    assert record["status"] == "queued" and one["upload_id"] == "b" * 32
    assert listed == [{"upload_id": "b" * 32}]
    method, url, body = calls[0]
    assert (method, url) == ("POST", f"{settings.upload_service_url}/uploads/{'b' * 32}/status")
    assert json.loads(body) == {"status": "queued", "job_id": "j1"}
    assert calls[1][1].endswith("/uploads?limit=5&status=queued")
